"""Negative-key queues: the one all MocoSFL clients share, and one per client (FL-MoCo)."""

import torch
import torch.nn.functional as F
from torch import nn


@torch.no_grad()
def ring_write(buffer: torch.Tensor, ptr: torch.Tensor, keys: torch.Tensor) -> None:
    """Write ``keys`` [B, D] into the ring ``buffer`` [K, D] at ``ptr`` ([] long, advanced in
    place), wrapping around the end; a batch larger than the ring keeps only its last K keys."""
    size = buffer.shape[0]
    keys = keys.detach().to(buffer.dtype)[-size:]
    n = keys.shape[0]
    idx = (ptr + torch.arange(n, device=buffer.device)) % size
    buffer[idx] = keys
    ptr.copy_((ptr + n) % size)


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
        ring_write(self.keys, self.ptr, keys)


class ClientQueues(nn.Module):
    """One FIFO ring of negatives per client, each filled only with its own client's keys.

    Buffers (persistent, so a checkpoint resumes every queue exactly):
        keys: [N, K, D] normalised rows, each client's ring starting as normalised Gaussian noise.
        ptr:  [N] long, the row of each ring the client's next key is written to.
    """

    def __init__(self, num_clients: int, size: int, dim: int) -> None:
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        self.register_buffer("keys", F.normalize(torch.randn(num_clients, size, dim), dim=2))
        self.register_buffer("ptr", torch.zeros(num_clients, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, client: int, keys: torch.Tensor) -> None:
        """Write client ``client``'s keys [B, D] into its own ring (see :func:`ring_write`)."""
        # Basic indexing gives views, so the ring and its pointer change in place.
        ring_write(self.keys[client], self.ptr[client], keys)
