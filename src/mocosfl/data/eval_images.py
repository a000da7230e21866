"""The images of a split for evaluation: normalised, not augmented, in a fixed order."""

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .transforms import normalize

__all__ = ["EvalImages", "eval_loader"]


class EvalImages(Dataset):
    """The images of one split, normalised and not augmented, in a fixed order.

    ``len()`` is the number of images and item ``i`` one ``(image [3, S, S], label)`` pair, as for
    any map-style data set; a DataLoader built with :func:`eval_loader` fetches whole batches in
    one vectorised ``__getitems__`` call instead of image by image.
    """

    def __init__(
        self, images: torch.Tensor, labels: torch.Tensor, indices: np.ndarray, mean, std
    ) -> None:
        self.images, self.labels = images, labels
        self.indices = np.asarray(indices, dtype=np.int64)
        self.mean, self.std = tuple(mean), tuple(std)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[i])
        return normalize(self.images[j : j + 1], self.mean, self.std)[0], self.labels[j]

    def __getitems__(self, items: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(self.indices[np.asarray(items, dtype=np.int64)])
        return normalize(self.images[idx], self.mean, self.std), self.labels[idx]


def _as_batch(batch: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """collate_fn for :class:`EvalImages`: ``__getitems__`` already returns a whole batch."""
    return batch


def eval_loader(dataset: EvalImages, batch_size: int) -> DataLoader:
    """Fixed-order batches ``(float images [B, 3, S, S], int64 labels [B])`` of ``dataset``.

    Runs in the main process: normalising a stored batch is cheaper than a worker round trip.
    """
    return DataLoader(
        dataset, batch_size=int(batch_size), shuffle=False, num_workers=0, collate_fn=_as_batch
    )
