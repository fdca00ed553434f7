"""The local stack: the whole product on one machine, no AWS account, no phone, no keys.

    leadqual local up [--directory FILE] [--campaign FILE] [--engine local|gemini|openai] [--run-dir DIR]

prints one JSON line of endpoints and serves until SIGINT/SIGTERM. What runs where:

- this process (the "Lambda side"): moto (DynamoDB, SQS) on loopback with the tables and queues
  created from template.yaml itself (local.resources); the HTTP API emulator that turns requests
  into API Gateway v2 events for the real voice and events handlers; the SQS poller that feeds the
  real dialer handler real batch events (partial batch responses, visibility timeout, DLQ);
- a subprocess each, so real-time audio is never starved by this process's GIL: the bridge
  (`python -m bridge`, engine `local` = the offline cascade) and the Sautikit simulator
  (`python -m local.sautikit`) with the sample directory of simulated people.

Ports are picked free on 127.0.0.1; every component logs to a file under `<run dir>/logs/`;
stopping (Ctrl-C, SIGTERM, or `LocalStack.close()`) stops the poller and the API first, then
drains the bridge, stops the simulator (terminate, wait, kill if it must) and moto. A component
that dies or never gets ready is reported with the tail of its log.

`LocalStack` is the programmatic form (`leadqual demo` and the e2e tests use it):

    with LocalStack(StackOptions(run_dir=Path("demo-out"))) as stack:
        stack.endpoints.as_dict(); stack.store; stack.sqs; stack.sim_calls()
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import httpx

from local.lambda_runtime import ApiGatewayEmulator, Handler, SqsPoller, moto_server

REPO = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"
DEFAULT_DIRECTORY = DATA / "directory.yaml"
DEFAULT_CAMPAIGN = DATA / "campaign.yaml"
DEFAULT_RUN_DIR = Path("local-run")
FROM_NUMBER = "+254700000100"  # the simulated workspace's number: every call leaves on it
NUMBER_ID = "num_0001"  # what `python -m local.sautikit` calls the first --number
REGION = "us-east-1"
ENGINES = ("local", "gemini", "openai")
ENGINE_KEYS = {"gemini": "GEMINI_API_KEY", "openai": "OPENAI_API_KEY"}
# Passed through to the bridge when set: the real engines' keys and their knobs.
BRIDGE_PASSTHROUGH = (
    "GEMINI_API_KEY",
    "GEMINI_MODEL",
    "GEMINI_BASE_URL",
    "OPENAI_API_KEY",
    "OPENAI_MODEL",
    "OPENAI_REALTIME_URL",
)
# Never handed to the local stack: real AWS credentials or profiles must not reach moto's clients.
_AWS_SCRUB = ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_DEFAULT_PROFILE")

# As template.yaml's Globals set them: one service name, so local metrics look like deployed ones.
POWERTOOLS_ENV = {
    "POWERTOOLS_SERVICE_NAME": "leadqual",
    "POWERTOOLS_METRICS_NAMESPACE": "Leadqual",
    "POWERTOOLS_LOG_LEVEL": "INFO",
}

log = logging.getLogger("local.stack")  # not under "leadqual": Powertools owns that logger


class StackError(RuntimeError):
    """A component failed to start or died; `log_tail` is the end of its log."""

    def __init__(self, component: str, reason: str, log_tail: str = "", log_path: Path | None = None) -> None:
        where = f" (log: {log_path})" if log_path else ""
        tail = f"\n--- last lines of its log ---\n{log_tail.rstrip()}" if log_tail.strip() else ""
        super().__init__(f"{component}: {reason}{where}{tail}")
        self.component = component
        self.reason = reason
        self.log_tail = log_tail
        self.log_path = log_path


class MissingKey(ValueError):
    """`--engine gemini|openai` without its API key in the environment."""

    def __init__(self, engine: str, variable: str) -> None:
        super().__init__(
            f"--engine {engine} uses the real service and needs {variable} in the environment "
            f"(export {variable}=…); it is not set. Run without --engine (or --engine local) "
            "for the offline engine, which needs no key."
        )
        self.engine = engine
        self.variable = variable


def check_engine_keys(engine: str, environ: Mapping[str, str] | None = None) -> None:
    """Raise MissingKey when a real engine is chosen without its key (say so before starting anything)."""
    env = os.environ if environ is None else environ
    variable = ENGINE_KEYS.get(engine)
    if variable and not env.get(variable, "").strip():
        raise MissingKey(engine, variable)


@dataclass(frozen=True)
class Endpoints:
    """What `leadqual local up` prints: enough for other tools (and `aws --endpoint-url`) to drive it."""

    api_url: str
    voice_url: str
    events_url: str
    bridge_url: str
    sautikit_url: str
    sautikit_api_key: str
    webhook_secret: str
    from_number: str
    queue_url: str
    table: str
    aws_endpoint_url: str
    dlq_url: str
    idempotency_table: str
    region: str
    run_dir: str
    logs_dir: str
    campaigns_dir: str

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class StackOptions:
    run_dir: Path = DEFAULT_RUN_DIR
    directory: Path = DEFAULT_DIRECTORY
    # Campaign files to serve besides the built-in ones; each is available under its own `id`.
    campaigns: list[Path] = field(default_factory=lambda: [DEFAULT_CAMPAIGN])
    engine: str = "local"
    max_concurrent_calls: int = 20
    from_number: str = FROM_NUMBER
    ready_timeout_s: float = 180.0  # the bridge loads its speech models before it reports ready
    environ: Mapping[str, str] | None = None  # where engine keys are read from (default os.environ)
    # False reproduces SAUTIKIT.md §7.3 in the simulator: no verb after <Stream connect="true"> runs.
    verbs_after_stream: bool = True


# ----------------------------------------------------------------------------- helpers


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the component binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 16_000))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _parent_death_signal() -> Callable[[], None] | None:
    """preexec_fn that asks Linux to SIGTERM the child when the thread that started it dies, so
    even a SIGKILLed stack leaves no orphans. libc is loaded here, in the parent: the function
    that runs between fork and exec makes one C call and takes no Python locks."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)

    return preexec


def aws_env(endpoint: str) -> dict[str, str]:
    """What points a process's boto3 at a moto server (test credentials, the stack's region)."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
    }


class _Sink:
    """A stand-in for stdout while the stack runs: Powertools logs and EMF metrics that the
    in-process handlers print go to the Lambda log file, not onto the terminal or the endpoints line.
    After the stack stops, late writers (a logger that kept a reference) write nowhere."""

    def __init__(self) -> None:
        self.target: IO[str] | None = None
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            if self.target is not None and not self.target.closed:
                self.target.write(text)
        return len(text)

    def flush(self) -> None:
        with self._lock:
            if self.target is not None and not self.target.closed:
                self.target.flush()

    def isatty(self) -> bool:
        return False

    @property
    def encoding(self) -> str:
        return "utf-8"


_SINK = _Sink()


# ----------------------------------------------------------------------------- subprocess components


class Component:
    """One subprocess of the stack with its own log file and process group."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_path: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = dict(env)
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> Component:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the process
        self.proc = subprocess.Popen(  # noqa: S603 - our own interpreter running our own modules
            self.argv,
            env=self.env,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            # Its own session: a terminal's Ctrl-C reaches only the stack, which stops components in order.
            start_new_session=True,
            preexec_fn=_parent_death_signal(),  # one C call between fork and exec, see the function
        )
        log.info("started %s pid=%s", self.name, self.proc.pid)
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self, reason: str) -> StackError:
        return StackError(self.name, reason, tail(self.log_path), self.log_path)

    def check(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise self.failure(f"exited with status {self.proc.returncode}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM, wait up to `timeout_s`, then SIGKILL the whole process group."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0f s; killing it", self.name, timeout_s)
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if proc is not None:
            # Anything it started in its group (it should have none) goes with it.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None


# ----------------------------------------------------------------------------- the stack


class LocalStack:
    """Start with `start()` (or `with`); `close()` stops everything, in order, idempotently."""

    def __init__(self, options: StackOptions | None = None) -> None:
        self.options = options or StackOptions()
        self.run_dir = Path(self.options.run_dir).resolve()
        self.logs_dir = self.run_dir / "logs"
        self.sim_data_dir = self.run_dir / "sautikit"
        self.campaigns_dir = self.run_dir / "campaigns"
        self.api_key = f"sk_test_{secrets.token_hex(12)}"
        self.webhook_secret = secrets.token_hex(24)
        self.bridge_token_secret = secrets.token_hex(24)
        self.endpoints: Endpoints | None = None
        self.components: list[Component] = []
        self.sim: Component | None = None
        self.bridge: Component | None = None
        self.api: ApiGatewayEmulator | None = None
        self.poller: SqsPoller | None = None
        self.dynamodb: Any = None
        self.sqs: Any = None
        self.store: Any = None
        self.resources: Any = None
        self.handler_env: dict[str, str] = {}
        self._http = httpx.Client(timeout=10.0, trust_env=False)
        self._exit = contextlib.ExitStack()
        self._saved_env: dict[str, str | None] = {}
        self._saved_stdout: Any = None
        self._log_handler: logging.Handler | None = None
        self._lambda_log: IO[str] | None = None
        self._handlers: dict[str, Handler] = {}
        self._repointed: list[tuple[logging.StreamHandler[Any], Any]] = []
        self._closed = False

    # -- life ---------------------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> Endpoints:
        opts = self.options
        if opts.engine not in ENGINES:
            raise ValueError(f"unknown engine {opts.engine!r}; one of {', '.join(ENGINES)}")
        check_engine_keys(opts.engine, opts.environ)
        try:
            # Before anything imports Powertools (its logger reads these once, when it is made).
            self._set_env({**POWERTOOLS_ENV, **dict.fromkeys(_AWS_SCRUB)})
            self._prepare_dirs()
            self._capture_logs()
            aws_endpoint = self._exit.enter_context(moto_server())
            self._aws(aws_endpoint)
            sim_port, bridge_port = free_port(), free_port()
            # The emulator binds now, so its URL is known before the simulator is told where to call.
            self.api = ApiGatewayEmulator(
                {
                    "POST /voice": self._route("voice"),
                    "POST /events": self._route("events"),
                    "POST /stream-status": self._route("events"),
                }
            ).start()  # serving at once, so close() can always shut it down; routes answer once handlers load
            api_url = self.api.url
            sautikit_url = f"http://127.0.0.1:{sim_port}"
            bridge_url = f"ws://127.0.0.1:{bridge_port}/stream"
            self.endpoints = Endpoints(
                api_url=api_url,
                voice_url=f"{api_url}/voice",
                events_url=f"{api_url}/events",
                bridge_url=bridge_url,
                sautikit_url=sautikit_url,
                sautikit_api_key=self.api_key,
                webhook_secret=self.webhook_secret,
                from_number=opts.from_number,
                queue_url=self.resources.queue_url,
                table=self.resources.table_name,
                aws_endpoint_url=aws_endpoint,
                dlq_url=self.resources.dlq_url,
                idempotency_table=self.resources.idempotency_table_name,
                region=REGION,
                run_dir=str(self.run_dir),
                logs_dir=str(self.logs_dir),
                campaigns_dir=str(self.campaigns_dir),
            )
            base_env = self._base_env(aws_endpoint)
            self.sim = self._start_simulator(base_env, sim_port)
            self.bridge = self._start_bridge(base_env, bridge_port)
            self._wait_ready()
            self._start_lambda_side(aws_endpoint)
        except BaseException:
            self.close()
            raise
        log.info("local stack up: %s", json.dumps(self.endpoints.as_dict()))
        return self.endpoints

    def close(self) -> None:
        """Stop everything: poller and API first (no new work), then the bridge (drains its calls),
        the simulator, moto; restore the environment and stdout. Safe to call twice."""
        if self._closed:
            return
        self._closed = True
        with signals_deferred():
            self._close()

    def _close(self) -> None:
        if self.poller is not None:
            with contextlib.suppress(Exception):
                self.poller.close()
        if self.api is not None:
            with contextlib.suppress(Exception):
                self.api.close()
        for component in reversed(self.components):
            try:
                component.stop()
            except Exception:
                log.exception("stopping %s failed", component.name)
        with contextlib.suppress(Exception):
            self._exit.close()
        self._http.close()
        self._restore_env()
        self._release_logs()

    def check(self) -> None:
        """Raise StackError if a subprocess has died (a demo polls this while it waits)."""
        for component in self.components:
            component.check()

    # -- pieces -------------------------------------------------------------------------------------

    def _prepare_dirs(self) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for stale in ("calls",):
            shutil.rmtree(self.sim_data_dir / stale, ignore_errors=True)
        self.sim_data_dir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.campaigns_dir, ignore_errors=True)
        self.campaigns_dir.mkdir(parents=True)
        from leadqual.campaign import load_campaign

        for path in self.options.campaigns:
            campaign = load_campaign(path)  # validated now: a bad file fails before anything starts
            shutil.copyfile(path, self.campaigns_dir / f"{campaign.id}.yaml")
        for log_file in self.logs_dir.glob("*.log"):
            log_file.unlink()

    def _capture_logs(self) -> None:
        """This process's own logging (moto, the runtime, the handlers) goes to logs/stack.log and
        logs/lambda.log; stdout belongs to the user (the endpoints line, the demo's table)."""
        # First the sink, so loggers made from here on (Powertools' at import) write into it.
        self._lambda_log = open(self.logs_dir / "lambda.log", "a", encoding="utf-8", buffering=1)  # noqa: SIM115 - open for the stack's life, closed in stop()
        _SINK.target = self._lambda_log
        self._saved_stdout = sys.stdout
        sys.stdout = _SINK  # type: ignore[assignment]  # a writable text sink is all print() needs
        self._repoint_stdout_handlers()
        handler = logging.FileHandler(self.logs_dir / "stack.log", encoding="utf-8")
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        with contextlib.suppress(ImportError):
            from leadqual.observability import install_masking

            install_masking(handler)
        self._repoint_stdout_handlers()
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        for noisy in ("werkzeug", "botocore", "boto3", "urllib3", "httpx", "httpcore", "moto"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self._log_handler = handler

    def _repoint_stdout_handlers(self) -> None:
        """Loggers made before the stack started (Powertools' logger is made at import) hold the
        real stdout; point them at the Lambda log too, and back on close()."""
        loggers = [logging.getLogger()] + [
            lg for lg in logging.Logger.manager.loggerDict.values() if isinstance(lg, logging.Logger)
        ]
        originals = (self._saved_stdout, sys.__stdout__)
        for lg in loggers:
            for handler in lg.handlers:
                if any(handler is done for done, _ in self._repointed):
                    continue
                if type(handler) is logging.StreamHandler and any(
                    handler.stream is o for o in originals if o is not None
                ):
                    self._repointed.append((handler, handler.setStream(_SINK)))  # type: ignore[arg-type] - _SINK is file-like

    def _release_logs(self) -> None:
        for handler, stream in self._repointed:
            handler.setStream(stream)
        self._repointed.clear()
        if self._saved_stdout is not None:
            sys.stdout = self._saved_stdout
            self._saved_stdout = None
        _SINK.target = None
        if self._lambda_log is not None:
            self._lambda_log.close()
            self._lambda_log = None
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None

    def _aws(self, endpoint: str) -> None:
        import boto3

        from leadqual.store import DynamoStore
        from local.resources import create_resources

        kwargs = {
            "endpoint_url": endpoint,
            "region_name": REGION,
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
        }
        self.dynamodb = boto3.client("dynamodb", **kwargs)
        self.sqs = boto3.client("sqs", **kwargs)
        self.resources = create_resources(self.dynamodb, self.sqs, stack_name="leadqual-local", region=REGION)
        self.store = DynamoStore(self.resources.table_name, client=self.dynamodb)

    def _base_env(self, aws_endpoint: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in _AWS_SCRUB}
        env.update(aws_env(aws_endpoint))
        env["PYTHONUNBUFFERED"] = "1"
        # The repository first, so `python -m bridge` / `-m local.sautikit` are this checkout's.
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO), str(REPO / "layers" / "shared"), env.get("PYTHONPATH", "")) if p
        )
        return env

    def _start_simulator(self, base_env: Mapping[str, str], port: int) -> Component:
        assert self.endpoints is not None
        ep = self.endpoints
        argv = [
            sys.executable,
            "-m",
            "local.sautikit",
            "--directory",
            str(Path(self.options.directory).resolve()),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--api-key",
            self.api_key,
            "--webhook-secret",
            self.webhook_secret,
            # The number's routing points at our webhooks, as the routing custom resource does on deploy.
            "--number",
            f"{self.options.from_number},{ep.voice_url},{ep.events_url}",
            "--data-dir",
            str(self.sim_data_dir),
        ]
        if not self.options.verbs_after_stream:
            argv.append("--no-verbs-after-stream")
        component = Component("sautikit simulator", argv, base_env, self.logs_dir / "sautikit.log")
        self.components.append(component)
        return component.start()

    def _start_bridge(self, base_env: Mapping[str, str], port: int) -> Component:
        assert self.endpoints is not None
        opts = self.options
        source = os.environ if opts.environ is None else opts.environ
        env = dict(base_env)
        for name in BRIDGE_PASSTHROUGH:
            env.pop(name, None)
            if source.get(name):
                env[name] = source[name]
        env.update(
            {
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "ENGINE": opts.engine,
                "TABLE_NAME": self.resources.table_name,
                "BRIDGE_TOKEN_SECRET": self.bridge_token_secret,
                "SAUTIKIT_BASE_URL": self.endpoints.sautikit_url,
                "SAUTIKIT_API_KEY": self.api_key,
                "FROM_NUMBER": opts.from_number,
                "CAMPAIGNS_DIR": str(self.campaigns_dir),
                "DRAIN_SECONDS": "2",  # on Ctrl-C live calls get 2 s, then the bridge hangs them up
                **POWERTOOLS_ENV,
                "STAGE": "local",
            }
        )
        argv = [sys.executable, "-m", "bridge"]
        component = Component("bridge", argv, env, self.logs_dir / "bridge.log")
        self.components.append(component)
        return component.start()

    def _wait_ready(self) -> None:
        assert self.endpoints is not None
        assert self.sim is not None
        assert self.bridge is not None
        bridge_health = self.endpoints.bridge_url.replace("ws://", "http://").removesuffix("/stream")
        waiting = {
            self.sim: f"{self.endpoints.sautikit_url}/_sim/health",
            self.bridge: f"{bridge_health}/healthz",
        }
        deadline = time.monotonic() + self.options.ready_timeout_s
        while waiting:
            for component, url in list(waiting.items()):
                component.check()
                with contextlib.suppress(httpx.HTTPError):
                    if self._http.get(url, timeout=2.0).status_code == 200:
                        log.info("%s ready", component.name)
                        del waiting[component]
            if not waiting:
                return
            if time.monotonic() > deadline:
                component = next(iter(waiting))
                raise component.failure(
                    f"not ready after {self.options.ready_timeout_s:.0f} s ({waiting[component]})"
                )
            time.sleep(0.2)

    def _start_lambda_side(self, aws_endpoint: str) -> None:
        """The handlers run here, configured as the template configures them in AWS."""
        assert self.endpoints is not None
        assert self.api is not None
        ep, opts, res = self.endpoints, self.options, self.resources
        env = {
            **aws_env(aws_endpoint),
            "STAGE": "local",
            "TABLE_NAME": res.table_name,
            "IDEMPOTENCY_TABLE": res.idempotency_table_name,
            "SAUTIKIT_BASE_URL": ep.sautikit_url,
            "SAUTIKIT_API_KEY": self.api_key,
            "WEBHOOK_SECRET": self.webhook_secret,
            "BRIDGE_TOKEN_SECRET": self.bridge_token_secret,
            "BRIDGE_URL": ep.bridge_url,
            "FROM_NUMBER": opts.from_number,
            "NUMBER_ID": NUMBER_ID,
            "CAMPAIGNS_DIR": str(self.campaigns_dir),
            "MAX_CONCURRENT_CALLS": str(opts.max_concurrent_calls),
            "QUEUE_URL": res.queue_url,
            "VOICE_WEBHOOK_URL": ep.voice_url,
            "EVENTS_WEBHOOK_URL": f"{ep.api_url}/stream-status",
            **POWERTOOLS_ENV,
        }
        self.handler_env = env
        # The handlers read settings from the environment on their first invocation, as in Lambda;
        # the previous values come back on close().
        self._set_env(env)
        self._handlers = {
            "voice": _load_handler("functions.voice.app"),
            "events": _load_handler("functions.events.app"),
            "dialer": _load_handler("functions.dialer.app"),
        }
        self._repoint_stdout_handlers()
        self.poller = SqsPoller(
            self.sqs,
            res.queue_url,
            self._handlers["dialer"],
            function_name="dialer",
            batch_size=10,  # the template's BatchSize
            wait_s=1,
            timeout_s=60.0,  # the dialer's Timeout in template.yaml
        ).start()

    def _route(self, name: str) -> Handler:
        def invoke(event: dict[str, Any], context: Any) -> Any:
            handler = self._handlers.get(name)
            if handler is None:  # a request before the Lambda side is up: API Gateway would answer 503
                return {"statusCode": 503, "body": '{"message":"Service Unavailable"}'}
            return handler(event, context)

        return invoke

    def _set_env(self, values: Mapping[str, str | None]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    # -- inspection ---------------------------------------------------------------------------------

    def sim_get(self, path: str) -> Any:
        """GET a simulator inspection path (`/_sim/calls`, `/_sim/violations`, …) as JSON."""
        assert self.endpoints is not None
        resp = self._http.get(f"{self.endpoints.sautikit_url}{path}", timeout=10.0)
        resp.raise_for_status()
        return resp.json()

    def sim_calls(self) -> list[dict[str, Any]]:
        return list(self.sim_get("/_sim/calls").get("calls", []))

    def sim_violations(self) -> list[dict[str, Any]]:
        return list(self.sim_get("/_sim/violations").get("violations", []))

    def pids(self) -> list[int]:
        return [c.pid for c in self.components if c.pid is not None]


def _load_handler(module_name: str) -> Handler:
    import importlib

    module = importlib.import_module(module_name)
    # Handlers cache their adapters per container (module level, built on the first invocation);
    # a new stack in the same process is a new container, so it starts without them.
    for cached in ("_deps", "_runner"):
        if hasattr(module, cached):
            setattr(module, cached, None)
    handler = getattr(module, "lambda_handler", None)
    if not callable(handler):
        raise StackError(module_name, "has no lambda_handler")
    return handler  # type: ignore[no-any-return] - checked callable above


# ----------------------------------------------------------------------------- signals


@contextlib.contextmanager
def interrupt_on_signals() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (KeyboardInterrupt), so `finally:` blocks stop the stack either way."""

    def on_signal(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """While the stack stops, one more Ctrl-C (or SIGTERM) must not cut the cleanup short; a second
    one does (the children still go: they get SIGTERM when their parent dies). Main thread only."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    seen = 0

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal seen
        seen += 1
        if seen >= 2:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


# ----------------------------------------------------------------------------- CLI: leadqual local up


def usage_hint(ep: Endpoints) -> str:
    """How to drive the running stack from another terminal (stderr; stdout has only the JSON line)."""
    return (
        f"local stack up; logs in {ep.logs_dir}. From another shell:\n"
        f"  export AWS_ENDPOINT_URL={ep.aws_endpoint_url} AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test "
        f"AWS_DEFAULT_REGION={ep.region} QUEUE_URL={ep.queue_url} TABLE_NAME={ep.table} "
        f"CAMPAIGNS_DIR={ep.campaigns_dir}\n"
        "  leadqual enqueue local/data/leads.csv --campaign demo      # or: aws sqs send-message "
        "--queue-url $QUEUE_URL --message-body '{\"lead_id\": …}'\n"
        "  leadqual report --format json\n"
        "Ctrl-C stops it."
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["up"], help="`up`: start the stack and serve until Ctrl-C")
    parser.add_argument("--directory", type=Path, default=DEFAULT_DIRECTORY, help="simulated phones (YAML)")
    parser.add_argument(
        "--campaign",
        type=Path,
        action="append",
        default=None,
        help="a campaign file to serve (repeatable; default local/data/campaign.yaml, id `demo`); "
        "the built-in `example` campaign is always there",
    )
    parser.add_argument("--engine", choices=ENGINES, default="local", help="the bridge's engine")
    parser.add_argument("--run-dir", type=Path, default=DEFAULT_RUN_DIR, help="logs, recordings, campaigns")
    parser.add_argument("--max-concurrent-calls", type=int, default=20)


def run(args: argparse.Namespace) -> int:
    out = sys.stdout
    options = StackOptions(
        run_dir=args.run_dir,
        directory=args.directory,
        campaigns=list(args.campaign or [DEFAULT_CAMPAIGN]),
        engine=args.engine,
        max_concurrent_calls=args.max_concurrent_calls,
    )
    try:
        check_engine_keys(options.engine)
    except MissingKey as exc:
        print(f"leadqual local up: {exc}", file=sys.stderr)
        return 2
    stack = LocalStack(options)
    try:
        with interrupt_on_signals():
            try:
                endpoints = stack.start()
            except StackError as exc:
                print(f"leadqual local up: {exc}", file=sys.stderr)
                return 1
            out.write(json.dumps(endpoints.as_dict()) + "\n")
            out.flush()
            print(usage_hint(endpoints), file=sys.stderr, flush=True)
            while True:
                time.sleep(1.0)
                try:
                    stack.check()
                except StackError as exc:
                    print(f"leadqual local up: {exc}", file=sys.stderr)
                    return 1
    except KeyboardInterrupt:
        print("stopping the local stack…", file=sys.stderr)
    finally:
        stack.close()
    print("local stack stopped", file=sys.stderr)
    return 0
