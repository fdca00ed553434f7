"""HMAC signatures: Sautikit's webhook signature (SAUTIKIT.md §3) and our per-call bridge token.

Both are pure functions over bytes and a secret, shared by the functions, the bridge and the
simulator so that there is one implementation of each scheme.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass

SIGNATURE_HEADER = "X-Sautikit-Signature"
SIGNATURE_TOLERANCE_S = 300


class SignatureError(ValueError):
    """A webhook whose signature is missing, malformed, stale or wrong."""


def _hmac_hex(secret: str | bytes, message: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def sign_webhook(secret: str, raw_body: bytes, timestamp: int | None = None) -> str:
    """The `X-Sautikit-Signature` value: `t=<unix>,v1=hex(HMAC_SHA256(secret, body + "." + t))`."""
    t = int(time.time()) if timestamp is None else timestamp
    return f"t={t},v1={_hmac_hex(secret, raw_body + b'.' + str(t).encode())}"


def verify_webhook(
    secret: str,
    raw_body: bytes,
    header: str | None,
    now: float | None = None,
    tolerance_s: int = SIGNATURE_TOLERANCE_S,
) -> None:
    """Raise SignatureError unless `header` signs `raw_body` within the tolerance window."""
    if not header:
        raise SignatureError("missing signature header")
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        key, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(key, []).append(value)
    stamps, sigs = parts.get("t", []), parts.get("v1", [])
    # isascii: str.isdigit() also accepts digits like "²" that int() refuses.
    if len(stamps) != 1 or not (stamps[0].isascii() and stamps[0].isdigit()) or not sigs:
        raise SignatureError("malformed signature header")
    t = int(stamps[0])
    current = time.time() if now is None else now
    if abs(current - t) > tolerance_s:
        raise SignatureError("signature timestamp outside the tolerance window")
    expected = _hmac_hex(secret, raw_body + b"." + stamps[0].encode())
    # Several v1 values are allowed during secret rotation; compare each in constant time.
    if not any(hmac.compare_digest(expected, sig) for sig in sigs):
        raise SignatureError("signature mismatch")


class TokenError(ValueError):
    """A bridge token that is missing, malformed, expired or for another session."""


@dataclass(frozen=True)
class BridgeToken:
    session_id: str
    expires_at: int


def make_bridge_token(secret: str, session_id: str, ttl_s: int = 600, now: float | None = None) -> str:
    """A token for the media WebSocket URL, bound to one session id and an expiry: `<exp>.<hex>`."""
    exp = int((time.time() if now is None else now) + ttl_s)
    return f"{exp}.{_hmac_hex(secret, f'{session_id}.{exp}'.encode())}"


def verify_bridge_token(
    secret: str, session_id: str, token: str | None, now: float | None = None
) -> BridgeToken:
    if not token:
        raise TokenError("missing token")
    exp_s, sep, sig = token.partition(".")
    if not sep or not (exp_s.isascii() and exp_s.isdigit()) or len(sig) != 64:
        raise TokenError("malformed token")
    expected = _hmac_hex(secret, f"{session_id}.{exp_s}".encode())
    if not hmac.compare_digest(expected, sig):
        raise TokenError("token does not match this session")
    if (time.time() if now is None else now) > int(exp_s):
        raise TokenError("token expired")
    return BridgeToken(session_id=session_id, expires_at=int(exp_s))
