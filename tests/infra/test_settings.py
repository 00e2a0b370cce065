from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import DEFAULT_CONFIG, ConfigError, load_settings

GOOD = """
app_id = "t"
[[entities]]
name = "Acme"
handles = ["@acme"]
[[entities]]
name = "Rocket"
kind = "product"
brand = "Acme"
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.toml"
    p.write_text(text)
    return p


def test_bundled_configs_load() -> None:
    s = load_settings(DEFAULT_CONFIG)
    assert [e.key for e in s.entities] == ["northwind", "northwind/go app", "skyline"]
    airlines = load_settings(DEFAULT_CONFIG.parent / "airlines.toml")
    assert len(airlines.entities) == 7


def test_product_key_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPMON_KAFKA__BOOTSTRAP", "kafka:29092")
    monkeypatch.setenv("REPMON_DETECT__Z_THRESHOLD", "6.5")
    s = load_settings(write(tmp_path, GOOD + "\n[kafka]\nbootstrap = 'file:1'\n"))
    assert s.entity("acme/rocket") is not None
    assert s.kafka.bootstrap == "kafka:29092"  # environment beats the file
    assert s.detect.z_threshold == 6.5


def test_entity_lookup_follows_the_entities_it_was_built_from() -> None:
    s = load_settings(None, entities=[{"name": "Acme"}, {"name": "Rocket", "kind": "product", "brand": "Acme"}])
    assert s.entity("acme") is s.entities[0] and s.entity("acme/rocket") is s.entities[1]
    assert s.entity("nobody") is None
    # a copy with other entities carries the private index along: it must not answer from it
    other = s.model_copy(update={"entities": [s.entities[1]]})
    assert other.entity("acme") is None and other.entity("acme/rocket") is s.entities[1]
    s.entities.append(s.entities[1].model_copy(update={"name": "Jet"}))  # the list grows in place
    assert s.entity("acme/jet") is s.entities[2]


def test_env_routes_as_json(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPMON_ALERTS__ROUTES", '[{"name": "r", "urls": ["json://127.0.0.1:9/x"]}]')
    s = load_settings(write(tmp_path, GOOD + "\n[alerts]\ncooldown_seconds = 5\n"))
    assert s.alerts.routes[0].urls == ["json://127.0.0.1:9/x"]
    assert s.alerts.cooldown_seconds == 5


@pytest.mark.parametrize(
    ("extra", "key", "fix"),
    [
        ("\n[windows]\nbucket_secs = 60\n", "windows.bucket_secs", "remove `windows.bucket_secs`"),
        ("\n[detect]\nz_threshold = -1\n", "detect.z_threshold", "REPMON_DETECT__Z_THRESHOLD"),
        ("\n[redis]\nurl = 'localhost:6379'\n", "redis.url", "redis://"),
        ("\n[[alerts.routes]]\nname = 'x'\nurls = ['not-a-url']\n", "alerts.routes.0.urls", "scheme://"),
        ("\n[nlp]\nprofile = 'turbo'\n", "nlp.profile", "nlp.profile"),
    ],
)
def test_bad_config_names_key_and_fix(tmp_path: Path, extra: str, key: str, fix: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(write(tmp_path, GOOD + extra))
    msg = str(info.value)
    assert key in msg and fix in msg, msg


def test_bad_entities(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="needs `brand"):
        load_settings(write(tmp_path, '[[entities]]\nname = "X"\nkind = "product"\n'))
    with pytest.raises(ConfigError, match="must start with '@'"):
        load_settings(write(tmp_path, '[[entities]]\nname = "X"\nhandles = ["x"]\n'))
    with pytest.raises(ConfigError, match="add `entities`"):
        load_settings(write(tmp_path, 'app_id = "x"\n'))
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(write(tmp_path, "[[entities]\n"))
    with pytest.raises(ConfigError, match="file not found"):
        load_settings(tmp_path / "missing.toml")


def test_bucket_seconds_above_an_hour_is_allowed(tmp_path: Path) -> None:
    """A sparse stream may be judged in daily buckets: no one-hour cap (rollups stay multiples)."""
    day = "\n[windows]\nbucket_seconds = 86400\nrollups_seconds = [86400, 604800]\n"
    assert load_settings(write(tmp_path, GOOD + day)).windows.bucket_seconds == 86400
    with pytest.raises(ConfigError):
        load_settings(write(tmp_path, GOOD + "\n[windows]\nbucket_seconds = 7200\n"))  # 900 s rollup: not a multiple


def test_exactly_once_is_refused_at_start_with_the_reason(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as e:
        load_settings(write(tmp_path, GOOD + "\n[kafka]\nprocessing_guarantee = 'exactly_once'\n"))
    assert "kafka.processing_guarantee" in str(e.value) and "outside Kafka transactions" in str(e.value)


def test_secrets_are_read_from_the_environment_never_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="secrets are not read from files"):
        load_settings(write(tmp_path, 'webhook_secret = "s3cr3t"\n' + GOOD))
    monkeypatch.setenv("REPMON_WEBHOOK_SECRET", "a,b")
    s = load_settings(write(tmp_path, GOOD))
    assert s.webhook_secret is not None and s.webhook_secret.get_secret_value() == "a,b"
    assert "a,b" not in repr(s)  # a secret type: never printed


def test_every_documented_key_is_a_setting() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    table = readme.split("## Configuration reference", 1)[1].split("## Production", 1)[0]
    import re

    from infra.settings import Settings

    for key in re.findall(r"`([a-z_]+\.[a-z_]+)`", table):
        section, name = key.split(".")
        model = Settings.model_fields.get(section)
        assert model is not None and model.annotation is not None, key
        assert name in model.annotation.model_fields, key  # type: ignore[union-attr]
