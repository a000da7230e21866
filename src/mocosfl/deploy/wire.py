"""What crosses the network between the server and a deployed client, and its checks.

A :class:`Message` is a kind, named arrays and a few scalars: the shape of a Flower message
(an ``ArrayRecord`` and a ``ConfigRecord``), with nothing that unpickles. Every payload is
checked (names, shape, dtype, finite values, the step it belongs to) before it touches a model;
one that fails is a :class:`PayloadRejected`, and its sender counts as missing the step.
"""

import io
import json
import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch

log = logging.getLogger("mocosfl.deploy")

Scalar = int | float | str
# name -> (shape, dtype) that a payload's arrays must have
Expected = Mapping[str, tuple[tuple[int, ...], np.dtype]]


@dataclass
class Message:
    """``kind`` (encode | apply | get_state | set_state), ``arrays`` (name -> ndarray) and
    ``config`` (name -> int | float | str; ``step`` is the server step it belongs to, ``error``
    the reason a client refused the request)."""

    kind: str
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    config: dict[str, Scalar] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays (what the payload costs on the wire, framing aside)."""
        return sum(a.nbytes for a in self.arrays.values())


class ClientTransport(Protocol):
    """Sends one request to each of some clients and waits for their replies."""

    def exchange(self, requests: Mapping[int, Message]) -> dict[int, Message | None]:
        """Reply of each client of ``requests``: None for one that did not answer in time."""


class PayloadRejected(ValueError):
    """A message that must not touch the model; the text says why (it is logged)."""


def to_arrays(tensors: Mapping[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Tensors as owned host arrays (a copy: nothing is shared with the sender's models)."""
    return {name: t.detach().cpu().numpy().copy() for name, t in tensors.items()}


def expected_of(tensors: Mapping[str, torch.Tensor]) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """The :data:`Expected` of arrays shaped and typed like ``tensors``."""
    return {
        name: (tuple(t.shape), np.dtype(torch.empty(0, dtype=t.dtype).numpy().dtype))
        for name, t in tensors.items()
    }


def check_step(message: Message, step: int) -> None:
    """``message`` belongs to server step ``step``."""
    sent = message.config.get("step")
    if sent != step:
        raise PayloadRejected(f"{message.kind} for step {sent}, expected step {step}")


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


HEADER = "__header__"  # the npz entry of a packed message that holds its kind and config


def pack(message: Message) -> bytes:
    """``message`` as bytes: an ``.npz`` archive of its arrays and a JSON header (no pickle)."""
    if HEADER in message.arrays:
        raise ValueError(f"an array may not be named {HEADER}")
    header = json.dumps({"kind": message.kind, "config": message.config}).encode()
    buffer = io.BytesIO()
    np.savez(buffer, **{HEADER: np.frombuffer(header, np.uint8)}, **message.arrays)
    return buffer.getvalue()


def unpack(data: bytes) -> Message:
    """The message :func:`pack` made; anything else is a :class:`PayloadRejected`."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as archive:
            header = json.loads(archive[HEADER].tobytes())
            arrays = {name: archive[name] for name in archive.files if name != HEADER}
    except (ValueError, KeyError, OSError, EOFError, zipfile.BadZipFile) as error:
        raise PayloadRejected(f"not a packed message: {error}") from error
    kind, config = header.get("kind"), header.get("config")
    if not isinstance(kind, str) or not isinstance(config, dict):
        raise PayloadRejected("not a packed message: its header lacks a kind or a config")
    if not all(isinstance(v, int | float | str) for v in config.values()):
        raise PayloadRejected("a packed message's config holds only numbers and strings")
    return Message(kind, arrays, config)
