"""Payload arrays as tensors, checked against what the receiver expects."""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import numpy as np
import torch

from mocosfl.deploy.wire import Message, PayloadRejected

# name -> (shape, dtype) that a payload's arrays must have
Expected = Mapping[str, tuple[tuple[int, ...], np.dtype]]


def to_arrays(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Tensors as owned host arrays (a copy: nothing is shared with the sender's models)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in tensors.items()}


def expected_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The :data:`Expected` of arrays shaped and typed like ``tensors``."""
    return {
        name: (tuple(t.shape), np.dtype(torch.empty(0, dtype=t.dtype).numpy().dtype))
        for name, t in tensors.items()
    }


def check_arrays(
    message: Message, expected: Expected, *, subset: bool = False
) -> dict[str, torch.Tensor]:
    """The arrays of ``message`` as tensors, once every one has the name, shape and dtype of
    ``expected`` and finite values. All names must be there, or with ``subset`` at least one."""
    names, wanted = set(message.arrays), set(expected)
    unknown, missing = sorted(names - wanted), sorted(wanted - names)
    if unknown:
        raise PayloadRejected(f"{message.kind}: unknown arrays {', '.join(unknown)}")
    if missing and not (subset and names):
        raise PayloadRejected(f"{message.kind}: missing arrays {', '.join(missing)}")
    tensors = {}
    for name, array in message.arrays.items():
        shape, dtype = expected[name]
        if not isinstance(array, np.ndarray) or array.dtype != dtype:
            got = getattr(array, "dtype", type(array).__name__)
            raise PayloadRejected(f"{message.kind}: {name} has dtype {got}, expected {dtype}")
        if array.shape != shape:
            raise PayloadRejected(
                f"{message.kind}: {name} has shape {array.shape}, expected {shape}"
            )
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise PayloadRejected(f"{message.kind}: {name} has values that are not finite")
        tensors[name] = torch.from_numpy(array.copy())
    return tensors


@contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """torch's default dtype set to ``dtype`` inside the block, restored after it."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
