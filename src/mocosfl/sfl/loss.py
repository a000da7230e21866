"""InfoNCE against a queue of negatives (MoCo's loss), and the ways a step feeds it its views."""

import torch
import torch.nn.functional as F

from mocosfl.errors import ConfigError

# sfl.loss, how a step feeds InfoNCE its two views: two_way = each view as query against the
# other as key, the mean of the two terms; one_way = one term; legacy_sum = the original's sum of
# two terms whose second gives the clients no gradient (docs/differences.md, "symmetric loss").
LOSS_MODES = ("two_way", "one_way", "legacy_sum")


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


def loss_mode(value: str) -> str:
    """``value`` if it is one of LOSS_MODES, else a ConfigError naming ``sfl.loss``."""
    if value not in LOSS_MODES:
        raise ConfigError(f"sfl.loss={value!r} is not valid; choose {', '.join(LOSS_MODES)}")
    return value
