"""Run a frozen encoder over a data loader once."""

import torch
from torch import nn
from torch.utils.data import DataLoader


@torch.no_grad()
def extract_features(
    encoder: nn.Module, loader: DataLoader, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Features [N, D] (float32, on ``device``) and labels [N] of every (image, label) batch."""
    encoder = encoder.to(device).eval()
    features, labels = [], []
    for images, target in loader:
        features.append(encoder(images.to(device, non_blocking=True)).float())
        labels.append(target.to(device))
    return torch.cat(features), torch.cat(labels)
