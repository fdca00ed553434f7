"""How the simulated switch reads app documents: lenient XML, validated JSON (SAUTIKIT.md §2, §4)."""

from __future__ import annotations

import json

import pytest

from local.sautikit.verbs import parse_document


def test_xml_stream_then_dial_with_normalised_attributes():
    doc = parse_document(
        b'<?xml version="1.0"?><Response>'
        b'<Stream url="wss://b.example/m?t=1" connect="true" track="inbound_track" '
        b'outputSamplingRate="16000" bidirectionalSamplingRate="24000" headerMetadata=\'{"a":"1"}\'/>'
        b'<Dial callerId="+254700000100" timeout="20"><Number>+254711999000</Number></Dial>'
        b"</Response>",
        "application/xml",
    )
    assert doc.format == "xml"
    assert not doc.problems
    stream, dial = doc.verbs
    assert stream.name == "stream"
    assert stream.flag("connect") is True
    assert stream.number("outputSamplingRate") == 16000
    assert stream.number("bidirectional_sampling_rate") == 24000
    assert stream.get("headerMetadata") == '{"a":"1"}'
    assert dial.numbers == ["+254711999000"]
    assert dial.number("timeout") == 20


def test_xml_is_lenient_unknown_verbs_are_skipped_and_recorded():
    doc = parse_document(b"<Response><Pause length='1'/><Say loop='2'>Hi</Say><Hangup/></Response>")
    assert [v.name for v in doc.verbs] == ["say", "hangup"]
    assert doc.verbs[0].text == "Hi"
    assert doc.problems == [("unknown_verb", "<Pause> skipped")]
    assert not doc.fatal


def test_stream_inside_connect_is_skipped_as_the_platform_does():
    doc = parse_document(b'<Response><Connect><Stream url="wss://x"/></Connect><Hangup/></Response>')
    assert [v.name for v in doc.verbs] == ["hangup"]
    assert doc.problems[0][0] == "stream_inside_connect"


@pytest.mark.parametrize(
    "body",
    [b"<Response><Say>x</Response>", b"<Reply/>", b"OK", b'<!DOCTYPE x [<!ENTITY a "b">]><Response/>'],
)
def test_unusable_documents_are_fatal(body):
    doc = parse_document(body, "text/plain")
    assert doc.fatal
    assert doc.problems[0][0] == "unparseable_document"


def test_empty_body_and_empty_response_mean_nothing_to_do():
    assert parse_document(b"").verbs == []
    assert not parse_document(b"").fatal
    empty = parse_document(b"<Response></Response>", "application/xml")
    assert empty.verbs == []
    assert not empty.problems


def test_json_actions_are_validated_as_a_whole():
    ok = parse_document(
        json.dumps(
            {
                "actions": [
                    {"say": {"text": "Hello", "language": "en-KE"}},
                    {"stream": {"url": "wss://b/m", "connect": True, "output_sampling_rate": 8000}},
                    {"dial": {"numbers": ["+254711999000", "+254711999001"]}},
                ]
            }
        ).encode(),
        "application/json",
    )
    assert [v.name for v in ok.verbs] == ["say", "stream", "dial"]
    assert ok.verbs[1].flag("connect") is True
    assert ok.verbs[1].number("outputSamplingRate") == 8000
    assert ok.verbs[2].numbers == ["+254711999000", "+254711999001"]

    for bad in (
        {"actions": [{"dial": {}}]},
        {"actions": [{"dial": {"number": "+254711999000", "sip": "sip:x"}}]},
        {"actions": [{"say": {}}]},
        {"actions": [{"teleport": {}}]},
        {"actions": [{"say": {"text": "a"}, "hangup": {}}]},
        {"actions": [{"say": {"text": "a"}}] * 51},
        {"verbs": []},
    ):
        doc = parse_document(json.dumps(bad).encode(), "application/json")
        assert doc.fatal, bad
        assert doc.verbs == []
        assert doc.problems[0][0] == "invalid_json_actions"
