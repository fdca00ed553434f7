"""The load generator's side of the media WebSocket, written for throughput on one core.

A real Sautikit media stream is a WebSocket client offering `audio.drachtio.org` that sends one
text frame of metadata, then 20 ms binary frames of S16LE audio in real time, and receives binary
audio and `killAudio` text frames. Hundreds of them on one core leave no room for a general client
library's per-frame cost, so this is a bare asyncio Protocol: a hand-written upgrade request, frames
built with a precomputed header and a zero masking key (a valid key that makes masking a no-op,
so no XOR pass over the payload), and a parser that records arrival time and size of each frame
without copying the audio.

Each outgoing audio frame carries its send time in its first four samples (one byte each, values
0..255, far below the speech threshold) so the model on the far side can compute the lead -> model
latency without any shared state: `stamp_us` / `read_stamp`. Both processes read CLOCK_MONOTONIC
(time.monotonic_ns), which is system-wide on Linux.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import time
from array import array
from collections.abc import Callable

SUBPROTOCOL = "audio.drachtio.org"
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
_ZERO_MASK = b"\x00\x00\x00\x00"
STAMP_BYTES = 8  # four S16LE samples


def now_us() -> int:
    return time.monotonic_ns() // 1000


def stamp_bytes(us: int) -> bytes:
    """The send time (microseconds, mod 2**32) as four samples of one byte each."""
    return bytes((us & 0xFF, 0, (us >> 8) & 0xFF, 0, (us >> 16) & 0xFF, 0, (us >> 24) & 0xFF, 0))


def read_stamp(pcm: bytes | bytearray | memoryview) -> int:
    return pcm[0] | (pcm[2] << 8) | (pcm[4] << 16) | (pcm[6] << 24)


def stamp_age_us(pcm: bytes | bytearray | memoryview, at_us: int) -> int:
    """Microseconds between the stamp in `pcm` and `at_us` (wraps every ~71 minutes, harmlessly)."""
    return (at_us - read_stamp(pcm)) & 0xFFFFFFFF


def frame_header(opcode: int, length: int) -> bytes:
    """A client frame header (FIN, masked with the zero key) for a payload of `length` bytes."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, 0x80 | length)) + _ZERO_MASK
    if length < 65536:
        return bytes((first, 0x80 | 126)) + length.to_bytes(2, "big") + _ZERO_MASK
    return bytes((first, 0x80 | 127)) + length.to_bytes(8, "big") + _ZERO_MASK


def client_frame(opcode: int, payload: bytes) -> bytes:
    return frame_header(opcode, len(payload)) + payload


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _GUID).digest()).decode()  # noqa: S324 - RFC 6455


class HandshakeError(ConnectionError):
    def __init__(self, status_line: str) -> None:
        super().__init__(f"upgrade refused: {status_line}")
        self.status_line = status_line


class StreamClient(asyncio.Protocol):
    """One media stream. `await client.opened` after `loop.create_connection`; then `send_audio`.

    Received binary frames are recorded as arrival time (ns) and size; text frames are kept (they
    are rare: killAudio). `on_audio(client, t_ns, nbytes)` is called for each binary frame if set.
    """

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        metadata: str | None = None,
        on_audio: Callable[[StreamClient, int, int], None] | None = None,
        keep_audio: bool = False,
    ) -> None:
        loop = asyncio.get_running_loop()
        self.host, self.port, self.path = host, port, path
        self.metadata = metadata
        self.on_audio = on_audio
        self.keep_audio = keep_audio
        self.opened: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.transport: asyncio.Transport | None = None
        self.open_ns = 0
        self.connect_ns = time.monotonic_ns()
        self.recv_ns: array[int] = array("q")
        self.recv_len: array[int] = array("i")
        self.audio: list[bytes] = []
        self.texts: list[str] = []
        self.frames_sent = 0
        self.close_code: int | None = None
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._buf = bytearray()
        self._upgraded = False
        self._close_sent = False
        self._frag_op = 0
        self._frag = bytearray()

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        request = (
            f"GET {self.path} HTTP/1.1\r\n"
            f"Host: {self.host}:{self.port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {self._key}\r\n"
            "Sec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
        )
        transport.write(request.encode())

    def data_received(self, data: bytes) -> None:
        t = time.monotonic_ns()
        buf = self._buf
        buf += data
        if not self._upgraded:
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(buf[:end]).decode("latin-1")
            del buf[: end + 4]
            self._check_upgrade(head)
            if not self._upgraded:
                return
        self._parse(t)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc or ConnectionError("closed before the upgrade"))
        if not self.closed.done():
            self.closed.set_result(None)

    # ------------------------------------------------------------------ handshake and frames

    def _check_upgrade(self, head: str) -> None:
        lines = head.split("\r\n")
        status = lines[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        ok = (
            status.startswith("HTTP/1.1 101")
            and headers.get("sec-websocket-accept") == accept_key(self._key)
            and headers.get("sec-websocket-protocol") == SUBPROTOCOL
        )
        if not ok:
            if not self.opened.done():
                self.opened.set_exception(HandshakeError(status))
            assert self.transport is not None
            self.transport.close()
            return
        self._upgraded = True
        self.open_ns = time.monotonic_ns()
        if self.metadata is not None:
            self.send_text(self.metadata)
        if not self.opened.done():
            self.opened.set_result(None)

    def _parse(self, t: int) -> None:
        buf = self._buf
        while True:
            n = len(buf)
            if n < 2:
                return
            b0, b1 = buf[0], buf[1]
            size = b1 & 0x7F
            off = 2
            if size == 126:
                if n < 4:
                    return
                size = (buf[2] << 8) | buf[3]
                off = 4
            elif size == 127:
                if n < 10:
                    return
                size = int.from_bytes(buf[2:10], "big")
                off = 10
            if b1 & 0x80:
                off += 4  # servers do not mask; tolerate it anyway by skipping the key
            end = off + size
            if n < end:
                return
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if opcode == OP_BINARY and fin:
                self.recv_ns.append(t)
                self.recv_len.append(size)
                if self.keep_audio:
                    self.audio.append(bytes(buf[off:end]))
                if self.on_audio is not None:
                    self.on_audio(self, t, size)
            elif opcode in (OP_TEXT, OP_BINARY, OP_CONT):
                self._fragment(opcode, bool(fin), bytes(buf[off:end]), t)
            elif opcode == OP_PING:
                self._write(client_frame(OP_PONG, bytes(buf[off:end])))
            elif opcode == OP_CLOSE:
                payload = bytes(buf[off:end])
                self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                if not self._close_sent:
                    self._close_sent = True
                    self._write(client_frame(OP_CLOSE, payload[:2]))
                assert self.transport is not None
                self.transport.close()
                del buf[:end]
                return
            del buf[:end]

    def _fragment(self, opcode: int, fin: bool, payload: bytes, t: int) -> None:
        if opcode != OP_CONT:
            self._frag_op = opcode
            self._frag = bytearray()
        self._frag += payload
        if not fin:
            return
        data = bytes(self._frag)
        self._frag = bytearray()
        if self._frag_op == OP_TEXT:
            self.texts.append(data.decode("utf-8", "replace"))
        else:
            self.recv_ns.append(t)
            self.recv_len.append(len(data))
            if self.keep_audio:
                self.audio.append(data)
            if self.on_audio is not None:
                self.on_audio(self, t, len(data))

    def _write(self, data: bytes) -> None:
        tr = self.transport
        if tr is not None and not tr.is_closing():
            tr.write(data)

    # ------------------------------------------------------------------ sending

    @property
    def is_open(self) -> bool:
        tr = self.transport
        return self._upgraded and not self._close_sent and tr is not None and not tr.is_closing()

    def send_text(self, text: str) -> None:
        self._write(client_frame(OP_TEXT, text.encode()))

    def send_binary(self, payload: bytes) -> None:
        self._write(client_frame(OP_BINARY, payload))

    def send_raw(self, frame: bytes) -> None:
        """A frame already built with `frame_header` (the hot path)."""
        self._write(frame)
        self.frames_sent += 1

    def close(self, code: int = 1000) -> None:
        """Start the closing handshake; `await client.closed` for the end."""
        if self._close_sent or self.transport is None:
            if self.transport is not None and not self._upgraded:
                self.transport.close()
            return
        self._close_sent = True
        self._write(client_frame(OP_CLOSE, code.to_bytes(2, "big")))

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()


async def open_stream(
    host: str,
    port: int,
    path: str,
    *,
    metadata: str | None = None,
    timeout_s: float = 10.0,
    on_audio: Callable[[StreamClient, int, int], None] | None = None,
    keep_audio: bool = False,
) -> StreamClient:
    loop = asyncio.get_running_loop()
    _, client = await loop.create_connection(
        lambda: StreamClient(host, port, path, metadata=metadata, on_audio=on_audio, keep_audio=keep_audio),
        host,
        port,
    )
    try:
        await asyncio.wait_for(asyncio.shield(client.opened), timeout_s)
    except BaseException:
        client.abort()
        raise
    return client
