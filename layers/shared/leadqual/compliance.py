"""Who may be called, and when: phone normalisation, time zones, opt-in, do-not-call, attempt cap
and calling windows in the lead's local time.

Pure code: the caller supplies `now`, whether the number is on the do-not-call list and how many
attempts were made, so the rules are testable without a clock or a table. Reasons never contain
the phone number, so they can be stored and logged as they are.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import NumberParseException
from phonenumbers import timezone as pn_timezone

from leadqual.campaign import Campaign, Window
from leadqual.errors import ComplianceError, InvalidLead
from leadqual.models import Lead

SEARCH_DAYS = 8  # a weekly window always recurs within 8 days; beyond that there is none
_UTC = ZoneInfo("UTC")
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_PARSE_REASONS = {
    NumberParseException.INVALID_COUNTRY_CODE: "unknown country code",
    NumberParseException.NOT_A_NUMBER: "not a number",
    NumberParseException.TOO_SHORT_AFTER_IDD: "too short",
    NumberParseException.TOO_SHORT_NSN: "too short",
    NumberParseException.TOO_LONG: "too long",
}
_LENGTH_REASONS = {
    phonenumbers.ValidationResult.TOO_SHORT: "too short",
    phonenumbers.ValidationResult.TOO_LONG: "too long",
    phonenumbers.ValidationResult.INVALID_LENGTH: "wrong length",
    phonenumbers.ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
}


# --- phone numbers ---------------------------------------------------------------------------


def _parse(raw: str, default_region: str) -> phonenumbers.PhoneNumber:
    try:
        number = phonenumbers.parse(raw, default_region)
    except NumberParseException as exc:
        raise InvalidLead(_PARSE_REASONS.get(exc.error_type, "not a number"), field="phone") from exc
    if not phonenumbers.is_valid_number(number) and raw.startswith("00"):
        # "00" is the usual international prefix, but not Kenya's (000): "00254…" means "+254…".
        try:
            retry = phonenumbers.parse("+" + raw[2:], default_region)
        except NumberParseException:
            return number
        if phonenumbers.is_valid_number(retry):
            return retry
    return number


def normalise_phone(raw: str | int, default_region: str = "KE") -> str:
    """Any common way of writing a number (`0712 345 678`, `254712345678`, `+254-712-345-678`,
    `00254…`, other countries with their `+` code) → E.164; InvalidLead with a specific reason."""
    text = str(raw).strip()
    if not text:
        raise InvalidLead("no phone number", field="phone")
    number = _parse(text, default_region)
    if number.extension:
        raise InvalidLead("numbers with an extension cannot be dialled", field="phone")
    if not phonenumbers.is_valid_number(number):
        region = phonenumbers.region_code_for_country_code(number.country_code or 0)
        if region == phonenumbers.UNKNOWN_REGION:
            raise InvalidLead("unknown country code", field="phone")
        detail = _LENGTH_REASONS.get(phonenumbers.is_possible_number_with_reason(number))
        reason = f"not a valid number for {region}"
        raise InvalidLead(f"{reason}: {detail}" if detail else reason, field="phone")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def country_of(e164: str) -> str:
    """ISO country code of a number (`+254…` → `KE`, `+1 212…` → `US`)."""
    number = _parse(e164, "ZZ") if e164.startswith("+") else _parse(e164, "KE")
    region = phonenumbers.region_code_for_number(number)
    if not region or region == phonenumbers.UNKNOWN_REGION:
        raise InvalidLead("cannot tell the number's country", field="phone")
    return str(region)


# --- time zones ------------------------------------------------------------------------------


def _zone(name: str) -> ZoneInfo | None:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def lead_timezones(lead: Lead) -> tuple[ZoneInfo, ...]:
    """Every zone the lead may be in: the lead's own `timezone` when it names a real zone, else
    the zones phonenumbers knows for the number (one for most; several for e.g. Australian
    mobiles). ComplianceError when no zone is known."""
    if lead.timezone:
        own = _zone(lead.timezone)
        if own is not None:
            return (own,)
    number = _parse(normalise_phone(lead.phone), "ZZ")
    names = [n for n in pn_timezone.time_zones_for_number(number) if n != pn_timezone.UNKNOWN_TIMEZONE]
    zones = tuple(z for z in (_zone(n) for n in names) if z is not None)
    if not zones:
        region = phonenumbers.region_code_for_number(number) or "??"
        raise ComplianceError(f"no time zone known for numbers in {region}; set the lead's timezone")
    return zones


def lead_timezone(lead: Lead) -> ZoneInfo:
    """The lead's time zone: its `timezone` if valid, else the (first) zone of its number."""
    return lead_timezones(lead)[0]


# --- calling windows -------------------------------------------------------------------------


def _window_span(window: Window, day: date, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The window opening on local `day`, as UTC instants. `end` before `start` crosses midnight;
    `end == start` is a whole day. zoneinfo resolves DST gaps and folds (fold=0: first instant)."""
    start = datetime.combine(day, window.start, tzinfo=tz)
    end_day = day + timedelta(days=1) if window.end <= window.start else day
    end = datetime.combine(end_day, window.end, tzinfo=tz)
    return start.astimezone(_UTC), end.astimezone(_UTC)


def next_allowed_time(windows: Sequence[Window], tz: ZoneInfo, now: datetime) -> datetime:
    """The earliest instant >= `now` inside one of `windows` (local time in `tz`), returned in
    `tz`. `now` itself when a window is open (start inclusive, end exclusive). ComplianceError
    when no window opens within SEARCH_DAYS."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    # Compare in UTC: aware datetimes sharing one tzinfo compare by wall time, which breaks at DST.
    now_utc = now.astimezone(_UTC)
    today = now_utc.astimezone(tz).date()
    best: datetime | None = None
    for offset in range(-1, SEARCH_DAYS + 1):  # -1: a window that opened yesterday and crosses midnight
        day = today + timedelta(days=offset)
        for window in windows:
            if _WEEKDAYS[day.weekday()] not in window.days:
                continue
            start, end = _window_span(window, day, tz)
            if start <= now_utc < end:
                return now_utc.astimezone(tz)
            if start > now_utc and (best is None or start < best):
                best = start
    if best is None or best - now_utc > timedelta(days=SEARCH_DAYS):
        raise ComplianceError(f"no calling window within {SEARCH_DAYS} days")
    return best.astimezone(tz)


def next_allowed_time_all(windows: Sequence[Window], zones: Sequence[ZoneInfo], now: datetime) -> datetime:
    """The earliest instant >= `now` inside a window in every zone at once (for numbers whose
    zone is ambiguous). Returned in the first zone."""
    if not zones:
        raise ValueError("no time zones given")
    limit = now.astimezone(_UTC) + timedelta(days=SEARCH_DAYS)
    t = now
    while True:
        candidates = [next_allowed_time(windows, tz, t) for tz in zones]
        latest = max(c.astimezone(_UTC) for c in candidates)
        if latest == t.astimezone(_UTC):
            return latest.astimezone(zones[0])
        if latest > limit:
            raise ComplianceError(
                "no calling time falls inside the windows of all the number's time zones; "
                "set the lead's timezone"
            )
        t = latest


def is_open(windows: Sequence[Window], tz: ZoneInfo, now: datetime) -> bool:
    try:
        return next_allowed_time(windows, tz, now).astimezone(_UTC) == now.astimezone(_UTC)
    except ComplianceError:
        return False


# --- the decision ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Allowed:
    """Call now. `phone` is the E.164 number to dial."""

    phone: str = ""
    country: str = ""
    timezone: str = ""


@dataclass(frozen=True, slots=True)
class Deferred:
    """Not now; try again at `until` (aware, in the lead's zone)."""

    until: datetime
    reason: str
    code: str = "outside_window"


@dataclass(frozen=True, slots=True)
class Rejected:
    """Never call this lead (as things stand). `code` is one of REJECT_CODES."""

    reason: str
    code: str = "rejected"


Decision = Allowed | Deferred | Rejected
REJECT_CODES = ("no_opt_in", "do_not_call", "invalid_phone", "attempt_cap", "no_window", "unknown_timezone")


def evaluate(lead: Lead, campaign: Campaign, *, now: datetime, on_dnc: bool, attempts: int) -> Decision:
    """May `lead` be dialled at `now`? `attempts` is how many dials were already made; `on_dnc`
    whether the number is on the do-not-call list. Checks in order: opt-in, do-not-call, number,
    attempt cap (campaign.retries.max_attempts), calling window for the number's country in the
    lead's local time."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    if not lead.opt_in:
        return Rejected("the lead has not opted in", "no_opt_in")
    if on_dnc:
        return Rejected("the number is on the do-not-call list", "do_not_call")
    try:
        phone = normalise_phone(lead.phone)
        country = country_of(phone)
    except InvalidLead as exc:
        return Rejected(f"invalid phone number: {exc.reason}", "invalid_phone")
    cap = campaign.retries.max_attempts
    if attempts >= cap:
        return Rejected(f"attempt cap reached ({attempts} of {cap})", "attempt_cap")
    windows = campaign.windows_for(country)
    if not windows:
        return Rejected(f"the campaign has no calling window for {country}", "no_window")
    try:
        zones = lead_timezones(lead)
    except ComplianceError as exc:
        return Rejected(exc.reason, "unknown_timezone")
    try:
        when = next_allowed_time_all(windows, zones, now)
    except ComplianceError as exc:
        return Rejected(exc.reason, "no_window")
    if when.astimezone(_UTC) == now.astimezone(_UTC):
        return Allowed(phone=phone, country=country, timezone=zones[0].key)
    local = when.strftime("%a %Y-%m-%d %H:%M %Z")
    return Deferred(when, f"outside calling hours for {country}; next window opens {local}")
