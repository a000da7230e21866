"""Run a frozen encoder over a data loader once."""

import torch
from torch import nn
from torch.utils.data import DataLoader

# A split as the evaluations read it: (features [N, D] float32, labels [N] int64).
Split = tuple[torch.Tensor, torch.Tensor]


@torch.no_grad()
def extract_features(
    encoder: nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> Split:
    """Features [N, D] (float32, on ``device``) and labels [N] of every (image, label) batch."""
    encoder = encoder.to(device).eval()
    features, labels = [], []
    for images, target in loader:
        features.append(encoder(images.to(device, non_blocking=True)).float())
        labels.append(target.to(device))
    return torch.cat(features), torch.cat(labels)
