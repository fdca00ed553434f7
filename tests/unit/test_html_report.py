"""The demo's HTML report shows the funnel, outcomes and each call, and escapes what leads say."""

from __future__ import annotations

from html.parser import HTMLParser

from local.html_report import render_html


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.audio_src: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "audio":
            self.audio_src.append(dict(attrs)["src"] or "")


def _report() -> dict[str, object]:
    return {
        "campaign": "example",
        "leads": [
            {
                "lead_id": "L1",
                "name": "Jane <script>alert(1)</script>",
                "phone": "+254712000001",
                "outcome": "hot_transferred",
                "answers": {"seats": 40, "decision_maker": True},
                "attempts": 1,
                "billed_seconds": 41,
                "cost_kes": 2.05,
                "time_to_first_word_ms": 12.6,
                "recording": "calls/L1.wav",
                "timeline": [{"t": 0.1, "who": "agent", "text": "Hi </div><b>x</b>"}],
            },
            {"lead_id": "L2", "outcome": "no_answer", "answers": {}, "attempts": 3},
        ],
        "totals": {
            "dialed": 2,
            "answered": 1,
            "hot": 1,
            "transferred": 1,
            "billed_seconds": 41,
            "cost_kes": 2.05,
        },
    }


def test_report_shows_funnel_outcomes_and_calls_with_audio() -> None:
    page = render_html(_report())
    for text in ("Funnel", "Outcomes", "hot_transferred", "no_answer", "Transferred — 1", "first word 13 ms"):
        assert text in page
    parser = _Collect()
    parser.feed(page)
    assert parser.audio_src == ["calls/L1.wav"]


def test_lead_and_transcript_text_cannot_inject_markup() -> None:
    page = render_html(_report())
    parser = _Collect()
    parser.feed(page)
    assert "script" not in parser.tags
    assert parser.tags.count("b") == 5  # the five summary cards only; none from the transcript
    assert "&lt;script&gt;" in page
