"""The messages between the trusted side and a code file's process: a length-prefixed JSON header and,
for images, raw uint8 bytes. Both sides import it; it imports nothing of accel_bench."""

from __future__ import annotations

import json
import os
import select
import struct
import time
from typing import Any, Optional

HEADER = struct.Struct("!I")
MAX_HEADER = 1 << 20


def send(fd: int, header: dict[str, Any], payload: bytes = b"") -> None:
    data = json.dumps(header).encode()
    os.write(fd, HEADER.pack(len(data)) + data)
    view = memoryview(payload)
    while view:
        view = view[os.write(fd, view) :]


def _read_exact(fd: int, count: int, deadline: Optional[float]) -> bytes:
    buffer = bytearray(count)
    view, got = memoryview(buffer), 0
    while got < count:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.readv(fd, [view[got:]])
        if chunk == 0:
            raise EOFError
        got += chunk
    return bytes(buffer)


def receive(fd: int, deadline: Optional[float] = None, max_payload: int = 0) -> tuple[dict[str, Any], bytes]:
    """One message; a header or payload larger than allowed is a protocol error (ValueError)."""
    (size,) = HEADER.unpack(_read_exact(fd, HEADER.size, deadline))
    if size > MAX_HEADER:
        raise ValueError(f"a {size}-byte header")
    header = json.loads(_read_exact(fd, size, deadline))
    if not isinstance(header, dict):
        raise ValueError("a header that is not a JSON object")
    nbytes = header.get("nbytes", 0)
    if not isinstance(nbytes, int) or not 0 <= nbytes <= max_payload:
        raise ValueError(f"a payload of {nbytes!r} bytes where at most {max_payload} fit")
    return header, _read_exact(fd, nbytes, deadline) if nbytes else b""
