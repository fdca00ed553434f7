"""The load generator's WebSocket client and latency stamps, without sockets (a fake transport)."""

from __future__ import annotations

import asyncio

import pytest

from bench.loadgen import CYCLE, FRAME_BYTES, Call, lead_cycle
from bench.wire import (
    OP_BINARY,
    OP_CLOSE,
    OP_PING,
    OP_PONG,
    OP_TEXT,
    STAMP_BYTES,
    HandshakeError,
    StreamClient,
    accept_key,
    client_frame,
    frame_header,
    read_stamp,
    stamp_age_us,
    stamp_bytes,
)


class FakeTransport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def abort(self) -> None:
        self.closed = True


def server_frame(opcode: int, payload: bytes, *, fin: bool = True) -> bytes:
    n = len(payload)
    first = (0x80 if fin else 0) | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return bytes((first, 126)) + n.to_bytes(2, "big") + payload
    return bytes((first, 127)) + n.to_bytes(8, "big") + payload


def handshake_reply(
    client: StreamClient, *, protocol: str = "audio.drachtio.org", status: str = "101"
) -> bytes:
    return (
        f"HTTP/1.1 {status} Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Accept: {accept_key(client._key)}\r\nSec-WebSocket-Protocol: {protocol}\r\n\r\n"
    ).encode()


def test_stamp_round_trips_and_ages_across_the_32_bit_wrap() -> None:
    for us in (0, 1, 123_456_789, 2**32 - 1):
        pcm = stamp_bytes(us) + bytes(632)
        assert read_stamp(pcm) == us
    # Sent just before the counter wrapped, received just after: still a small positive age.
    assert stamp_age_us(stamp_bytes(2**32 - 500), (2**32 + 1500) & 0xFFFFFFFF) == 2000


def test_stamp_samples_stay_below_the_speech_threshold() -> None:
    import numpy as np

    samples = np.frombuffer(stamp_bytes(2**32 - 1), dtype="<i2")
    assert samples.max() <= 255  # the bridge counts a frame as speech from a peak of 1200


def test_frame_headers_cover_the_three_length_forms_and_mask_with_the_zero_key() -> None:
    assert frame_header(OP_TEXT, 5) == bytes((0x81, 0x85)) + b"\0\0\0\0"
    assert frame_header(OP_BINARY, 640) == bytes((0x82, 0xFE, 0x02, 0x80)) + b"\0\0\0\0"
    assert frame_header(OP_BINARY, 70_000)[:2] == bytes((0x82, 0xFF))
    assert int.from_bytes(frame_header(OP_BINARY, 70_000)[2:10], "big") == 70_000
    assert client_frame(OP_BINARY, b"ab").endswith(b"\0\0\0\0ab")


def test_accept_key_matches_rfc6455_example() -> None:
    assert accept_key("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


async def test_client_upgrades_sends_metadata_and_records_frames() -> None:
    got: list[int] = []
    client = StreamClient(
        "127.0.0.1", 9, "/stream?x=1", metadata='{"callSid":"HD_1"}', on_audio=lambda c, t, n: got.append(n)
    )
    tr = FakeTransport()
    client.connection_made(tr)
    request = tr.written[0].decode()
    assert request.startswith("GET /stream?x=1 HTTP/1.1\r\n")
    assert "Sec-WebSocket-Protocol: audio.drachtio.org" in request

    # The reply and the first frames arrive in one read, split oddly across the next.
    frames = server_frame(OP_BINARY, bytes(640)) + server_frame(OP_TEXT, b'{"type":"killAudio"}')
    data = handshake_reply(client) + frames[:3]
    client.data_received(data)
    assert client.opened.done()
    assert client.is_open
    assert tr.written[1] == client_frame(OP_TEXT, b'{"callSid":"HD_1"}')  # metadata first
    client.data_received(frames[3:] + server_frame(OP_PING, b"hi"))
    assert list(client.recv_len) == [640]
    assert got == [640]
    assert client.texts == ['{"type":"killAudio"}']
    assert tr.written[-1] == client_frame(OP_PONG, b"hi")

    client.send_raw(frame_header(OP_BINARY, 4) + b"abcd")
    assert client.frames_sent == 1
    client.data_received(server_frame(OP_CLOSE, (1000).to_bytes(2, "big")))
    assert client.close_code == 1000
    assert tr.closed
    assert tr.written[-1][:2] == bytes((0x88, 0x82))  # our close reply


async def test_fragmented_binary_is_recorded_once_whole() -> None:
    client = StreamClient("127.0.0.1", 9, "/")
    tr = FakeTransport()
    client.connection_made(tr)
    client.data_received(
        handshake_reply(client)
        + server_frame(OP_BINARY, bytes(300), fin=False)
        + server_frame(0x0, bytes(340), fin=True)
    )
    assert list(client.recv_len) == [640]


@pytest.mark.parametrize(("status", "protocol"), [("403", "audio.drachtio.org"), ("101", "other")])
async def test_refused_or_wrong_subprotocol_fails_the_open(status: str, protocol: str) -> None:
    client = StreamClient("127.0.0.1", 9, "/")
    tr = FakeTransport()
    client.connection_made(tr)
    client.data_received(handshake_reply(client, protocol=protocol, status=status))
    with pytest.raises(HandshakeError):
        await client.opened
    assert tr.closed


def test_lead_script_is_speech_then_quiet_in_20ms_frames() -> None:
    import numpy as np

    frames = lead_cycle()
    assert all(len(f) == FRAME_BYTES for f in frames)
    assert len(frames) == 150  # 1 s speech + 2 s quiet
    peaks = [int(np.abs(np.frombuffer(f, dtype="<i2")).max()) for f in frames]
    assert min(peaks[5:50]) > 1200
    assert max(peaks[50:]) == 0


def test_call_frames_carry_the_stamp_then_greeting_silence_then_the_script() -> None:
    call = Call(0, "HD_bench0000000000", client=None, prefix=2, offset=0, opened_at=0.0)  # type: ignore[arg-type]
    header = frame_header(OP_BINARY, FRAME_BYTES)
    stamp = stamp_bytes(42)
    first = call.next_frame(stamp)
    assert first.startswith(header + stamp)
    assert first[len(header) + STAMP_BYTES :] == bytes(FRAME_BYTES - STAMP_BYTES)
    call.next_frame(stamp)
    third = call.next_frame(stamp)
    assert third[len(header) + STAMP_BYTES :] == CYCLE[0][STAMP_BYTES:]
