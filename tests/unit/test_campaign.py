"""Campaign files: every validation rule names the bad key; the JSON Schema accepts what we ship."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from datetime import time
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from leadqual.campaign import (
    Campaign,
    CampaignError,
    Window,
    builtin_campaign_path,
    json_schema,
    load_campaign,
    parse_campaign,
)
from leadqual.models import EndReason, Lead


@pytest.fixture
def data() -> dict[str, Any]:
    loaded = yaml.safe_load(builtin_campaign_path("example").read_text(encoding="utf-8"))
    assert isinstance(loaded, dict)
    return loaded


def error_of(data: dict[str, Any]) -> str:
    with pytest.raises(CampaignError) as info:
        parse_campaign(data, "camp.yaml")
    text = str(info.value)
    assert text.startswith("camp.yaml: invalid campaign")
    return text


def test_the_example_campaign_loads(example_campaign: Campaign) -> None:
    c = example_campaign
    assert [q.id for q in c.questions] == ["good_time", "decision_maker", "seats", "timeline"]
    assert c.question("good_time").end_when is not None
    assert c.question("good_time").end_when.reason is EndReason.CALLBACK_REQUESTED  # type: ignore[union-attr]
    assert c.windows_for("KE")[0].days == ["mon", "tue", "wed", "thu", "fri"]
    assert c.windows_for("KE")[1].start == time(9)
    assert c.windows_for("US") == c.calling_windows["default"]
    assert c.scoring.hot.all == ["decides", "ten_seats", "soon"]


def test_render_fills_placeholders_and_leaves_unknown_ones(example_campaign: Campaign) -> None:
    lead = Lead(lead_id="l1", phone="+254712345678", name="Wanjiru Kamau", company="Duka Ltd", opt_in=True)
    assert example_campaign.render(example_campaign.lines.greeting, lead).startswith(
        "Hi Wanjiru, this is Amina from Acme CRM."
    )
    assert example_campaign.render("{company} {nope}", lead) == "Duka Ltd {nope}"
    nameless = lead.model_copy(update={"name": ""})
    assert example_campaign.render("Hi {first_name}", nameless) == "Hi there"


# --- file handling ---------------------------------------------------------------------------


def test_missing_file_bad_yaml_and_non_mapping(tmp_path: Path) -> None:
    with pytest.raises(CampaignError, match=r"nope\.yaml: cannot read campaign file"):
        load_campaign(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("id: [unclosed\n", encoding="utf-8")
    with pytest.raises(CampaignError, match=r"broken\.yaml: not valid YAML"):
        load_campaign(broken)
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n", encoding="utf-8")
    with pytest.raises(CampaignError, match=r"list\.yaml: a campaign is a mapping of keys, got list"):
        load_campaign(listy)


def test_a_file_with_errors_names_the_file_and_each_key(tmp_path: Path, data: dict[str, Any]) -> None:
    data["agent"].pop("name")
    data["limits"]["max_call_seconds"] = 5
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(CampaignError) as info:
        load_campaign(path)
    text = str(info.value)
    assert text.startswith(f"{path}: invalid campaign")
    assert "  agent.name: Field required" in text
    assert "  limits.max_call_seconds: Input should be greater than or equal to 30" in text


def test_unknown_keys_are_rejected(data: dict[str, Any]) -> None:
    data["transfer"]["ring_timout_s"] = 20
    assert "transfer.ring_timout_s: Extra inputs are not permitted" in error_of(data)


# --- questions -------------------------------------------------------------------------------


def test_question_ids_are_unique(data: dict[str, Any]) -> None:
    data["questions"].append(copy.deepcopy(data["questions"][1]))
    assert "questions.4.id: duplicate question id 'decision_maker'" in error_of(data)


def test_question_id_format(data: dict[str, Any]) -> None:
    data["questions"][0]["id"] = "Good Time"
    assert "questions.0.id: String should match pattern" in error_of(data)


def test_choice_questions_need_choices_and_others_take_none(data: dict[str, Any]) -> None:
    data["questions"].append({"id": "plan", "ask": "Which plan?", "type": "choice"})
    assert "questions.4.choices: a 'choice' question needs choices" in error_of(data)
    data["questions"][4] = {"id": "plan", "ask": "Which plan?", "type": "text", "choices": ["a"]}
    assert "questions.4.choices: only 'choice' questions take choices" in error_of(data)
    data["questions"][4] = {"id": "plan", "ask": "Which plan?", "type": "choice", "choices": ["A", "a"]}
    assert "questions.4.choices: choices must be distinct and not empty" in error_of(data)


def test_end_when_value_must_fit_the_question(data: dict[str, Any]) -> None:
    data["questions"][0]["end_when"] = {"equals": "no", "reason": "callback_requested"}
    assert (
        "questions.0.end_when.equals: good_time is a yes_no question: use true or false, not 'no'"
        in error_of(data)
    )


def test_end_when_reason_must_be_known(data: dict[str, Any]) -> None:
    data["questions"][0]["end_when"] = {"equals": False, "reason": "bored"}
    assert "questions.0.end_when.reason: Input should be" in error_of(data)


def test_unknown_placeholders_are_caught_where_they_are(data: dict[str, Any]) -> None:
    data["questions"][1]["ask"] = "Do you decide for {compnay}?"
    assert "questions.1.ask: unknown placeholder {compnay}" in error_of(data)
    data["questions"][1]["ask"] = "Do you decide for {company}?"
    data["lines"]["greeting"] = "Hi {firstname}"
    assert "lines.greeting: unknown placeholder {firstname}" in error_of(data)
    data["lines"]["greeting"] = "Hi {first_name}"
    data["disclosure"] = "{agent} uses AI"
    assert "disclosure: unknown placeholder {agent}" in error_of(data)
    data["disclosure"] = "AI"
    data["transfer"]["handoff_line"] = "Connecting you to {rep}"
    assert "transfer.handoff_line: unknown placeholder {rep}" in error_of(data)


def test_at_least_one_question(data: dict[str, Any]) -> None:
    data["questions"] = []
    assert "questions: List should have at least 1 item" in error_of(data)


# --- scoring ---------------------------------------------------------------------------------


def test_rules_refer_to_known_questions(data: dict[str, Any]) -> None:
    data["scoring"]["rules"][1]["question"] = "seat_count"
    assert "scoring.rules.1.question: unknown question 'seat_count'; known: good_time" in error_of(data)


def test_rule_ids_are_unique(data: dict[str, Any]) -> None:
    data["scoring"]["rules"][2]["id"] = "decides"
    assert "scoring.rules.2.id: duplicate rule id 'decides'" in error_of(data)


def test_rule_values_fit_their_question(data: dict[str, Any]) -> None:
    data["scoring"]["rules"][0]["value"] = "yes"
    assert (
        "scoring.rules.0.value: decision_maker is a yes_no question: use true or false, not 'yes'"
        in error_of(data)
    )
    data["scoring"]["rules"][0]["value"] = True
    data["scoring"]["rules"][1]["value"] = "10"
    assert "scoring.rules.1.value: seats is a number question: use a number, not '10'" in error_of(data)


def test_ordering_ops_need_numbers(data: dict[str, Any]) -> None:
    data["scoring"]["rules"][0]["op"] = "gte"
    assert "scoring.rules.0.op: 'gte' compares numbers, but decision_maker is a yes_no question" in error_of(
        data
    )


def test_op_in_takes_a_list_and_the_others_do_not(data: dict[str, Any]) -> None:
    data["scoring"]["rules"][1].update(op="in", value=10)
    assert "scoring.rules.1.value: op 'in' needs a non-empty list of values" in error_of(data)
    data["scoring"]["rules"][1].update(op="eq", value=[10, 20])
    assert "scoring.rules.1.value: op 'eq' takes one value, not a list (use op 'in')" in error_of(data)


def test_choice_rule_values_must_be_choices(data: dict[str, Any]) -> None:
    data["questions"].append(
        {"id": "plan", "ask": "Which plan?", "type": "choice", "choices": ["Starter", "Pro"]}
    )
    data["scoring"]["rules"].append({"id": "pro", "question": "plan", "op": "in", "value": ["pro", "Gold"]})
    assert "scoring.rules.3.value: 'Gold' is not one of plan's choices (Starter, Pro)" in error_of(data)


def test_unknown_op(data: dict[str, Any]) -> None:
    data["scoring"]["rules"][0]["op"] = "equals"
    assert "scoring.rules.0.op: Input should be 'eq', 'ne', 'gte', 'gt', 'lte', 'lt' or 'in'" in error_of(
        data
    )


def test_hot_rule_refers_to_known_rules(data: dict[str, Any]) -> None:
    data["scoring"]["hot"]["all"].append("rich")
    assert "scoring.hot.all: unknown rule 'rich'; known: decides, ten_seats, soon" in error_of(data)
    data["scoring"]["hot"] = {"any": ["nope"]}
    assert "scoring.hot.any: unknown rule 'nope'" in error_of(data)


def test_hot_rule_needs_a_condition_it_can_meet(data: dict[str, Any]) -> None:
    data["scoring"]["hot"] = {}
    assert "scoring.hot: needs at least one of all, any or a positive min_points" in error_of(data)
    data["scoring"]["hot"] = {"min_points": 101}
    assert "scoring.hot.min_points: 101 can never be reached (rules give at most 100)" in error_of(data)


# --- windows, transfer, voicemail ------------------------------------------------------------


def test_window_days_accept_ranges_groups_and_full_names() -> None:
    assert Window.model_validate({"days": "mon-fri", "start": "08:00", "end": "17:00"}).days == [
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
    ]
    assert Window.model_validate({"days": "fri-mon", "start": "08:00", "end": "17:00"}).days == [
        "fri",
        "sat",
        "sun",
        "mon",
    ]
    assert Window.model_validate({"days": "Sat", "start": "8:00", "end": "17:30"}).days == ["sat"]
    assert Window.model_validate({"days": "weekends", "start": "08:00", "end": "17:00"}).days == [
        "sat",
        "sun",
    ]
    assert len(Window.model_validate({"days": "daily", "start": "08:00", "end": "17:00"}).days) == 7
    assert Window.model_validate({"days": ["Monday", "wed"], "start": "08:00", "end": "17:00"}).days == [
        "mon",
        "wed",
    ]
    assert Window.model_validate({"days": "sat", "start": "8:05", "end": "17:30"}).start == time(8, 5)


def test_bad_days_are_named(data: dict[str, Any]) -> None:
    data["calling_windows"]["KE"][0]["days"] = "mon-fry"
    assert "calling_windows.KE.0.days: unknown day 'fry'; use mon, tue, wed, thu, fri, sat, sun" in error_of(
        data
    )
    data["calling_windows"]["KE"][0]["days"] = []
    assert "calling_windows.KE.0.days: List should have at least 1 item" in error_of(data)


def test_unquoted_yaml_times_are_caught_not_read_as_seconds(data: dict[str, Any]) -> None:
    unquoted = yaml.safe_load("{start: 08:00, end: 19:00}")
    assert unquoted["end"] == 1140  # what YAML 1.1 does with an unquoted 19:00
    data["calling_windows"]["KE"][0].update(unquoted)
    text = error_of(data)
    assert 'calling_windows.KE.0.end: write times as quoted "HH:MM" strings' in text
    data["calling_windows"]["KE"][0].update(start="8am", end="19:00")
    assert "calling_windows.KE.0.start: '8am' is not a time" in error_of(data)


def test_window_keys_are_country_codes(data: dict[str, Any]) -> None:
    data["calling_windows"]["ke"] = data["calling_windows"].pop("KE")
    assert (
        "calling_windows.ke: not an ISO country code (like KE) or 'default'; did you mean 'KE'?"
        in error_of(data)
    )
    data["calling_windows"]["Kenya"] = data["calling_windows"].pop("ke")
    assert "calling_windows.Kenya: not an ISO country code (like KE) or 'default'" in error_of(data)


def test_reps_are_e164(data: dict[str, Any]) -> None:
    data["transfer"]["reps"] = ["+254711999000", "0711999000"]
    assert "transfer.reps.1: not a valid E.164 number" in error_of(data)
    data["transfer"]["reps"] = []
    assert "transfer.reps: List should have at least 1 item" in error_of(data)


def test_transfer_strategy_and_ring_timeout(data: dict[str, Any]) -> None:
    data["transfer"]["strategy"] = "teleport"
    data["transfer"]["ring_timeout_s"] = 1
    text = error_of(data)
    assert "transfer.strategy: Input should be 'dial_after_stream' or 'supervise_barge'" in text
    assert "transfer.ring_timeout_s: Input should be greater than or equal to 5" in text


def test_leaving_a_voicemail_needs_a_message(data: dict[str, Any]) -> None:
    data["voicemail"] = {"policy": "leave_message"}
    assert "voicemail.message: policy leave_message needs a message" in error_of(data)
    data["voicemail"] = {"policy": "leave_message", "message": "Hi {first_name}, Amina from {agent_company}."}
    assert parse_campaign(data).voicemail.message.startswith("Hi")


def test_retries_bounds(data: dict[str, Any]) -> None:
    data["retries"]["max_attempts"] = 0
    data["retries"]["busy"] = {"after_minutes": 0}
    text = error_of(data)
    assert "retries.max_attempts: Input should be greater than or equal to 1" in text
    assert "retries.busy.after_minutes: Input should be greater than or equal to 1" in text


# --- JSON Schema -----------------------------------------------------------------------------


def test_json_schema_is_valid_and_accepts_the_example(data: dict[str, Any]) -> None:
    schema = json.loads(json_schema())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "leadqual campaign"
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(data, schema)  # ranges like "mon-fri" and "HH:MM" times included
    assert {"questions", "scoring", "transfer", "calling_windows"} <= set(schema["properties"])
    assert set(schema["required"]) >= {
        "id",
        "name",
        "agent",
        "disclosure",
        "questions",
        "scoring",
        "transfer",
    }


def test_json_schema_flags_what_editors_should_flag(data: dict[str, Any]) -> None:
    schema = json.loads(json_schema())
    mutations: list[Callable[[dict[str, Any]], object]] = [
        lambda d: d["agent"].pop("name"),
        lambda d: d["transfer"].update(ring_timout_s=20),
        lambda d: d["calling_windows"]["KE"][0].update(end=1140),
        lambda d: d["calling_windows"]["KE"][0].update(days="weekdayz"),
        lambda d: d["questions"][0].update(type="essay"),
    ]
    for mutate in mutations:
        broken = copy.deepcopy(data)
        mutate(broken)
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(broken, schema)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("id",), "my campaign", "id: String should match pattern"),
        (("disclosure",), "", "disclosure: String should have at least 1 character"),
        (("questions", 0, "ask"), "", "questions.0.ask: String should have at least 1 character"),
        (("questions", 0, "type"), "essay", "questions.0.type: Input should be 'yes_no', 'number', 'choice'"),
        (("agent", "voice_speed"), 2, "agent.voice_speed: Extra inputs are not permitted"),
        (
            ("limits", "silence_timeout_s"),
            1,
            "limits.silence_timeout_s: Input should be greater than or equal to 2",
        ),
        (
            ("limits", "max_call_seconds"),
            7200,
            "limits.max_call_seconds: Input should be less than or equal to 3600",
        ),
        (("fallback_action",), "panic", "fallback_action: Input should be 'hang_up' or 'transfer'"),
        (("voicemail", "policy"), "sing", "voicemail.policy: Input should be 'hang_up' or 'leave_message'"),
        (
            ("transfer", "ring_timeout_s"),
            121,
            "transfer.ring_timeout_s: Input should be less than or equal to 120",
        ),
        (("retries", "max_attempts"), 11, "retries.max_attempts: Input should be less than or equal to 10"),
    ],
)
def test_field_constraints_name_their_key(
    data: dict[str, Any], path: tuple[str | int, ...], value: Any, message: str
) -> None:
    target: Any = data
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert message in error_of(data)
