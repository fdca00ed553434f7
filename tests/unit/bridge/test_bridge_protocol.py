"""The media stream's URL, metadata frame and frame hygiene (SAUTIKIT.md §5)."""

from __future__ import annotations

import json

import pytest

from bridge.protocol import KILL_AUDIO, FrameGuard, parse_metadata, parse_query


def test_kill_audio_is_the_documented_message() -> None:
    assert json.loads(KILL_AUDIO) == {"type": "killAudio"}


def test_query_names_the_session_token_and_rates() -> None:
    q = parse_query("/stream?session=HD_0123456789ab&token=123.abc&in_rate=8000&out_rate=24000")
    assert (q.path, q.session_id, q.token, q.in_rate, q.out_rate) == (
        "/stream",
        "HD_0123456789ab",
        "123.abc",
        8000,
        24000,
    )
    assert parse_query("/stream?sessionId=HD_1&token=t").session_id == "HD_1"
    # Unknown rates and hostile ids are ignored rather than trusted.
    q = parse_query("/stream?session=../../etc&out_rate=12345")
    assert q.session_id is None
    assert q.out_rate is None
    assert parse_query("/").token is None


@pytest.mark.parametrize(
    ("frame", "call_id"),
    [
        ({"callSid": "HD_aaa"}, "HD_aaa"),
        ({"call_sid": "c-1"}, "c-1"),
        ({"call_id": "c-2"}, "c-2"),
        ({"sessionId": "HD_bbb"}, "HD_bbb"),
        ({"streamSid": "s-3"}, "s-3"),
        ({"metadata": {"callSid": "HD_nested"}}, "HD_nested"),
        ({"event": "start", "metadata": {"call_id": "deep"}}, "deep"),
    ],
)
def test_metadata_call_id_under_any_known_name(frame: dict[str, object], call_id: str) -> None:
    assert parse_metadata(json.dumps(frame)).call_id == call_id


def test_metadata_as_the_simulator_sends_it() -> None:
    meta = parse_metadata(
        json.dumps(
            {
                "callSid": "HD_0123456789ab",
                "sessionId": "HD_0123456789ab",
                "call_id": "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
                "streamSid": None,
                "sampleRate": 16000,
                "bidirectionalSamplingRate": 16000,
                "mixType": "mono",
                "channels": 1,
                "headers": {},
            }
        )
    )
    assert meta.session_id == "HD_0123456789ab"
    assert meta.call_id == "0199a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    only_sid = parse_metadata(json.dumps({"callSid": "HD_0123456789ab"}))
    assert only_sid.session_id == only_sid.call_id == "HD_0123456789ab"


def test_metadata_headers_rates_and_channels() -> None:
    as_string = {
        "callSid": "abc",
        "sessionId": "HD_123",
        "headers": json.dumps({"lead": "L1", "n": 3}),
        "sampleRate": 8000,
        "mixType": "stereo",
        "bidirectionalSamplingRate": "16000",
    }
    meta = parse_metadata(json.dumps(as_string))
    assert meta.present
    assert meta.call_id == "abc"
    assert meta.session_id == "HD_123"
    assert meta.headers == {"lead": "L1", "n": "3"}
    assert (meta.sample_rate, meta.reply_rate, meta.channels) == (8000, 16000, 2)
    as_object = parse_metadata(json.dumps({"metadata": {"headers": {"a": "b"}, "channels": 2}}))
    assert as_object.headers == {"a": "b"}
    assert as_object.channels == 2


@pytest.mark.parametrize(
    "junk", ["", "not json", "[1,2]", "null", '{"headers": "{broken"}', '{"sampleRate": "x"}']
)
def test_metadata_junk_gives_empty_fields_not_errors(junk: str) -> None:
    meta = parse_metadata(junk)
    assert meta.call_id is None
    assert meta.sample_rate is None
    assert meta.channels == 1
    assert meta.headers == {}


def test_frame_guard_trims_drops_and_counts() -> None:
    guard = FrameGuard(channels=1, max_bytes=1000)
    assert guard.clean(bytes(640)) == bytes(640)
    assert guard.clean(bytes(641)) == bytes(640)  # odd: last byte trimmed
    assert guard.clean(b"") is None
    assert guard.clean(b"\x01") is None  # odd and nothing left
    assert guard.clean(bytes(1001)) is None
    assert guard.counts() == {"frames": 2, "trimmed": 2, "dropped_empty": 2, "dropped_oversized": 1}
    stereo = FrameGuard(channels=2)
    assert stereo.clean(bytes(642)) == bytes(640)  # a torn stereo pair
