"""Domain errors carry data: reason, retryable, and for Sautikit the status, code and request id."""

from __future__ import annotations

import pytest

from leadqual.errors import (
    AnswerError,
    ComplianceError,
    InvalidLead,
    LeadqualError,
    SautikitError,
    SettingsError,
    is_retryable_status,
)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (None, True),
        (408, True),
        (429, True),
        (500, True),
        (503, True),
        (400, False),
        (401, False),
        (402, False),
        (404, False),
        (409, False),
        (422, False),
    ],
)
def test_4xx_is_permanent_except_408_and_429(status: int | None, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable
    err = SautikitError.from_status(status, "x.y", "msg", "req_1")
    assert err.retryable is retryable


def test_sautikit_error_attributes_and_text() -> None:
    err = SautikitError(
        402, "wallet.insufficient_funds", "Top up your wallet", False, "req_9", retry_after_s=None
    )
    assert (err.status, err.code, err.message, err.retryable, err.request_id) == (
        402,
        "wallet.insufficient_funds",
        "Top up your wallet",
        False,
        "req_9",
    )
    assert err.reason == "Top up your wallet"
    assert str(err) == "sautikit 402: wallet.insufficient_funds: Top up your wallet (request req_9)"
    assert isinstance(err, LeadqualError)
    timeout = SautikitError.from_status(None)
    assert str(timeout) == "sautikit no response: no response"
    assert SautikitError.from_status(429, retry_after_s=2.5).retry_after_s == 2.5


def test_domain_errors_default_to_permanent_and_keep_their_data() -> None:
    bad = InvalidLead("not a number", field="phone")
    assert (bad.reason, bad.field, bad.retryable) == ("not a number", "phone", False)
    assert AnswerError("seats: no number", question_id="seats").question_id == "seats"
    assert not ComplianceError("do not call").retryable
    assert ComplianceError("table busy", retryable=True).retryable
    assert SettingsError("TABLE_NAME: not set", variable="TABLE_NAME").variable == "TABLE_NAME"
    assert repr(bad) == "InvalidLead(reason='not a number', retryable=False)"
    with pytest.raises(LeadqualError, match="not a number"):
        raise bad
