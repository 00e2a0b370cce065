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
    port = worker["environment"]["REPMON_WORKER__METRICS_PORT"]
    assert worker["environment"]["REPMON_WORKER__METRICS_ADDR"] == "0.0.0.0"
    assert f"127.0.0.1:{port}:{port}" in worker["ports"]
    assert services["kafka"]["healthcheck"]["test"] and services["redis"]["healthcheck"]["test"]
    assert "process.roles" not in str(kafka_env) and kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_mounted_files_exist_and_config_loads() -> None:
    services = load()["services"]
    for name in ("worker", "connector"):
        for vol in services[name].get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./infra/"):
                assert (ROOT / src).exists(), src
    cfg = next(v.split(":")[0] for v in services["worker"]["volumes"] if v.endswith("/config/repmon.toml:ro"))
    assert load_settings(ROOT / cfg).entities


def test_no_secrets_in_compose() -> None:
    text = (ROOT / "docker-compose.yml").read_text().lower()
    assert "hooks.slack.com" not in text and "password" not in text
    assert "${repmon_author_key_secret" in text  # taken from the environment
