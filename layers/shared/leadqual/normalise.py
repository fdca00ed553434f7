"""Turn what a person said (or what a model passed to a tool) into a typed answer.

Conventions, chosen so that scoring stays predictable:
- yes/no: None when the words are unclear, hedged ("not sure", "maybe") or contradict each other
  ("yes and no"). A correction wins: in "no, actually yes" the part after "actually" decides.
- numbers: the point value of what was said. Approximations ("about 40", "give or take forty",
  "40 or so", "40ish") → 40; ranges ("between ten and twenty", "10-15", "40 or 50") → the
  midpoint, rounded half up; strict bounds → the nearest whole number inside them ("more than
  9" / "over 9" → 10, "under 10" / "fewer than 10" / "almost 10" → 9); inclusive bounds ("at
  least 10", "up to 10", "10 or more", "10+") → 10. "just me" → 1, "none" / "no one" → 0,
  "a couple" → 2, "a few" → 3, "a dozen" → 12, "half a dozen" → 6. The first number wins.
- timelines: whole calendar months from `now` to the month the words point at (0 = this month).
  Durations land on a date first: "in two weeks" is 0 early in a month and 1 late in it;
  "within three months" / "in 3 months" → 3. Periods: "this X" means by its end ("this quarter"
  → the quarter's last month, "this year" / "end of the year" → December), "next X" its start
  ("next quarter" / "early next quarter" → the first month of next quarter, "next year" →
  January); "mid" → its middle month, "late" / "end of" → its last. "now", "ASAP", "this month"
  → 0. "No plans", "not sure", "never", "someday" → NO_TIMELINE (99), far enough away that
  "within N months" rules fail and the lead is not called hot on a guess. None means the words
  could not be understood at all.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from leadqual.campaign import AnswerType, Question
from leadqual.errors import AnswerError
from leadqual.models import AnswerValue

NO_TIMELINE = 99  # months: "no plans" / "not sure"; larger than any sensible "within N months" rule
MAX_TEXT_ANSWER = 1000

# --- text clean-up ---------------------------------------------------------------------------

_CONTRACTIONS = [
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\bcannot\b", "can not"),
    (r"\bain't\b", "am not"),
    (r"\bi'm\b", "i am"),
    (r"\b(that|it|what|there|he|she|who)'s\b", r"\1 is"),
    (r"n't\b", " not"),
    (r"'re\b", " are"),
    (r"'ve\b", " have"),
    (r"'ll\b", " will"),
    (r"'d\b", " would"),
    # Speech-to-text often drops apostrophes.
    (r"\bim\b", "i am"),
    (r"\bthats\b", "that is"),
    (r"\bits me\b", "it is me"),
    (r"\b(do|does|did|is|are|was|were|have|has|could|would|should)nt\b", r"\1 not"),
    (r"\bcant\b", "can not"),
    (r"\bdunno\b", "do not know"),
]
_CONTRACTION_RES = [(re.compile(p), r) for p, r in _CONTRACTIONS]


_ISH = re.compile(
    r"\b(\d+|ten|eleven|twelve|fifteen|twenty|thirty|forty|fifty|sixty|seventy|eighty|ninety|hundred)-?ish\b"
)


def _clean(text: str) -> str:
    s = text.lower().replace("’", "'").replace("‘", "'").replace("`", "'")
    for pattern, repl in _CONTRACTION_RES:
        s = pattern.sub(repl, s)
    s = re.sub(r"(\d),(\d{3})\b", r"\1\2", s)  # 1,200 → 1200 (twice covers 1,200,000)
    s = re.sub(r"(\d),(\d{3})\b", r"\1\2", s)
    s = re.sub(r"(\d)\s*(?:-|–|—)\s*(\d)", r"\1 to \2", s)  # 10-15 → 10 to 15
    s = re.sub(_ISH, r"\1", s)  # 40ish, fortyish → 40, forty
    s = re.sub(r"[^a-z0-9.,!?;:'+\s]", " ", s)
    s = re.sub(r"(?<![a-z0-9])'|'(?![a-z])", " ", s)  # quotes, not apostrophes
    return re.sub(r"\s+", " ", s).strip()


# --- yes / no --------------------------------------------------------------------------------

_CORRECTION = re.compile(r"\b(?:actually|i mean|sorry|wait|on second thought|rather)\b")
_UNSURE = re.compile(
    r"\b(?:not sure|unsure|not certain|do not know|no idea|maybe|perhaps|possibly|it depends|"
    r"depends|hard to say|kind of|sort of|might|not really sure)\b"
)
# Phrases with a negative word that mean yes; matched (and blanked) before the negatives.
_POS_IDIOMS = re.compile(r"\b(?:no problem|no worries|not a problem|why not|not bad|of course)\b")
# "not" negates the rest of its clause ("not a good time", "I'm not the one who decides").
_NEG = re.compile(
    r"\b(?:(?:(?:i|we|it|that|this|he|she|they|you)\s+(?:am|are|is|do|does|did|was|were|have|has|will|"
    r"would|can|could|should)\s+)?not\b[^.,!?;]*|(?:no|nope|nah|never|negative|false|hapana|"
    r"wrong (?:person|number)|bad time|busy|(?:call|talk|speak) (?:to )?(?:me |us )?(?:back|later)|"
    r"another time)\b)"
)
_END = r"(?=\s*(?:[.,!?;:]|$|yes|yeah|indeed|the\b|in charge|responsible|correct|sure|that is))"
_POS = re.compile(
    r"\b(?:yes|yeah|yea|yah|ya|yep|yup|aye|sure|surely|correct|absolutely|definitely|certainly|"
    r"indeed|affirmative|okay|ok|alright|all right|exactly|true|fine|speaking|ndio|ndiyo|sawa|"
    r"uh huh|mhm|mm hmm|go ahead|go on|please do|sounds good|good time|"
    r"(?:that|it) is (?:right|correct|true|me|him|her|us)|this is (?:me|him|her|he|she)|"
    rf"(?:i|we) (?:am|are|do|does|have|will|can|would){_END}|"
    r"i am the|i make|i decide|i handle|i own|i sign)\b"
)
_WHOLE_RIGHT = re.compile(r"^right[.!]*$")


def _yes_no_segment(segment: str) -> bool | str | None:
    """True/False, "unsure", "conflict", or None when the segment has no signal at all."""
    if _UNSURE.search(segment):
        return "unsure"
    positive = bool(_POS_IDIOMS.search(segment))
    rest = _POS_IDIOMS.sub(" ~ ", segment)  # a placeholder, so "I am busy" leaves no bare "I am"
    negative = bool(_NEG.search(rest))
    rest = _NEG.sub(" ~ ", rest)
    positive = positive or bool(_POS.search(rest)) or bool(_WHOLE_RIGHT.match(segment.strip()))
    if positive and negative:
        return "conflict"
    if positive or negative:
        return positive
    return None


def parse_yes_no(text: str) -> bool | None:
    """ "yeah that's me", "I am", "sure", "correct", "yes I do" → True; "no", "nope", "not really",
    "that's not me", "no, I'm not", "I'm busy" → False; None when unclear."""
    cleaned = _clean(text)
    if not cleaned:
        return None
    for segment in reversed(_CORRECTION.split(cleaned)):
        verdict = _yes_no_segment(segment)
        if verdict is None:
            continue
        return verdict if isinstance(verdict, bool) else None
    return None


# --- numbers ---------------------------------------------------------------------------------

_UNITS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
        ]
    )
}
_UNITS["nil"] = 0
_TENS = {
    w: 10 * (i + 2)
    for i, w in enumerate(["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"])
}
_TENS["fourty"] = 40  # a common misspelling, also from speech-to-text
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000, "k": 1000}
_GROUPS = {"couple": 2, "few": 3, "dozen": 12}
_DIGITS = re.compile(r"^\d+(?:\.\d+)?k?$")


@dataclass(frozen=True, slots=True)
class _Span:
    value: float
    start: int  # token index of the first word
    end: int  # token index after the last word


def _tokens(cleaned: str) -> list[str]:
    spaced = re.sub(r"(\d)\+", r"\1 plus", cleaned)
    spaced = re.sub(r"[.,!?;:](?!\d)", " ", spaced)
    return [t for t in spaced.split() if t]


def _is_number_word(tok: str) -> bool:
    return tok in _UNITS or tok in _TENS or tok in _SCALES or tok in _GROUPS or bool(_DIGITS.match(tok))


def _read_simple(tokens: list[str], i: int) -> tuple[float, int, bool] | None:
    """One number phrase without "and": (value, next index, had a scale word ≥ 100)."""
    total = 0.0
    current: float | None = None
    last = ""  # kind of the previous token
    scaled = False
    j = i
    n = len(tokens)
    while j < n:
        tok = tokens[j]
        nxt = tokens[j + 1] if j + 1 < n else ""
        if tok in ("a", "an") and last == "" and (nxt in _SCALES or nxt in _GROUPS):
            current, last = 1.0, "a"
        elif tok == "half" and last == "" and nxt in ("a", "an"):
            current, last = 0.5, "half"
            j += 1  # skip the article: "half a dozen"
        elif _DIGITS.match(tok) and last == "":
            value = float(tok.rstrip("k"))
            current = value * 1000 if tok.endswith("k") else value
            last = "digits"
        elif tok in _UNITS and (
            last in ("", "hundred", "scale") or (last == "tens" and 0 < _UNITS[tok] < 10)
        ):
            current = (current or 0) + _UNITS[tok]
            last = "unit"
        elif tok in _TENS and last in ("", "hundred", "scale"):
            current = (current or 0) + _TENS[tok]
            last = "tens"
        elif tok == "hundred" and last in ("", "a", "unit", "tens", "digits", "group"):
            current = (current if current is not None else 1) * 100
            last, scaled = "hundred", True
        elif (
            tok in _SCALES
            and tok != "hundred"
            and last in ("", "a", "unit", "tens", "digits", "hundred", "group")
        ):
            total += (current if current is not None else 1) * _SCALES[tok]
            current, last, scaled = None, "scale", True
        elif tok in _GROUPS and last in ("", "a", "unit", "tens", "digits", "half"):
            current = (current if current is not None else 1) * _GROUPS[tok]
            last = "group"
            if nxt == "of" and j + 2 < n and tokens[j + 2] in _SCALES:
                j += 1  # "a couple of hundred"
        else:
            break
        j += 1
    if last in ("", "a", "half"):
        return None
    return total + (current or 0), j, scaled


def _read_number(tokens: list[str], i: int) -> tuple[float, int] | None:
    first = _read_simple(tokens, i)
    if first is None:
        return None
    value, j, scaled = first
    # "a hundred and fifty": "and" joins a smaller part to a scaled number; "ten and twenty" is two numbers.
    if scaled and j + 1 < len(tokens) and tokens[j] == "and":
        tail = _read_simple(tokens, j + 1)
        if tail is not None and tail[0] < 100 and not tail[2]:
            return value + tail[0], tail[1]
    return value, j


def _number_spans(tokens: list[str]) -> list[_Span]:
    spans: list[_Span] = []
    i = 0
    while i < len(tokens):
        if tokens[i] in ("no", "none", "nobody", "noone") and (
            tokens[i] != "no" or (i + 1 < len(tokens) and tokens[i + 1] in ("one", "body"))
        ):
            end = i + 2 if tokens[i] == "no" else i + 1
            spans.append(_Span(0, i, end))
            i = end
            continue
        if tokens[i] in ("just", "only", "me") and _is_just_me(tokens, i):
            end = i + 2 if tokens[i] in ("just", "only") else i + 1
            spans.append(_Span(1, i, end))
            i = end
            continue
        got = _read_number(tokens, i) if _starts_number(tokens, i) else None
        if got is not None:
            spans.append(_Span(got[0], i, got[1]))
            i = got[1]
        else:
            i += 1
    return spans


def _starts_number(tokens: list[str], i: int) -> bool:
    tok = tokens[i]
    if tok in ("a", "an", "half"):
        return i + 1 < len(tokens) and (
            tokens[i + 1] in _SCALES or tokens[i + 1] in _GROUPS or tokens[i + 1] == "a"
        )
    return _is_number_word(tok)


def _is_just_me(tokens: list[str], i: int) -> bool:
    if tokens[i] in ("just", "only"):
        return i + 1 < len(tokens) and tokens[i + 1] in ("me", "myself")
    return tokens[i] == "me" and i + 1 < len(tokens) and tokens[i + 1] == "alone"


_ABOVE = [
    ("more", "than"),
    ("over",),
    ("above",),
    ("upwards", "of"),
    ("in", "excess", "of"),
    ("just", "over"),
]
_BELOW = [
    ("less", "than"),
    ("fewer", "than"),
    ("under",),
    ("below",),
    ("almost",),
    ("nearly",),
    ("just", "under"),
    ("not", "quite"),
]
_INCLUSIVE = [("no", "more", "than"), ("no", "less", "than"), ("at", "least"), ("at", "most"), ("up", "to")]


def _preceded_by(tokens: list[str], start: int, phrases: Sequence[tuple[str, ...]]) -> bool:
    return any(tuple(tokens[max(0, start - len(p)) : start]) == p for p in phrases)


def _is_range(tokens: list[str], first: _Span, second: _Span) -> bool:
    """ "10 to 15", "40 or 50", "between ten and twenty" (but not "ten and twenty" alone)."""
    between = tokens[first.end : second.start]
    if between == ["and"]:
        return _preceded_by(tokens, first.start, [("between",)])
    return between in (["to"], ["or"]) and second.value > first.value


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)


def _point_value(tokens: list[str], spans: list[_Span]) -> float | None:
    if not spans:
        return None
    first = spans[0]
    if len(spans) > 1 and _is_range(tokens, first, spans[1]):
        return (first.value + spans[1].value) / 2
    if _preceded_by(tokens, first.start, _INCLUSIVE):
        return first.value
    if _preceded_by(tokens, first.start, _ABOVE):
        return math.floor(first.value) + 1
    if _preceded_by(tokens, first.start, _BELOW):
        return max(0, math.ceil(first.value) - 1)
    return first.value


def parse_number(text: str) -> int | None:
    """The number a person meant, as a whole number (rules in the module docstring); None if none."""
    tokens = _tokens(_clean(text))
    value = _point_value(tokens, _number_spans(tokens))
    return None if value is None else _round_half_up(value)


# --- timelines -------------------------------------------------------------------------------

_MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for name in names
}
_NOW = re.compile(
    r"\b(?:now|right now|asap|a s a p|as soon as possible|immediately|right away|straight away|today|"
    r"tomorrow|this week|urgently|urgent|yesterday)\b"
)
_NO_PLANS = re.compile(
    r"\b(?:no plans?|not planning|no timeline|no time ?frame|not sure|unsure|do not know|no idea|"
    r"never|someday|some day|eventually|one day|not any ?time soon|undecided|just looking|"
    r"just browsing|no rush|not decided|have not decided|not yet decided|hard to say|no clue)\b"
)
_UNIT_DAYS = {"day": 1, "days": 1, "week": 7, "weeks": 7, "fortnight": 14, "fortnights": 14}
_UNIT_MONTHS = {"month": 1, "months": 1, "quarter": 3, "quarters": 3, "year": 12, "years": 12}
_NEGATED = re.compile(r"\b(?:not|no earlier than|not before|not until|no sooner than|will not be)\b")


def _month_index(d: datetime) -> int:
    return d.year * 12 + d.month - 1


def _months_until(now: datetime, year: int, month: int) -> int:
    return max(0, year * 12 + month - 1 - _month_index(now))


def _position(tokens: list[str], word_index: int) -> str:
    """Which part of a period the words point at: early, mid or late (default given by caller)."""
    window = tokens[max(0, word_index - 4) : word_index]
    if any(w in ("end", "late", "later") for w in window):
        return "late"
    if any(w in ("mid", "middle") for w in window):
        return "mid"
    if any(w in ("early", "beginning", "start", "begin", "starting") for w in window):
        return "early"
    return ""


def _period_target(now: datetime, tokens: list[str]) -> int | None:
    """Months to a named period: this/next month, quarter, year; Q1–Q4; a month name."""
    text = " ".join(tokens)
    for idx, tok in enumerate(tokens):
        nxt = tokens[idx + 1] if idx + 1 < len(tokens) else ""
        if tok in ("this", "the", "next", "coming", "current", "following") and nxt in (
            "month",
            "quarter",
            "year",
        ):
            ahead = tok in ("next", "coming", "following")
            pos = _position(tokens, idx)
            # Plain "this X" means by its end; plain "next X" its start.
            offsets = {"month": (0, 0, 0), "quarter": (0, 1, 2), "year": (0, 5, 11)}[nxt]
            offset = offsets[{"early": 0, "mid": 1, "late": 2}.get(pos, 0 if ahead else 2)]
            if nxt == "month":
                return 1 if ahead else 0
            if nxt == "quarter":
                start = (now.month - 1) // 3 * 3 + 1 + (3 if ahead else 0)  # first month of the quarter
            else:
                start = 13 if ahead else 1
            return max(0, start + offset - now.month)
    quarter = re.search(r"\bq([1-4])\b|\b(first|second|third|fourth|last) quarter\b", text)
    if quarter:
        q = (
            int(quarter.group(1))
            if quarter.group(1)
            else ["first", "second", "third", "fourth", "last"].index(quarter.group(2)) + 1
        )
        q = min(q, 4)
        start_month = (q - 1) * 3 + 1
        year = now.year + (1 if "next year" in text or start_month + 2 < now.month else 0)
        pos = _position(tokens, tokens.index(quarter.group(0).split()[0]))
        return _months_until(now, year, start_month + {"early": 0, "mid": 1, "late": 2}.get(pos, 0))
    for tok in tokens:
        if tok in _MONTHS and not (tok == "may" and _may_is_verb(tokens)):
            month = _MONTHS[tok]
            year = now.year + (1 if month < now.month or "next year" in text else 0)
            return _months_until(now, year, month)
    return None


def _may_is_verb(tokens: list[str]) -> bool:
    i = tokens.index("may")
    prev = tokens[i - 1] if i else ""
    return prev not in ("in", "by", "early", "mid", "late", "end", "of", "before", "until", "around")


def _days_to_months(now: datetime, days: float) -> float:
    return float(_month_index(now + timedelta(days=days)) - _month_index(now))


def _duration_target(now: datetime, tokens: list[str]) -> float | None:
    """Months to "in two weeks", "within three months", "3 to 6 months", "a year and a half"."""
    text = " ".join(tokens)
    within = re.search(r"\b(?:within|over|during) the (?:next|coming) (month|quarter|year)\b", text)
    if within:
        return float(_UNIT_MONTHS[within.group(1)])
    if re.search(r"\b(?:next|coming) week\b", text):
        return _days_to_months(now, 7)
    spans = _number_spans(tokens)
    for k, span in enumerate(spans):
        last = span
        value = _point_value(tokens, [span])
        if k + 1 < len(spans) and _is_range(tokens, span, spans[k + 1]):
            last = spans[k + 1]  # a range's unit follows its second number
            value = (span.value + last.value) / 2
        unit_at = last.end + (1 if tokens[last.end : last.end + 1] == ["of"] else 0)  # "a couple of weeks"
        unit = tokens[unit_at] if unit_at < len(tokens) else ""
        if value is None:
            continue
        if unit in _UNIT_DAYS:
            return _days_to_months(now, value * _UNIT_DAYS[unit])
        if unit in _UNIT_MONTHS:
            half = tokens[unit_at + 1 : unit_at + 4] == ["and", "a", "half"]
            return value * _UNIT_MONTHS[unit] + (_UNIT_MONTHS[unit] / 2 if half else 0)
    for idx, tok in enumerate(tokens):
        article = idx > 0 and tokens[idx - 1] in ("a", "an", "one")
        if tok in _UNIT_MONTHS and article:
            half = tokens[idx + 1 : idx + 4] == ["and", "a", "half"]
            return _UNIT_MONTHS[tok] * (1.5 if half else 1.0)
        if tok == "half" and tokens[idx + 1 : idx + 3] in (["a", "year"], ["a", "quarter"]):
            return _UNIT_MONTHS[tokens[idx + 2]] / 2
        if tok in _UNIT_DAYS and article:
            return _days_to_months(now, _UNIT_DAYS[tok])
    return None


def parse_timeline_months(text: str, now: datetime) -> int | None:
    """Whole months from `now` (rules in the module docstring); None when not understood."""
    cleaned = _clean(text)
    tokens = _tokens(cleaned)
    if not tokens:
        return None
    no_plans = bool(_NO_PLANS.search(cleaned))
    negated = bool(_NEGATED.search(_NO_PLANS.sub(" ", cleaned)))  # "not sure" does not negate a date
    months = _duration_target(now, tokens)
    if months is not None:
        if negated:
            return math.floor(months) + 1  # "not for another six months" → after six
        return max(0, _round_half_up(months))
    period = _period_target(now, tokens)
    if period is not None:
        if (negated or no_plans) and ("this" in tokens or "current" in tokens):
            return _not_this(now, tokens)  # "not this quarter", "no plans this year"
        return period
    if no_plans:
        return NO_TIMELINE
    if _NOW.search(cleaned):
        return None if negated else 0  # "not now" says when not, not when
    return None


def _not_this(now: datetime, tokens: list[str]) -> int:
    if "month" in tokens:
        return 1
    if "quarter" in tokens:
        return 3 - (now.month - 1) % 3
    return 12 - now.month + 1


# --- choices ---------------------------------------------------------------------------------

_ORDINALS = {
    "first": 0,
    "second": 1,
    "third": 2,
    "fourth": 3,
    "fifth": 4,
    "1st": 0,
    "2nd": 1,
    "3rd": 2,
    "4th": 3,
}


def parse_choice(text: str, choices: Sequence[str]) -> str | None:
    """The one choice the words name: exact (any case), mentioned as a whole phrase, "the second
    one" / "option 2" / "the last one", or a close spelling. None when none or several match."""
    if not choices:
        return None
    cleaned = _clean(text)
    by_clean = {_clean(c): c for c in choices}
    if cleaned in by_clean:
        return by_clean[cleaned]
    mentioned = {
        c
        for key, c in by_clean.items()
        if key and re.search(rf"(?<![a-z0-9]){re.escape(key)}(?![a-z0-9])", cleaned)
    }
    if len(mentioned) == 1:
        return mentioned.pop()
    if len(mentioned) > 1:
        return None
    tokens = _tokens(cleaned)
    for idx, tok in enumerate(tokens):
        if tok in _ORDINALS and _ORDINALS[tok] < len(choices):
            return choices[_ORDINALS[tok]]
        if tok == "last" and idx + 1 < len(tokens) and tokens[idx + 1] in ("one", "option"):
            return choices[-1]
        if tok in ("option", "number") and idx + 1 < len(tokens):
            n = parse_number(tokens[idx + 1])
            if n is not None and 1 <= n <= len(choices):
                return choices[n - 1]
    close = difflib.get_close_matches(cleaned, list(by_clean), n=2, cutoff=0.8)
    if len(close) == 1:
        return by_clean[close[0]]
    return None


# --- per question ----------------------------------------------------------------------------


def _quote(raw: object) -> str:
    text = str(raw)
    return repr(text if len(text) <= 80 else text[:77] + "...")


def normalise_answer(question: Question, raw: object, *, now: datetime | None = None) -> AnswerValue:
    """A typed value for `question` from a typed value (True, 40, "40") or a phrase; AnswerError
    with a message the model (or a person) can act on when it cannot. `now` anchors timelines."""

    def fail(why: str) -> AnswerError:
        return AnswerError(f"{question.id}: {why}", question_id=question.id)

    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise fail("no answer given")
    kind = question.type
    if kind is AnswerType.YES_NO:
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, int | float) and raw in (0, 1):
            return bool(raw)
        if isinstance(raw, str):
            yn = parse_yes_no(raw)
            if yn is not None:
                return yn
        raise fail(f"expected yes or no, could not tell from {_quote(raw)}")
    if kind is AnswerType.NUMBER:
        if isinstance(raw, bool):
            raise fail("expected a number, got yes/no")
        number: float | None
        if isinstance(raw, int | float):
            number = raw
        elif isinstance(raw, str):
            number = parse_number(raw)
        else:
            number = None
        if number is None or (isinstance(number, float) and not math.isfinite(number)):
            raise fail(f"expected a number, found none in {_quote(raw)}")
        if number < 0:
            raise fail("expected a number of zero or more")
        return int(number) if float(number).is_integer() else float(number)
    if kind is AnswerType.CHOICE:
        picked = parse_choice(str(raw), question.choices)
        if picked is None:
            raise fail(f"expected one of {', '.join(question.choices)}; got {_quote(raw)}")
        return picked
    if kind is AnswerType.TIMELINE:
        if isinstance(raw, bool):
            raise fail("expected a timeline, got yes/no")
        if isinstance(raw, int | float):
            if raw < 0 or not math.isfinite(raw):
                raise fail("expected months from now, zero or more")
            return _round_half_up(raw)
        if isinstance(raw, str):
            if re.fullmatch(r"\s*\d+(?:\.\d+)?\s*", raw):
                return _round_half_up(float(raw))  # a bare number is months, as the tool schema says
            months = parse_timeline_months(raw, now or datetime.now(UTC))
            if months is not None:
                return months
        raise fail(f"expected when (e.g. 'next month', 'in 3 months'), could not tell from {_quote(raw)}")
    text = str(raw).strip()
    return text[:MAX_TEXT_ANSWER]
