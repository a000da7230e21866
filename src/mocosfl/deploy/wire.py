"""What crosses the network between the server and a deployed client, and its checks.

A :class:`Message` is a kind, named arrays and a few scalars: the shape of a Flower message
(an ``ArrayRecord`` and a ``ConfigRecord``), with nothing that unpickles. Every payload is
checked (names, shape, dtype, finite values, the step it belongs to; :mod:`mocosfl.deploy.tensors`)
before it touches a model; one that fails is a :class:`PayloadRejected`, and its sender counts
as missing the step. Nothing here imports torch: Flower's ClientApp process, which only
forwards messages, starts fast.
"""

import io
import json
import logging
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

log = logging.getLogger("mocosfl.deploy")

Scalar = int | float | str


@dataclass
class Message:
    """``kind`` (sync | encode | apply | get_state), ``arrays`` (name -> ndarray) and
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


def check_step(message: Message, step: int) -> None:
    """``message`` belongs to server step ``step``."""
    sent = message.config.get("step")
    if sent != step:
        raise PayloadRejected(f"{message.kind} for step {sent}, expected step {step}")


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
