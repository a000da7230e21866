"""Weighted kNN classification of features (InstDisc / MoCo monitor style)."""

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from mocosfl.evaluation.features import extract_features
from mocosfl.evaluation.linear import accuracy

if TYPE_CHECKING:
    from mocosfl.data.module import FederatedDataModule


@torch.no_grad()
def knn_predict(
    features: torch.Tensor,
    bank: torch.Tensor,
    bank_labels: torch.Tensor,
    num_classes: int,
    k: int = 200,
    temperature: float = 0.1,
    chunk_size: int = 1024,
) -> torch.Tensor:
    """Class scores of each query from its k most cosine-similar bank features.

    Each neighbour votes for its class with weight ``exp(similarity / temperature)``.

    Args:
        features: [B, D] query features (normalised here).
        bank: [N, D] reference features (normalised here).
        bank_labels: [N] int labels of the bank.
    Returns:
        [B, num_classes] summed vote weights.
    """
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, bank.shape[0])
    scores = []
    for chunk in F.normalize(features.float(), dim=1).split(chunk_size):
        sim, idx = (chunk @ bank.T).topk(k, dim=1)
        votes = F.one_hot(bank_labels[idx], num_classes).float()
        scores.append((votes * (sim / temperature).exp().unsqueeze(-1)).sum(dim=1))
    return torch.cat(scores)


def knn_top1(
    encoder: nn.Module,
    datamodule: "FederatedDataModule",
    splits: tuple[str, ...] = ("test",),
    k: int = 200,
    temperature: float = 0.1,
) -> dict[str, tuple[float, int]]:
    """kNN top-1 (%) of a frozen ``encoder`` on each of ``splits``, with the datamodule's
    evaluation bank (its unaugmented training images), and the number of images of each split."""
    bank, bank_labels = extract_features(encoder, datamodule.eval_dataloader("train"))
    out = {}
    for split in splits:
        queries, labels = extract_features(encoder, datamodule.eval_dataloader(split))
        scores = knn_predict(queries, bank, bank_labels, datamodule.num_classes, k, temperature)
        out[split] = (accuracy(scores, labels, datamodule.num_classes), len(labels))
    return out
