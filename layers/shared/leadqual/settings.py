"""Configuration, one pydantic model per process, read once at the edge with `from_env()`.

Nothing here reads the environment at import time. Each field's alias is its environment
variable, so every error names the variable to fix. Secrets come either as the value itself
(`SAUTIKIT_API_KEY`) or as a Secrets Manager ARN (`SAUTIKIT_API_KEY_SECRET_ARN`; for names that
already end in `_SECRET`, just `_ARN`: `WEBHOOK_SECRET_ARN`), resolved through an injectable
resolver; unit tests pass a dict. Secret values are left out of reprs and error messages.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from leadqual.errors import SettingsError

SecretResolver = Callable[[str], str]
SAUTIKIT_DEFAULT_URL = "https://api.sautikit.com"
GEMINI_DEFAULT_MODEL = "gemini-2.5-flash-native-audio-preview-09-2025"
OPENAI_DEFAULT_MODEL = "gpt-realtime"
OPENAI_DEFAULT_REALTIME_URL = "wss://api.openai.com/v1/realtime"
SECRET_CACHE_SECONDS = 300


def builtin_campaigns_dir() -> Path:
    return Path(str(resources.files("leadqual").joinpath("campaigns")))


def secret_arn_variable(name: str) -> str:
    """The variable that holds the ARN of secret `name`: WEBHOOK_SECRET → WEBHOOK_SECRET_ARN,
    SAUTIKIT_API_KEY → SAUTIKIT_API_KEY_SECRET_ARN."""
    return f"{name}_ARN" if name.endswith("_SECRET") else f"{name}_SECRET_ARN"


def powertools_secret(arn: str) -> str:
    """The default resolver: Secrets Manager through Powertools, cached for a few minutes."""
    from aws_lambda_powertools.utilities import parameters  # lazy: boto3 only where secrets are used

    value = parameters.get_secret(arn, max_age=SECRET_CACHE_SECONDS)
    return value.decode() if isinstance(value, bytes) else str(value)


# --- field types -----------------------------------------------------------------------------


def _url(*schemes: str) -> Callable[[str], str]:
    def check(value: str) -> str:
        scheme, sep, rest = value.partition("://")
        if not sep or scheme.lower() not in schemes or not rest.strip("/"):
            raise ValueError(f"must be a {' or '.join(s + '://' for s in schemes)} URL")
        return value

    return check


def _no_trailing_slash(value: str) -> str:
    return value.rstrip("/")  # the client appends "/v1/…"


def _e164(value: str) -> str:
    if not re.fullmatch(r"\+[1-9]\d{6,14}", value):
        raise ValueError("must be an E.164 number like +254711000000")
    return value


def _directory(value: Path) -> Path:
    if not value.is_dir():
        raise ValueError("is not a directory")
    return value


def _int_text(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.strip().isdigit() else value  # for Literal[8000, …]


HttpUrl = Annotated[str, AfterValidator(_url("http", "https"))]
BaseUrl = Annotated[HttpUrl, AfterValidator(_no_trailing_slash)]
WsUrl = Annotated[str, AfterValidator(_url("ws", "wss"))]
E164 = Annotated[str, AfterValidator(_e164)]
Directory = Annotated[Path, AfterValidator(_directory)]


# --- the base --------------------------------------------------------------------------------


class _Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore", validate_by_name=True, validate_by_alias=True)

    SECRETS: ClassVar[tuple[str, ...]] = ()  # variables that may instead come as an ARN

    @classmethod
    def from_env(
        cls,
        environ: Mapping[str, str] | None = None,
        *,
        secrets: SecretResolver | Mapping[str, str] | None = None,
    ) -> Self:
        """Build from `environ` (default: os.environ, read now). SettingsError lists every missing or
        bad variable; `secrets` resolves `*_ARN` variables (default: Secrets Manager via Powertools)."""
        env = os.environ if environ is None else environ
        resolve = _resolver(secrets)
        values: dict[str, Any] = {}
        for field in cls.model_fields.values():
            name = field.alias
            if name and (raw := env.get(name, "").strip()):
                values[name] = raw
        problems: list[tuple[str, str]] = []
        for name in cls.SECRETS:
            arn_var = secret_arn_variable(name)
            arn = env.get(arn_var, "").strip()
            if name in values or not arn:
                continue
            try:
                values[name] = resolve(arn)
            except KeyError:
                problems.append((arn_var, "no such secret"))
            except Exception as exc:  # the resolver's own errors (botocore, network) all mean the same here
                problems.append((arn_var, f"cannot read the secret ({type(exc).__name__})"))
            if problems and problems[-1][0] == arn_var:
                values[name] = ""  # reported already; keep validation from calling it missing too
        settings = None
        try:
            settings = cls.model_validate(values)
        except ValidationError as exc:
            problems.extend(cls._problems(exc, values))
        if problems or settings is None:
            raise SettingsError(
                f"{cls.__name__}: " + "; ".join(f"{var}: {why}" for var, why in problems),
                variable=problems[0][0],
            )
        return settings

    @classmethod
    def _problems(cls, exc: ValidationError, values: Mapping[str, Any]) -> list[tuple[str, str]]:
        found: list[tuple[str, str]] = []
        for err in exc.errors(include_input=False, include_url=False):
            var = str(err["loc"][0]) if err["loc"] else cls.__name__
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "missing":
                msg = (
                    f"not set (set {var} or {secret_arn_variable(var)})" if var in cls.SECRETS else "not set"
                )
            elif var in values and var not in cls.SECRETS:
                msg = f"{msg} (got {str(values[var])[:60]!r})"
            if var == cls.__name__ and ": " in msg:  # a cross-field check names its own variable
                var, msg = msg.split(": ", 1)
            found.append((var, msg))
        return found


def _resolver(secrets: SecretResolver | Mapping[str, str] | None) -> SecretResolver:
    if secrets is None:
        return powertools_secret
    if isinstance(secrets, Mapping):
        return lambda arn: secrets[arn]
    return secrets


def _secret(alias: str, default: Any = ...) -> Any:
    return Field(default, alias=alias, repr=False)


# --- per process -----------------------------------------------------------------------------


class _SautikitSettings(_Settings):
    SECRETS: ClassVar[tuple[str, ...]] = ("SAUTIKIT_API_KEY",)

    sautikit_base_url: BaseUrl = Field(SAUTIKIT_DEFAULT_URL, alias="SAUTIKIT_BASE_URL")
    sautikit_api_key: str = _secret("SAUTIKIT_API_KEY")


class _CommonSettings(_SautikitSettings):
    SECRETS: ClassVar[tuple[str, ...]] = ("SAUTIKIT_API_KEY", "WEBHOOK_SECRET")

    table_name: str = Field(alias="TABLE_NAME", min_length=3)
    webhook_secret: str = _secret("WEBHOOK_SECRET")
    from_number: E164 = Field(alias="FROM_NUMBER")
    campaigns_dir: Directory = Field(default_factory=builtin_campaigns_dir, alias="CAMPAIGNS_DIR")
    number_id: str | None = Field(None, alias="NUMBER_ID")


class DialerSettings(_CommonSettings):
    """The SQS-triggered dialer. It receives no webhooks, so it needs no webhook secret."""

    webhook_secret: str | None = _secret("WEBHOOK_SECRET", None)  # type: ignore[assignment]  # not used here
    max_concurrent_calls: int = Field(10, alias="MAX_CONCURRENT_CALLS", ge=1, le=1000)
    slot_lease_seconds: int = Field(900, alias="SLOT_LEASE_SECONDS", ge=30, le=86_400)
    voice_webhook_url: HttpUrl | None = Field(None, alias="VOICE_WEBHOOK_URL")
    idempotency_table: str = Field(alias="IDEMPOTENCY_TABLE", min_length=3)
    queue_url: HttpUrl = Field(alias="QUEUE_URL")  # deferred leads go back on the queue


class VoiceSettings(_CommonSettings):
    """The voice webhook: answers with the <Stream> to the bridge. It calls no Sautikit API."""

    SECRETS: ClassVar[tuple[str, ...]] = ("SAUTIKIT_API_KEY", "WEBHOOK_SECRET", "BRIDGE_TOKEN_SECRET")

    sautikit_api_key: str | None = _secret("SAUTIKIT_API_KEY", None)  # type: ignore[assignment]  # optional here
    bridge_url: WsUrl = Field(alias="BRIDGE_URL")
    bridge_token_secret: str = _secret("BRIDGE_TOKEN_SECRET")
    events_webhook_url: HttpUrl | None = Field(None, alias="EVENTS_WEBHOOK_URL")  # <Stream statusCallback>
    output_sample_rate: Annotated[Literal[8000, 16000], BeforeValidator(_int_text)] = Field(
        16000, alias="OUTPUT_SAMPLE_RATE"
    )
    bidirectional_sample_rate: Annotated[Literal[8000, 16000, 24000], BeforeValidator(_int_text)] = Field(
        16000, alias="BIDIRECTIONAL_SAMPLE_RATE"
    )
    bridge_token_ttl_seconds: int = Field(900, alias="BRIDGE_TOKEN_TTL_SECONDS", ge=30, le=86_400)


class EventsSettings(_CommonSettings):
    """Call events and stream status: records, billing, retries, slot release."""

    queue_url: HttpUrl = Field(alias="QUEUE_URL")  # retries go back on the queue


class RoutingSettings(_SautikitSettings):
    """The custom resource that points the number's routing at our webhooks."""

    number_id: str = Field(alias="NUMBER_ID", min_length=1)
    voice_webhook_url: HttpUrl = Field(alias="VOICE_WEBHOOK_URL")
    events_webhook_url: HttpUrl | None = Field(None, alias="EVENTS_WEBHOOK_URL")


class BridgeSettings(_SautikitSettings):
    """The Fargate audio bridge."""

    SECRETS: ClassVar[tuple[str, ...]] = (
        "SAUTIKIT_API_KEY",
        "BRIDGE_TOKEN_SECRET",
        "GEMINI_API_KEY",
        "OPENAI_API_KEY",
    )

    host: str = Field("0.0.0.0", alias="HOST")  # noqa: S104  # a container listens on every interface
    port: int = Field(8080, alias="PORT", ge=0, le=65_535)
    # "fake" is the scripted tone engine for tests and the benchmark (bridge/engines/fake.py).
    engine: Literal["local", "gemini", "openai", "fake"] = Field("local", alias="ENGINE")
    gemini_api_key: str | None = _secret("GEMINI_API_KEY", None)
    gemini_model: str = Field(GEMINI_DEFAULT_MODEL, alias="GEMINI_MODEL")
    gemini_base_url: str | None = Field(None, alias="GEMINI_BASE_URL")  # a local fake server in tests
    openai_api_key: str | None = _secret("OPENAI_API_KEY", None)
    openai_model: str = Field(OPENAI_DEFAULT_MODEL, alias="OPENAI_MODEL")
    openai_realtime_url: WsUrl = Field(OPENAI_DEFAULT_REALTIME_URL, alias="OPENAI_REALTIME_URL")
    bridge_token_secret: str = _secret("BRIDGE_TOKEN_SECRET")
    drain_seconds: float = Field(300, alias="DRAIN_SECONDS", ge=0, le=3600)
    rep_notify_topic_arn: str | None = Field(None, alias="REP_NOTIFY_TOPIC_ARN")
    table_name: str = Field(alias="TABLE_NAME", min_length=3)
    from_number: E164 | None = Field(None, alias="FROM_NUMBER")
    campaigns_dir: Directory = Field(default_factory=builtin_campaigns_dir, alias="CAMPAIGNS_DIR")
    # ENGINE=local's parts: each one unset stays offline (Whisper tiny.en, espeak, rule interviewer);
    # a URL swaps in a self-hosted OpenAI-compatible backend for that part.
    cascade_stt_url: str | None = Field(None, alias="CASCADE_STT_URL")
    cascade_stt_model: str | None = Field(None, alias="CASCADE_STT_MODEL")
    cascade_tts_url: str | None = Field(None, alias="CASCADE_TTS_URL")
    cascade_tts_model: str | None = Field(None, alias="CASCADE_TTS_MODEL")
    cascade_tts_voice: str | None = Field(None, alias="CASCADE_TTS_VOICE")
    cascade_llm_url: str | None = Field(None, alias="CASCADE_LLM_URL")
    cascade_llm_model: str | None = Field(None, alias="CASCADE_LLM_MODEL")
    cascade_api_key: str | None = Field(None, alias="CASCADE_API_KEY", repr=False)
    cascade_voice: str | None = Field(None, alias="CASCADE_VOICE")  # an espeak voice, e.g. en-us+f3

    @model_validator(mode="after")
    def _engine_key(self) -> BridgeSettings:
        if self.engine == "gemini" and not self.gemini_api_key:
            raise ValueError("GEMINI_API_KEY: needed for ENGINE=gemini (or GEMINI_API_KEY_SECRET_ARN)")
        if self.engine == "openai" and not self.openai_api_key:
            raise ValueError("OPENAI_API_KEY: needed for ENGINE=openai (or OPENAI_API_KEY_SECRET_ARN)")
        return self
