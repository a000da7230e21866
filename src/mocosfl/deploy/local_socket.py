"""Messages between processes of one machine, over Unix sockets: a deployed client's process
serves one (:func:`serve`), and :class:`LocalSocketTransport` reaches several.

Frames are an 8-byte length and a :func:`~mocosfl.deploy.wire.pack`\\ ed message. The socket
file is made readable by its owner only: the channel never leaves the machine.
"""

import os
import socket
import struct
from collections.abc import Callable, Mapping
from pathlib import Path

from mocosfl.deploy.wire import Message, PayloadRejected, log, pack, unpack

MAX_FRAME = 2**31  # bytes: a frame announcing more is refused before anything is read
_LENGTH = struct.Struct(">Q")


def send_frame(sock: socket.socket, message: Message) -> None:
    data = pack(message)
    sock.sendall(_LENGTH.pack(len(data)) + data)


def _read(sock: socket.socket, n: int) -> bytes:
    chunks, left = [], n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise ConnectionError("the other side closed the connection")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock: socket.socket) -> Message:
    (n,) = _LENGTH.unpack(_read(sock, _LENGTH.size))
    if n > MAX_FRAME:
        raise PayloadRejected(f"a frame of {n} bytes, more than {MAX_FRAME}")
    return unpack(_read(sock, n))


def serve(handle: Callable[[Message], Message], path: str | Path) -> None:
    """Answer the messages of one connection at a time on the Unix socket ``path``, forever."""
    path = Path(path)
    path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        old_mask = os.umask(0o177)  # the socket file: owner only
        try:
            server.bind(str(path))
        finally:
            os.umask(old_mask)
        server.listen(1)
        while True:
            connection, _ = server.accept()
            with connection:
                try:
                    while True:
                        request = recv_frame(connection)
                        send_frame(connection, handle(request))
                except PayloadRejected as reason:
                    log.warning("dropped a connection that sent %s", reason)
                except ConnectionError:
                    pass  # the server went away; wait for the next connection


class LocalSocketTransport:
    """A :class:`~mocosfl.deploy.wire.ClientTransport` to client processes on this machine,
    ``paths[c]`` the socket of client c. Requests go out to all before any reply is read, so
    the clients compute side by side. A client that fails, or takes longer than ``timeout``
    seconds, does not answer; its connection is closed and made again at its next request."""

    def __init__(self, paths: Mapping[int, str | Path], timeout: float = 60.0) -> None:
        self.paths = {c: str(p) for c, p in paths.items()}
        self.timeout = timeout
        self._connections: dict[int, socket.socket] = {}

    def _connection(self, c: int) -> socket.socket:
        if c not in self._connections:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(self.paths[c])
            except OSError:
                sock.close()
                raise
            self._connections[c] = sock
        return self._connections[c]

    def _drop(self, c: int, reason: Exception) -> None:
        log.warning("client %d: connection lost: %s", c, reason)
        sock = self._connections.pop(c, None)
        if sock is not None:
            sock.close()

    def exchange(self, requests: Mapping[int, Message]) -> dict[int, Message | None]:
        replies: dict[int, Message | None] = dict.fromkeys(requests)
        sent = []
        for c, request in requests.items():
            try:
                send_frame(self._connection(c), request)
                sent.append(c)
            except (OSError, KeyError) as error:
                self._drop(c, error)
        for c in sent:
            try:
                replies[c] = recv_frame(self._connections[c])
            except (OSError, PayloadRejected) as error:  # timeouts are OSErrors
                self._drop(c, error)
        return replies

    def close(self) -> None:
        for c in list(self._connections):
            self._connections.pop(c).close()
