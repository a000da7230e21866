"""The negative-key queue shared by all clients."""

import torch
import torch.nn.functional as F
from torch import nn


class NegativeQueue(nn.Module):
    """FIFO ring buffer of L2-normalised keys, used as InfoNCE negatives.

    Buffers (persistent, so a checkpoint resumes the exact queue):
        keys: [K, D] normalised rows, initialised as normalised Gaussian noise (MoCo's start).
        ptr:  [] long, the row the next key is written to.
    """

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    @property
    def size(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` [B, D] at the pointer, wrapping around the end (the original wraps too).

        A batch larger than the queue keeps only its last ``K`` keys.
        """
        keys = keys.detach().to(self.keys.dtype)[-self.size :]
        n = keys.shape[0]
        idx = (self.ptr + torch.arange(n, device=self.keys.device)) % self.size
        self.keys[idx] = keys
        self.ptr.copy_((self.ptr + n) % self.size)
