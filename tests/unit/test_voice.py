"""Voice verbs: exact attribute spellings, escaping that survives hostile input, JSON rules."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from typing import Any

import pytest

from leadqual.voice import (
    JSON_CONTENT_TYPE,
    MAX_ACTIONS,
    XML_CONTENT_TYPE,
    Dial,
    Hangup,
    Play,
    Redirect,
    Reject,
    Response,
    Say,
    Stream,
    VerbError,
)

HOSTILE = [
    '"/><Dial>+15550001111</Dial><Say x="',
    "'/><Hangup/>",
    "</Say></Response><Response><Dial>+1</Dial>",
    "<![CDATA[<Dial>+1</Dial>]]>",
    "&amp; &lt;Dial&gt; &#60;",
    "line1\nline2\r\tend",
    "<!-- --><?pi x?>",
    "ctrl\x00\x01\x08\x0b\x1f chars",
    "emoji 😀 and Kiswahili: Habari, karibu!",
]
BRIDGE = "wss://bridge.example/media?token=1700000000.abc&lead=l1"


def parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 -- our own output, parsed to prove its structure


def clean(text: str) -> str:
    """What survives: XML 1.0 cannot carry most C0 control characters at all."""
    return "".join(ch for ch in text if ch in "\t\n\r" or ord(ch) >= 0x20)


def test_empty_response() -> None:
    assert Response([]).to_xml() == "<Response/>"
    assert Response().to_dict() == {"actions": []}
    assert Response([]).render() == ("<Response/>", XML_CONTENT_TYPE)
    assert Response([]).render("json") == ('{"actions":[]}', JSON_CONTENT_TYPE)


def test_stream_attribute_spellings_and_top_level_position() -> None:
    stream = Stream(
        BRIDGE,
        name="lq-l1-1",
        track="inbound_track",
        connect=True,
        output_sampling_rate=16000,
        bidirectional_sampling_rate=24000,
        header_metadata={"lead_id": "l1", "attempt": 2, "ratio": 0.5, "vip": False},
        open_metadata="hello",
        status_callback="https://hooks.example/events?kind=stream",
        status_events=["stream-started", "stream-stopped", "stream-error"],
    )
    root = parse(Response([stream, Dial(["+254733000003"])]).to_xml())
    assert root.tag == "Response"
    assert [child.tag for child in root] == ["Stream", "Dial"]
    attrs = root[0].attrib
    assert attrs == {
        "url": BRIDGE,
        "name": "lq-l1-1",
        "track": "inbound_track",
        "connect": "true",
        "outputSamplingRate": "16000",
        "bidirectionalSamplingRate": "24000",
        "headerMetadata": '{"attempt":2,"lead_id":"l1","ratio":0.5,"vip":false}',
        "openMetadata": "hello",
        "statusCallback": "https://hooks.example/events?kind=stream",
        "statusEvents": "stream-started stream-stopped stream-error",
    }
    # headerMetadata is a JSON object serialised as a string, flat and typed.
    assert json.loads(attrs["headerMetadata"]) == {"lead_id": "l1", "attempt": 2, "ratio": 0.5, "vip": False}


def test_stream_defaults_hold_the_call_and_hear_only_the_lead() -> None:
    attrs = parse(Stream(BRIDGE).to_xml()).attrib
    assert attrs["connect"] == "true"
    assert attrs["track"] == "inbound_track"
    assert attrs["outputSamplingRate"] == "16000"
    assert attrs["bidirectionalSamplingRate"] == "16000"
    assert "headerMetadata" not in attrs
    assert "connect" not in parse(Stream(BRIDGE, connect=False).to_xml()).attrib


def test_dial_say_play_redirect_reject_spellings() -> None:
    root = parse(
        Response(
            [
                Say("Karibu", voice="woman", language="sw-KE", loop=2),
                Play("https://cdn.example/hold.wav"),
                Dial(["+254733000003", "+254733000004"], caller_id="+254711000001", timeout=25, record=True),
                Redirect("https://hooks.example/next", method="POST"),
                Reject("busy"),
                Hangup(),
            ]
        ).to_xml()
    )
    say, play, dial, redirect, reject, hangup = list(root)
    assert (say.tag, say.text, say.attrib) == (
        "Say",
        "Karibu",
        {"voice": "woman", "language": "sw-KE", "loop": "2"},
    )
    assert play.attrib == {"url": "https://cdn.example/hold.wav"}
    assert dial.attrib == {"callerId": "+254711000001", "timeout": "25", "record": "true"}
    assert [(n.tag, n.text) for n in dial] == [("Number", "+254733000003"), ("Number", "+254733000004")]
    assert (redirect.text, redirect.attrib) == ("https://hooks.example/next", {"method": "POST"})
    assert reject.attrib == {"reason": "busy"}
    assert (hangup.tag, hangup.attrib, len(hangup)) == ("Hangup", {}, 0)


@pytest.mark.parametrize("evil", HOSTILE)
def test_hostile_text_cannot_change_the_document(evil: str) -> None:
    response = Response(
        [
            Say(f"Hello {evil}, this is Amani", voice=evil, language=evil),
            Stream(
                f"wss://bridge.example/media?name={evil}",
                name=evil,
                header_metadata={"name": evil, evil: "k"},
                open_metadata=evil,
                status_callback=f"https://hooks.example/s?x={evil}",
                status_events=[evil],
            ),
            Dial([f"+2547{evil}"], caller_id=evil, record=evil),
            Redirect(f"https://hooks.example/r?{evil}"),
        ]
    )
    root = parse(response.to_xml())
    # Structure is exactly what we built: no injected elements anywhere in the tree.
    assert [el.tag for el in root.iter()] == ["Response", "Say", "Stream", "Dial", "Number", "Redirect"]
    say, stream, dial, redirect = list(root)
    assert say.text == clean(f"Hello {evil}, this is Amani")
    assert say.attrib == {"voice": clean(evil), "language": clean(evil)}
    assert stream.attrib["url"] == clean(f"wss://bridge.example/media?name={evil}")
    assert stream.attrib["name"] == clean(evil)
    assert stream.attrib["openMetadata"] == clean(evil)
    assert stream.attrib["statusEvents"] == clean(evil)
    assert stream.attrib["statusCallback"] == clean(f"https://hooks.example/s?x={evil}")
    assert json.loads(stream.attrib["headerMetadata"]) == json.loads(
        clean(json.dumps({"name": evil, evil: "k"}))
    )
    assert dial.attrib == {"callerId": clean(evil), "record": clean(evil)}
    assert dial[0].text == clean(f"+2547{evil}")
    assert redirect.text == clean(f"https://hooks.example/r?{evil}")
    # JSON is escaped by construction and round-trips exactly, control characters included.
    actions = json.loads(response.to_json())["actions"]
    assert actions[0]["say"]["text"] == f"Hello {evil}, this is Amani"
    assert actions[1]["stream"]["name"] == evil


def test_lead_name_injection_from_the_task() -> None:
    name = '"/><Dial>+15550001111</Dial>'
    xml = Response([Say(f"Hi {name}"), Stream(BRIDGE, header_metadata={"lead_name": name})]).to_xml()
    root = parse(xml)
    assert [el.tag for el in root.iter()] == ["Response", "Say", "Stream"]
    assert root.find(".//Dial") is None
    assert root[0].text == f"Hi {name}"
    assert json.loads(root[1].attrib["headerMetadata"]) == {"lead_name": name}


def test_json_actions_follow_the_sdk_shape() -> None:
    body = json.loads(
        Response(
            [
                Say("Hi", language="en-KE"),
                Stream(BRIDGE, header_metadata={"lead_id": "l1"}, status_events=["stream-stopped"]),
                Dial(["+254733000003"], caller_id="+254711000001", timeout=20),
                Dial(["+254733000003", "+254733000004"]),
                Dial(sip="sip:rep@pbx.example"),
                Hangup(),
                Reject(),
                Redirect("https://hooks.example/next"),
                Play("https://cdn.example/a.wav"),
            ]
        ).to_json()
    )
    assert body["actions"] == [
        {"say": {"text": "Hi", "language": "en-KE"}},
        {
            "stream": {
                "url": BRIDGE,
                "track": "inbound_track",
                "connect": True,
                "outputSamplingRate": 16000,
                "bidirectionalSamplingRate": 16000,
                "headerMetadata": '{"lead_id":"l1"}',
                "statusEvents": "stream-stopped",
            }
        },
        {"dial": {"number": "+254733000003", "callerId": "+254711000001", "timeout": 20}},
        {"dial": {"numbers": ["+254733000003", "+254733000004"]}},
        {"dial": {"sip": "sip:rep@pbx.example"}},
        {"hangup": {}},
        {"reject": {}},
        {"redirect": {"url": "https://hooks.example/next"}},
        {"play": {"url": "https://cdn.example/a.wav"}},
    ]
    for action in body["actions"]:
        if "dial" in action:
            assert sum(key in action["dial"] for key in ("number", "numbers", "sip")) == 1


def test_json_action_limit() -> None:
    assert len(Response([Hangup()] * MAX_ACTIONS).to_dict()["actions"]) == MAX_ACTIONS
    with pytest.raises(VerbError, match="limit of 50"):
        Response([Say("x")] * (MAX_ACTIONS + 1)).to_json()


def test_xml_round_trip_of_every_verb() -> None:
    verbs: list[Any] = [
        Say("a & b < c", loop=0),
        Play("https://cdn.example/a.wav?x=1&y=2"),
        Stream(BRIDGE, output_sampling_rate=8000, bidirectional_sampling_rate=8000),
        Dial(sip="sip:rep@pbx.example", timeout=30),
        Redirect("https://hooks.example/next?a=1&b=2", method="GET"),
        Reject("rejected"),
        Hangup(),
    ]
    root = parse(Response(verbs).to_xml())
    assert root[0].text == "a & b < c"
    assert root[0].attrib == {"loop": "0"}
    assert root[1].attrib["url"] == "https://cdn.example/a.wav?x=1&y=2"
    assert root[2].attrib["url"] == BRIDGE
    assert root[2].attrib["outputSamplingRate"] == "8000"
    assert [(c.tag, c.text) for c in root[3]] == [("Sip", "sip:rep@pbx.example")]
    assert root[4].text == "https://hooks.example/next?a=1&b=2"
    assert [el.tag for el in root] == ["Say", "Play", "Stream", "Dial", "Redirect", "Reject", "Hangup"]


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Stream("https://bridge.example/media"), "wss"),
        (lambda: Stream("wss:///nohost"), "wss"),
        (lambda: Stream(BRIDGE, output_sampling_rate=44100), "8000 or 16000"),  # type: ignore[arg-type]
        (lambda: Stream(BRIDGE, bidirectional_sampling_rate=100), "bidirectional"),
        (lambda: Stream(BRIDGE, track="left"), "track"),  # type: ignore[arg-type]
        (lambda: Stream(BRIDGE, header_metadata={"nested": {"a": 1}}), "header_metadata"),  # type: ignore[dict-item]
        (lambda: Stream(BRIDGE, header_metadata={"x": float("nan")}), "finite"),
        (lambda: Stream(BRIDGE, status_callback="javascript:alert(1)"), "status_callback"),
        (lambda: Dial(), "exactly one"),
        (lambda: Dial(["+254733000003"], sip="sip:a@b"), "exactly one"),
        (lambda: Dial([" "]), "empty"),
        (lambda: Dial(["+254733000003"], timeout=0), "timeout"),
        (lambda: Play("file:///etc/passwd"), "Play.url"),
        (lambda: Redirect("/relative"), "Redirect.url"),
        (lambda: Redirect("https://h.example/", method="PUT"), "method"),  # type: ignore[arg-type]
        (lambda: Reject("nope"), "reason"),  # type: ignore[arg-type]
        (lambda: Say("x", loop=-1), "loop"),
    ],
)
def test_invalid_verbs_are_refused(build: Any, message: str) -> None:
    with pytest.raises(VerbError, match=message):
        build()


def test_dial_accepts_a_single_string() -> None:
    assert Dial("+254733000003").to_action() == {"dial": {"number": "+254733000003"}}  # type: ignore[arg-type]
