"""Weighted kNN classification of features (InstDisc / MoCo monitor style)."""

import torch
import torch.nn.functional as F


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
