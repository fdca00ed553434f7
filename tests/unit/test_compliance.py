"""Compliance: phone normalisation, time zones and the call-or-not decision at window edges."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from leadqual.campaign import Campaign, Window
from leadqual.compliance import (
    Allowed,
    Deferred,
    Rejected,
    country_of,
    evaluate,
    is_open,
    lead_timezone,
    lead_timezones,
    next_allowed_time,
    normalise_phone,
)
from leadqual.errors import ComplianceError, InvalidLead
from leadqual.models import Lead

NAIROBI = ZoneInfo("Africa/Nairobi")
NEW_YORK = ZoneInfo("America/New_York")
LONDON = ZoneInfo("Europe/London")
KOLKATA = ZoneInfo("Asia/Kolkata")
TOKYO = ZoneInfo("Asia/Tokyo")

KE_MOBILE = "+254712345678"
# Mon-Fri 08:00-19:00 and Sat 09:00-13:00 (the example campaign's KE windows).
KE_WINDOWS = [
    Window(days=["mon", "tue", "wed", "thu", "fri"], start=time(8), end=time(19)),
    Window(days=["sat"], start=time(9), end=time(13)),
]
OFFICE = [Window(days=["mon", "tue", "wed", "thu", "fri"], start=time(9), end=time(18))]
LATE_FRIDAY = [Window(days=["fri"], start=time(22), end=time(2))]  # crosses midnight into Saturday


def lead(phone: str = KE_MOBILE, **kw: object) -> Lead:
    return Lead.model_validate({"lead_id": "l-1", "phone": phone, "opt_in": True, **kw})


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


# --- phone numbers ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "0712345678",
        "0712 345 678",
        "0712-345-678",
        "(0712) 345 678",
        "712345678",
        "254712345678",
        "+254712345678",
        "+254 712 345 678",
        "+254-712-345-678",
        "00254712345678",  # the common international prefix, not Kenya's own
        "000254712345678",  # Kenya's international prefix
        " +254 712 345 678 ",
    ],
)
def test_kenyan_numbers_in_local_and_international_forms_become_e164(raw: str) -> None:
    assert normalise_phone(raw) == KE_MOBILE


def test_kenyan_landlines_and_new_01_mobiles() -> None:
    assert normalise_phone("020 1234567") == "+254201234567"
    assert normalise_phone("0112 345 678") == "+254112345678"


@pytest.mark.parametrize(
    ("raw", "region", "e164", "country"),
    [
        ("+1 212 555 0123", "KE", "+12125550123", "US"),
        ("(212) 555-0123", "US", "+12125550123", "US"),
        ("+44 20 7946 0018", "KE", "+442079460018", "GB"),
        ("020 7946 0018", "GB", "+442079460018", "GB"),
        ("+91 98765 43210", "KE", "+919876543210", "IN"),
        ("+81 3-1234-5678", "KE", "+81312345678", "JP"),
        ("+255 712 345 678", "KE", "+255712345678", "TZ"),
        ("+256 772 123 456", "KE", "+256772123456", "UG"),
        ("+234 803 123 4567", "KE", "+2348031234567", "NG"),
    ],
)
def test_numbers_from_other_countries(raw: str, region: str, e164: str, country: str) -> None:
    assert normalise_phone(raw, default_region=region) == e164
    assert country_of(e164) == country


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("hello", "not a number"),
        ("", "no phone number"),
        ("   ", "no phone number"),
        ("+2547123", "not a valid number for KE: too short"),
        ("1234", "not a valid number for KE: too short"),
        ("07123456789012", "not a valid number for KE"),
        ("+999 123 456 789", "unknown country code"),
        ("+254712345678 ext 5", "numbers with an extension cannot be dialled"),
        ("+1 212 555 012", "not a valid number for US: too short"),
    ],
)
def test_invalid_numbers_say_why_without_echoing_the_number(raw: str, reason: str) -> None:
    with pytest.raises(InvalidLead) as info:
        normalise_phone(raw)
    assert info.value.reason.startswith(reason)
    assert info.value.field == "phone"
    assert not info.value.retryable
    assert not any(ch.isdigit() for ch in info.value.reason.replace("KE", ""))


def test_country_of_accepts_local_form_and_rejects_garbage() -> None:
    assert country_of("0712345678") == "KE"
    with pytest.raises(InvalidLead):
        country_of("+2547")


# --- time zones ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("phone", "zone"),
    [
        ("0712 345 678", "Africa/Nairobi"),
        ("+12125550123", "America/New_York"),
        ("+14155550123", "America/Los_Angeles"),
        ("+442079460018", "Europe/London"),
        ("+81312345678", "Asia/Tokyo"),
    ],
)
def test_timezone_comes_from_the_number(phone: str, zone: str) -> None:
    assert lead_timezone(lead(phone)).key == zone


def test_indian_zone_has_the_half_hour_offset() -> None:
    tz = lead_timezone(lead("+919876543210"))
    assert datetime(2025, 6, 4, 12, tzinfo=tz).utcoffset() == timedelta(hours=5, minutes=30)


def test_the_leads_own_timezone_wins_when_valid_and_is_ignored_when_not() -> None:
    assert lead_timezone(lead(timezone="Europe/London")).key == "Europe/London"
    assert lead_timezone(lead(timezone="Mars/Olympus_Mons")).key == "Africa/Nairobi"
    assert lead_timezone(lead(timezone="../../etc/passwd")).key == "Africa/Nairobi"


def test_a_number_spanning_zones_lists_them_all() -> None:
    zones = {z.key for z in lead_timezones(lead("+61412345678"))}
    assert {"Australia/Perth", "Australia/Sydney"} <= zones


def test_a_number_without_a_known_zone_is_a_clear_error() -> None:
    satellite = lead("+881612345678")
    with pytest.raises(ComplianceError, match="set the lead's timezone"):
        lead_timezone(satellite)
    assert lead_timezone(lead("+881612345678", timezone="Asia/Dubai")).key == "Asia/Dubai"


# --- windows ---------------------------------------------------------------------------------


def test_inside_a_window_the_answer_is_now_in_local_time() -> None:
    now = utc(2025, 6, 4, 7, 0)  # Wednesday 10:00 in Nairobi
    got = next_allowed_time(KE_WINDOWS, NAIROBI, now)
    assert got == now
    assert got.tzinfo is NAIROBI
    assert got.hour == 10


def test_window_edges_start_inclusive_end_exclusive() -> None:
    start = datetime(2025, 6, 4, 8, 0, tzinfo=NAIROBI)
    end = datetime(2025, 6, 4, 19, 0, tzinfo=NAIROBI)
    assert next_allowed_time(KE_WINDOWS, NAIROBI, start) == start
    assert next_allowed_time(KE_WINDOWS, NAIROBI, start - timedelta(microseconds=1)) == start
    last = end - timedelta(seconds=1)
    assert next_allowed_time(KE_WINDOWS, NAIROBI, last) == last
    assert next_allowed_time(KE_WINDOWS, NAIROBI, end) == datetime(2025, 6, 5, 8, 0, tzinfo=NAIROBI)
    assert is_open(KE_WINDOWS, NAIROBI, start)
    assert not is_open(KE_WINDOWS, NAIROBI, end)


def test_friday_evening_waits_for_saturday_and_saturday_afternoon_for_monday() -> None:
    friday_evening = datetime(2025, 6, 6, 19, 0, tzinfo=NAIROBI)
    assert next_allowed_time(KE_WINDOWS, NAIROBI, friday_evening) == datetime(
        2025, 6, 7, 9, 0, tzinfo=NAIROBI
    )
    saturday_close = datetime(2025, 6, 7, 13, 0, tzinfo=NAIROBI)
    assert next_allowed_time(KE_WINDOWS, NAIROBI, saturday_close) == datetime(
        2025, 6, 9, 8, 0, tzinfo=NAIROBI
    )
    sunday = datetime(2025, 6, 8, 23, 59, tzinfo=NAIROBI)
    assert next_allowed_time(KE_WINDOWS, NAIROBI, sunday) == datetime(2025, 6, 9, 8, 0, tzinfo=NAIROBI)


def test_a_window_crossing_midnight_belongs_to_the_day_it_opens() -> None:
    fri_2159 = datetime(2025, 6, 6, 21, 59, tzinfo=NAIROBI)
    fri_22 = datetime(2025, 6, 6, 22, 0, tzinfo=NAIROBI)
    sat_0130 = datetime(2025, 6, 7, 1, 30, tzinfo=NAIROBI)
    sat_02 = datetime(2025, 6, 7, 2, 0, tzinfo=NAIROBI)
    thu_2330 = datetime(2025, 6, 5, 23, 30, tzinfo=NAIROBI)
    assert next_allowed_time(LATE_FRIDAY, NAIROBI, fri_2159) == fri_22
    assert next_allowed_time(LATE_FRIDAY, NAIROBI, sat_0130) == sat_0130  # opened on Friday
    assert next_allowed_time(LATE_FRIDAY, NAIROBI, sat_02) == datetime(2025, 6, 13, 22, tzinfo=NAIROBI)
    assert next_allowed_time(LATE_FRIDAY, NAIROBI, thu_2330) == fri_22  # Thursday's night is not Friday's


def test_equal_start_and_end_is_a_whole_day() -> None:
    all_day = [Window(days=["sun"], start=time(0), end=time(0))]
    sunday_late = datetime(2025, 6, 8, 23, 59, tzinfo=NAIROBI)
    assert next_allowed_time(all_day, NAIROBI, sunday_late) == sunday_late
    assert next_allowed_time(all_day, NAIROBI, datetime(2025, 6, 9, 0, 0, tzinfo=NAIROBI)) == datetime(
        2025, 6, 15, 0, 0, tzinfo=NAIROBI
    )


@pytest.mark.parametrize(
    ("tz", "expected_utc"),
    [
        (NAIROBI, utc(2025, 6, 4, 7, 0)),  # 10:00 local: open
        (KOLKATA, utc(2025, 6, 4, 7, 0)),  # 12:30 local: open
        (TOKYO, utc(2025, 6, 4, 7, 0)),  # 16:00 local: open
        (LONDON, utc(2025, 6, 4, 8, 0)),  # 08:00 BST: wait for 09:00 BST
        (NEW_YORK, utc(2025, 6, 4, 13, 0)),  # 03:00 EDT: wait for 09:00 EDT
    ],
)
def test_one_instant_many_time_zones(tz: ZoneInfo, expected_utc: datetime) -> None:
    got = next_allowed_time(OFFICE, tz, utc(2025, 6, 4, 7, 0))
    assert got == expected_utc
    assert got.tzinfo is tz


def test_tokyo_after_close_waits_for_tomorrow_morning_which_is_utc_midnight() -> None:
    assert next_allowed_time(OFFICE, TOKYO, utc(2025, 6, 4, 9, 30)) == utc(2025, 6, 5, 0, 0)


def test_deferral_across_a_dst_change_lands_on_local_nine() -> None:
    saturday = datetime(2025, 3, 8, 12, 0, tzinfo=NEW_YORK)  # EST; clocks spring forward on Sunday
    got = next_allowed_time(OFFICE, NEW_YORK, saturday)
    assert got == utc(2025, 3, 10, 13, 0)  # 09:00 EDT, not 09:00 EST (14:00 UTC)
    assert (got.hour, got.minute) == (9, 0)
    assert next_allowed_time(OFFICE, NEW_YORK, datetime(2025, 3, 7, 9, 0, tzinfo=NEW_YORK)) == utc(
        2025, 3, 7, 14, 0
    )
    london_after_fallback = next_allowed_time(OFFICE, LONDON, datetime(2025, 10, 25, 12, tzinfo=LONDON))
    assert london_after_fallback == utc(2025, 10, 27, 9, 0)  # GMT again


def test_no_window_at_all_and_naive_now_are_errors() -> None:
    with pytest.raises(ComplianceError, match="no calling window"):
        next_allowed_time([], NAIROBI, utc(2025, 6, 4, 7))
    with pytest.raises(ValueError, match="timezone-aware"):
        next_allowed_time(OFFICE, NAIROBI, datetime(2025, 6, 4, 7))  # naive on purpose


# --- evaluate --------------------------------------------------------------------------------


def test_an_opted_in_kenyan_lead_in_hours_is_allowed(example_campaign: Campaign, fixed_now: datetime) -> None:
    decision = evaluate(lead("0712 345 678"), example_campaign, now=fixed_now, on_dnc=False, attempts=0)
    assert decision == Allowed(phone=KE_MOBILE, country="KE", timezone="Africa/Nairobi")


def test_no_opt_in_is_rejected_first(example_campaign: Campaign, fixed_now: datetime) -> None:
    no_opt_in = lead().model_copy(update={"opt_in": False})
    decision = evaluate(no_opt_in, example_campaign, now=fixed_now, on_dnc=True, attempts=99)
    assert isinstance(decision, Rejected)
    assert decision.code == "no_opt_in"


def test_do_not_call_is_rejected(example_campaign: Campaign, fixed_now: datetime) -> None:
    decision = evaluate(lead(), example_campaign, now=fixed_now, on_dnc=True, attempts=0)
    assert decision == Rejected("the number is on the do-not-call list", "do_not_call")


def test_invalid_phone_is_rejected_with_the_reason(example_campaign: Campaign, fixed_now: datetime) -> None:
    decision = evaluate(lead("+2547123"), example_campaign, now=fixed_now, on_dnc=False, attempts=0)
    assert isinstance(decision, Rejected)
    assert decision.code == "invalid_phone"
    assert "not a valid number for KE" in decision.reason


def test_attempt_cap_counts_attempts_already_made(example_campaign: Campaign, fixed_now: datetime) -> None:
    assert example_campaign.retries.max_attempts == 3
    assert isinstance(evaluate(lead(), example_campaign, now=fixed_now, on_dnc=False, attempts=2), Allowed)
    capped = evaluate(lead(), example_campaign, now=fixed_now, on_dnc=False, attempts=3)
    assert capped == Rejected("attempt cap reached (3 of 3)", "attempt_cap")


def test_outside_hours_defers_to_the_exact_window_start(example_campaign: Campaign) -> None:
    saturday_afternoon = datetime(2025, 6, 7, 13, 0, tzinfo=NAIROBI)
    decision = evaluate(lead(), example_campaign, now=saturday_afternoon, on_dnc=False, attempts=1)
    assert isinstance(decision, Deferred)
    assert decision.until == datetime(2025, 6, 9, 8, 0, tzinfo=NAIROBI)
    assert decision.until.tzinfo == NAIROBI
    assert "KE" in decision.reason
    assert "Mon 2025-06-09 08:00" in decision.reason
    again = evaluate(lead(), example_campaign, now=decision.until, on_dnc=False, attempts=1)
    assert isinstance(again, Allowed)


def test_other_countries_use_the_default_windows_in_their_own_time(example_campaign: Campaign) -> None:
    now = utc(2025, 6, 4, 7, 0)
    new_york = evaluate(lead("+12125550123"), example_campaign, now=now, on_dnc=False, attempts=0)
    assert isinstance(new_york, Deferred)
    assert new_york.until == datetime(2025, 6, 4, 9, 0, tzinfo=NEW_YORK)
    tokyo = evaluate(lead("+81312345678"), example_campaign, now=now, on_dnc=False, attempts=0)
    assert tokyo == Allowed(phone="+81312345678", country="JP", timezone="Asia/Tokyo")


def test_a_kenyan_number_abroad_uses_kenyan_windows_in_the_leads_zone(example_campaign: Campaign) -> None:
    abroad = lead(timezone="Europe/London")
    at_0530_utc = utc(2025, 6, 4, 5, 30)  # 08:30 in Nairobi, 06:30 in London
    decision = evaluate(abroad, example_campaign, now=at_0530_utc, on_dnc=False, attempts=0)
    assert isinstance(decision, Deferred)
    assert decision.until == datetime(2025, 6, 4, 8, 0, tzinfo=LONDON)  # KE window 08:00, London time
    at_home = evaluate(lead(), example_campaign, now=at_0530_utc, on_dnc=False, attempts=0)
    assert isinstance(at_home, Allowed)


def test_a_number_spanning_zones_waits_until_every_zone_is_open(example_campaign: Campaign) -> None:
    australian_mobile = lead("+61412345678")
    # Cocos (UTC+6:30) opens at 02:30 UTC; Lord Howe (UTC+10:30) closes at 07:30 UTC.
    decision = evaluate(
        australian_mobile, example_campaign, now=utc(2025, 6, 4, 0, 0), on_dnc=False, attempts=0
    )
    assert isinstance(decision, Deferred)
    assert decision.until == utc(2025, 6, 4, 2, 30)
    assert isinstance(
        evaluate(australian_mobile, example_campaign, now=utc(2025, 6, 4, 7, 29), on_dnc=False, attempts=0),
        Allowed,
    )
    narrow = example_campaign.model_copy(
        update={"calling_windows": {"default": [Window(start=time(9), end=time(10))]}}
    )
    never = evaluate(australian_mobile, narrow, now=utc(2025, 6, 4, 0, 0), on_dnc=False, attempts=0)
    assert isinstance(never, Rejected)
    assert never.code == "no_window"


def test_unknown_zone_and_missing_windows_are_rejected(
    example_campaign: Campaign, fixed_now: datetime
) -> None:
    satellite = evaluate(lead("+881612345678"), example_campaign, now=fixed_now, on_dnc=False, attempts=0)
    assert isinstance(satellite, Rejected)
    assert satellite.code == "unknown_timezone"
    ke_only = example_campaign.model_copy(update={"calling_windows": {"KE": KE_WINDOWS}})
    us = evaluate(lead("+12125550123"), ke_only, now=fixed_now, on_dnc=False, attempts=0)
    assert us == Rejected("the campaign has no calling window for US", "no_window")


def test_evaluate_needs_an_aware_clock(example_campaign: Campaign) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        evaluate(lead(), example_campaign, now=datetime(2025, 6, 4, 10), on_dnc=False, attempts=0)
