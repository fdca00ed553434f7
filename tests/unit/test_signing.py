"""Webhook signatures and bridge tokens: what a forger, a replayer or a confused proxy can and cannot do."""

from __future__ import annotations

import hashlib
import hmac

import pytest

from leadqual.signing import (
    SIGNATURE_TOLERANCE_S,
    BridgeToken,
    SignatureError,
    TokenError,
    make_bridge_token,
    sign_webhook,
    verify_bridge_token,
    verify_webhook,
)

SECRET = "whsec_test"
BODY = b"sessionId=HD_0123456789ab&isActive=1&clientRequestId=lq-l1-1"
NOW = 1_750_000_000


def v1(secret: str, body: bytes, t: int) -> str:
    return hmac.new(secret.encode(), body + b"." + str(t).encode(), hashlib.sha256).hexdigest()


def test_signature_matches_the_documented_scheme() -> None:
    assert sign_webhook(SECRET, BODY, timestamp=NOW) == f"t={NOW},v1={v1(SECRET, BODY, NOW)}"
    verify_webhook(SECRET, BODY, sign_webhook(SECRET, BODY, timestamp=NOW), now=NOW)


@pytest.mark.parametrize(
    "body",
    [
        BODY + b"&x=1",
        BODY.replace(b"lq-l1-1", b"lq-l2-1"),
        BODY[:-1],
        b"",
        BODY + b" ",
    ],
)
def test_tampered_body_is_rejected(body: bytes) -> None:
    header = sign_webhook(SECRET, BODY, timestamp=NOW)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_webhook(SECRET, body, header, now=NOW)


def test_wrong_secret_is_rejected() -> None:
    with pytest.raises(SignatureError, match="mismatch"):
        verify_webhook("other", BODY, sign_webhook(SECRET, BODY, timestamp=NOW), now=NOW)


def test_timestamp_is_signed_so_it_cannot_be_refreshed() -> None:
    old = NOW - 3600
    sig = v1(SECRET, BODY, old)
    # A replayer who moves t into the window breaks the signature.
    with pytest.raises(SignatureError, match="mismatch"):
        verify_webhook(SECRET, BODY, f"t={NOW},v1={sig}", now=NOW)


@pytest.mark.parametrize("offset", [-SIGNATURE_TOLERANCE_S - 1, -86_400, SIGNATURE_TOLERANCE_S + 1, 10**6])
def test_stale_and_future_timestamps_are_rejected(offset: int) -> None:
    header = sign_webhook(SECRET, BODY, timestamp=NOW + offset)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_webhook(SECRET, BODY, header, now=NOW)


@pytest.mark.parametrize("offset", [-SIGNATURE_TOLERANCE_S, -1, 0, 1, SIGNATURE_TOLERANCE_S])
def test_timestamps_inside_the_window_are_accepted(offset: int) -> None:
    verify_webhook(SECRET, BODY, sign_webhook(SECRET, BODY, timestamp=NOW + offset), now=NOW)


def test_custom_tolerance() -> None:
    header = sign_webhook(SECRET, BODY, timestamp=NOW - 60)
    verify_webhook(SECRET, BODY, header, now=NOW, tolerance_s=60)
    with pytest.raises(SignatureError, match="tolerance"):
        verify_webhook(SECRET, BODY, header, now=NOW, tolerance_s=59)


@pytest.mark.parametrize(
    ("header", "match"),
    [
        (None, "missing"),
        ("", "missing"),
        ("garbage", "malformed"),
        (f"v1={v1(SECRET, BODY, NOW)}", "malformed"),
        (f"t={NOW}", "malformed"),
        (f"t=abc,v1={v1(SECRET, BODY, NOW)}", "malformed"),
        (f"t=-{NOW},v1={v1(SECRET, BODY, NOW)}", "malformed"),
        (f"t=,v1={v1(SECRET, BODY, NOW)}", "malformed"),
        (f"t={NOW},t={NOW},v1={v1(SECRET, BODY, NOW)}", "malformed"),
        (f"t={NOW},v0={v1(SECRET, BODY, NOW)}", "malformed"),
        (f"t={NOW},v1=", "mismatch"),
        (f"t={NOW},v1=zz", "mismatch"),
        (f"t={NOW};v1={v1(SECRET, BODY, NOW)}", "malformed"),
        ("t=²,v1=ab", "malformed"),  # isdigit() but not int(): must still be a SignatureError
        ("t=١٧٥٠٠٠٠٠٠٠,v1=ab", "malformed"),
    ],
)
def test_malformed_headers_are_rejected(header: str | None, match: str) -> None:
    with pytest.raises(SignatureError, match=match):
        verify_webhook(SECRET, BODY, header, now=NOW)


def test_header_whitespace_and_order_are_tolerated() -> None:
    sig = v1(SECRET, BODY, NOW)
    verify_webhook(SECRET, BODY, f" v1={sig} , t={NOW} ", now=NOW)


def test_multiple_v1_values_during_secret_rotation() -> None:
    good = v1(SECRET, BODY, NOW)
    stale = v1("previous-secret", BODY, NOW)
    verify_webhook(SECRET, BODY, f"t={NOW},v1={stale},v1={good}", now=NOW)
    verify_webhook(SECRET, BODY, f"t={NOW},v1={good},v1={stale}", now=NOW)
    with pytest.raises(SignatureError, match="mismatch"):
        verify_webhook(SECRET, BODY, f"t={NOW},v1={stale},v1={'0' * 64}", now=NOW)


def test_bridge_token_round_trip() -> None:
    token = make_bridge_token(SECRET, "HD_0123456789ab", ttl_s=600, now=NOW)
    assert verify_bridge_token(SECRET, "HD_0123456789ab", token, now=NOW + 599) == BridgeToken(
        session_id="HD_0123456789ab", expires_at=NOW + 600
    )


def test_bridge_token_is_bound_to_its_session() -> None:
    token = make_bridge_token(SECRET, "HD_0123456789ab", now=NOW)
    with pytest.raises(TokenError, match="session"):
        verify_bridge_token(SECRET, "HD_ffffffffffff", token, now=NOW)


def test_bridge_token_expires() -> None:
    token = make_bridge_token(SECRET, "HD_0123456789ab", ttl_s=60, now=NOW)
    verify_bridge_token(SECRET, "HD_0123456789ab", token, now=NOW + 60)
    with pytest.raises(TokenError, match="expired"):
        verify_bridge_token(SECRET, "HD_0123456789ab", token, now=NOW + 61)


def test_bridge_token_expiry_is_signed() -> None:
    token = make_bridge_token(SECRET, "HD_0123456789ab", ttl_s=60, now=NOW)
    _, sig = token.split(".")
    with pytest.raises(TokenError, match="session"):
        verify_bridge_token(SECRET, "HD_0123456789ab", f"{NOW + 86_400}.{sig}", now=NOW + 120)


def test_bridge_token_other_secret_is_rejected() -> None:
    token = make_bridge_token("another", "HD_0123456789ab", now=NOW)
    with pytest.raises(TokenError):
        verify_bridge_token(SECRET, "HD_0123456789ab", token, now=NOW)


@pytest.mark.parametrize(
    ("token", "match"),
    [
        (None, "missing"),
        ("", "missing"),
        ("abc", "malformed"),
        (f"{NOW}.", "malformed"),
        (f"{NOW}.abc", "malformed"),
        (f"soon.{'a' * 64}", "malformed"),
        (f".{'a' * 64}", "malformed"),
        (f"{NOW}.{'a' * 63}", "malformed"),
        (f"²³.{'a' * 64}", "malformed"),
    ],
)
def test_malformed_bridge_tokens(token: str | None, match: str) -> None:
    with pytest.raises(TokenError, match=match):
        verify_bridge_token(SECRET, "HD_0123456789ab", token, now=NOW)
