"""The demo's HTML report: funnel, outcomes and a per-call timeline with answers and audio.

One self-contained page (inline CSS, no scripts, no network) rendered from the report JSON, so
it opens from disk anywhere. Every value from a lead or a transcript is escaped.
"""

from __future__ import annotations

from collections import Counter
from html import escape
from typing import Any

_OUTCOME_COLOURS = {
    "hot_transferred": "#1a7f37",
    "cold_closed": "#57606a",
    "no_answer": "#9a6700",
    "busy": "#bc4c00",
    "voicemail": "#8250df",
    "callback_requested": "#0969da",
    "opted_out": "#cf222e",
    "rejected": "#a40e26",
    "failed": "#82071e",
    "deferred": "#6e7781",
}

_CSS = """
body{font:15px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2328;padding:0 1rem}
h1{margin-bottom:.2rem}.sub{color:#57606a;margin-top:0}
.cards{display:flex;gap:1rem;flex-wrap:wrap;margin:1.5rem 0}
.card{border:1px solid #d0d7de;border-radius:8px;padding: .8rem 1rem;min-width:140px}
.card b{display:block;font-size:1.6rem}
.bar{display:flex;align-items:center;gap:.6rem;margin:.25rem 0}
.bar span.l{width:190px}.bar span.f{height:18px;border-radius:3px}
table{border-collapse:collapse;width:100%;margin:.5rem 0}
td,th{border-bottom:1px solid #d0d7de;padding:.35rem .5rem;text-align:left;vertical-align:top}
.call{border:1px solid #d0d7de;border-radius:8px;padding:1rem;margin:1rem 0}
.pill{color:#fff;border-radius:10px;padding:.1rem .6rem;font-size:.85rem}
.tl{font-family:ui-monospace,Menlo,monospace;font-size:.85rem;color:#24292f}
.tl .t{color:#6e7781;display:inline-block;width:5.5rem}
audio{width:100%;margin:.5rem 0}
"""


def _pill(outcome: str) -> str:
    colour = _OUTCOME_COLOURS.get(outcome, "#57606a")
    return f'<span class="pill" style="background:{colour}">{escape(outcome)}</span>'


def _funnel(leads: list[dict[str, Any]], totals: dict[str, Any]) -> str:
    dialed = totals.get("dialed", sum(1 for lead in leads if lead.get("attempts", 0) > 0))
    answered = totals.get("answered", 0)
    hot = totals.get("hot", 0)
    transferred = totals.get("transferred", 0)
    steps = [("Leads", len(leads)), ("Dialed", dialed), ("Answered", answered), ("Hot", hot)]
    steps.append(("Transferred", transferred))
    top = max(1, len(leads))
    rows = "".join(
        f'<div class="bar"><span class="l">{escape(name)} — {count}</span>'
        f'<span class="f" style="width:{int(600 * count / top)}px;background:#0969da"></span></div>'
        for name, count in steps
    )
    return f"<h2>Funnel</h2>{rows}"


def _outcomes(leads: list[dict[str, Any]]) -> str:
    counts = Counter(str(lead.get("outcome")) for lead in leads)
    top = max(1, max(counts.values(), default=1))
    rows = "".join(
        f'<div class="bar"><span class="l">{_pill(outcome)} {count}</span>'
        f'<span class="f" style="width:{int(400 * count / top)}px;'
        f'background:{_OUTCOME_COLOURS.get(outcome, "#57606a")}"></span></div>'
        for outcome, count in counts.most_common()
    )
    return f"<h2>Outcomes</h2>{rows}"


def _call(lead: dict[str, Any]) -> str:
    answers = lead.get("answers") or {}
    answer_rows = (
        "".join(f"<tr><td>{escape(str(q))}</td><td>{escape(str(v))}</td></tr>" for q, v in answers.items())
        or '<tr><td colspan="2">no answers</td></tr>'
    )
    timeline = "".join(
        f'<div><span class="t">{float(item.get("t", 0)):7.2f}s</span>'
        f"{escape(str(item.get('who', '')))}: {escape(str(item.get('text', item.get('event', ''))))}</div>"
        for item in lead.get("timeline") or []
    )
    audio = (
        f'<audio controls preload="none" src="{escape(str(lead["recording"]), quote=True)}"></audio>'
        if lead.get("recording")
        else ""
    )
    score = lead.get("score")
    facts = [
        f"attempts {lead.get('attempts', 0)}",
        f"billed {lead.get('billed_seconds', 0)} s",
        f"KES {float(lead.get('cost_kes') or 0):.2f}",
    ]
    if lead.get("time_to_first_word_ms") is not None:
        facts.append(f"first word {float(lead['time_to_first_word_ms']):.0f} ms")
    if score is not None:
        facts.append(f"score {escape(str(score))}")
    reason = f"<p>{escape(str(lead['reason']))}</p>" if lead.get("reason") else ""
    return (
        f'<div class="call"><h3>{escape(str(lead.get("lead_id")))} {_pill(str(lead.get("outcome")))}</h3>'
        f"<p>{escape(str(lead.get('name', '')))} · {escape(str(lead.get('company', '')))} · "
        f"{escape(str(lead.get('phone', '')))} · {' · '.join(facts)}</p>{reason}{audio}"
        f"<table><tr><th>question</th><th>answer</th></tr>{answer_rows}</table>"
        f'<div class="tl">{timeline}</div></div>'
    )


def render_html(report: dict[str, Any], title: str = "leadqual — campaign results") -> str:
    leads = list(report.get("leads") or [])
    totals = dict(report.get("totals") or {})
    cards = "".join(
        f'<div class="card">{escape(label)}<b>{escape(str(value))}</b></div>'
        for label, value in (
            ("leads", len(leads)),
            ("hot", totals.get("hot", 0)),
            ("billed seconds", totals.get("billed_seconds", 0)),
            ("cost KES", f"{float(totals.get('cost_kes', 0)):.2f}"),
            ("KES per qualified lead", totals.get("cost_per_qualified_lead_kes", "–")),
        )
    )
    calls = "".join(_call(lead) for lead in leads)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{_CSS}</style></head><body><h1>{escape(title)}</h1>"
        f'<p class="sub">{escape(str(report.get("campaign", "")))} · {escape(str(report.get("generated_at", "")))}</p>'
        f'<div class="cards">{cards}</div>{_funnel(leads, totals)}{_outcomes(leads)}<h2>Calls</h2>{calls}'
        "</body></html>"
    )
