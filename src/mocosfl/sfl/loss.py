"""InfoNCE against a queue of negatives (MoCo's loss), and the ways a step feeds it its views."""

import torch
import torch.nn.functional as F

from mocosfl.errors import ConfigError

# sfl.symmetric: true = both views through both branches, the mean of the two losses; legacy =
# the original's sum; off = one view each (docs/differences.md, "symmetric loss").
SYMMETRIC_MODES = ("true", "legacy", "off")


def info_nce(
    query: torch.Tensor, key: torch.Tensor, negatives: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """MoCo's InfoNCE: each query against its positive key and all negatives.

    Args:
        query: [B, D] L2-normalised online features (carries the gradient).
        key: [B, D] L2-normalised momentum features (treated as constants).
        negatives: [K, D] L2-normalised queue snapshot.
        temperature: softmax temperature T.

    Returns:
        (loss, logits): the mean cross-entropy with the positive at index 0, and the
        [B, 1 + K] logits (for the contrastive accuracy).
    """
    positive = (query * key.detach()).sum(dim=1, keepdim=True)
    negative = query @ negatives.detach().T
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target), logits


def contrastive_accuracy(logits: torch.Tensor) -> torch.Tensor:
    """Percentage of queries whose positive (column 0) has the highest logit. logits: [B, 1 + K]."""
    return (logits.argmax(dim=1) == 0).float().mean() * 100.0


def symmetric_mode(value: bool | str) -> str:
    """Normalise ``sfl.symmetric`` (YAML may hand over a bool) to one of SYMMETRIC_MODES."""
    mode = {True: "true", False: "off"}.get(value, value) if isinstance(value, bool) else str(value)
    if mode.lower() not in SYMMETRIC_MODES:
        raise ConfigError(f"sfl.symmetric={value!r} is not valid; choose true, legacy or off")
    return mode.lower()
