"""The local stack's worker environment: what it sets for the embedded broker, and what it leaves to
the user's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.settings import Settings, load_settings
from tools.stack import EMBEDDED_SESSION_TIMEOUT_S, LocalStack


def _env(settings: Settings, tmp_path: Path, **kw: object) -> dict[str, str]:
    stack = LocalStack(settings, tmp_path, **kw)  # type: ignore[arg-type]
    stack.bootstrap, stack.redis_url = "127.0.0.1:1", "redis://127.0.0.1:2/0"
    return stack.worker_environment()


def test_the_workers_get_a_short_group_session_unless_the_settings_name_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("REPMON_KAFKA__SESSION_TIMEOUT_SECONDS", raising=False)
    env = _env(load_settings(), tmp_path)
    assert env["REPMON_KAFKA__SESSION_TIMEOUT_SECONDS"] == str(EMBEDDED_SESSION_TIMEOUT_S)
    assert float(env["REPMON_KAFKA__SESSION_TIMEOUT_SECONDS"]) < load_settings().kafka.session_timeout_seconds

    # from a config file or the environment: the user's value stands
    assert "REPMON_KAFKA__SESSION_TIMEOUT_SECONDS" not in _env(
        load_settings(kafka={"session_timeout_seconds": 45}), tmp_path
    )
    monkeypatch.setenv("REPMON_KAFKA__SESSION_TIMEOUT_SECONDS", "30")
    assert load_settings().kafka.session_timeout_seconds == 30
    assert "REPMON_KAFKA__SESSION_TIMEOUT_SECONDS" not in _env(load_settings(), tmp_path)
    # the caller's own variables still win over the stack's
    env = _env(load_settings(), tmp_path, env={"REPMON_KAFKA__SESSION_TIMEOUT_SECONDS": "7"})
    assert env["REPMON_KAFKA__SESSION_TIMEOUT_SECONDS"] == "7"


def test_the_workers_point_at_the_stack_with_its_prefix(tmp_path: Path) -> None:
    env = _env(load_settings(), tmp_path, prefix="bench-x", routes=[{"name": "r", "urls": ["json://127.0.0.1:9/"]}])
    assert env["REPMON_KAFKA__BOOTSTRAP"] == "127.0.0.1:1"
    assert env["REPMON_REDIS__URL"] == "redis://127.0.0.1:2/0"
    assert env["REPMON_KAFKA__TOPIC_PREFIX"] == env["REPMON_APP_ID"] == env["REPMON_REDIS__KEY_PREFIX"] == "bench-x"
    assert '"name": "r"' in env["REPMON_ALERTS__ROUTES"]


def test_cpu_seconds_are_read_per_process_and_divided_per_event() -> None:
    import os
    import time

    from tools.bench import _cpu_per_event
    from tools.stack import cpu_seconds

    before = cpu_seconds(os.getpid())
    end = time.process_time() + 0.3
    while time.process_time() < end:  # burn CPU in this process, measured from /proc
        pass
    assert cpu_seconds(os.getpid()) - before >= 0.2
    assert cpu_seconds(2**22 + 7) == 0.0  # beyond pid_max: no such process
    per = _cpu_per_event({"workers": 1.0, "broker": 0.5}, {"workers": 3.0, "broker": 0.7, "bench": 0.1}, 1000)
    assert per == {"workers": 2000.0, "broker": 200.0, "bench": 100.0, "all": 2300.0}
    assert _cpu_per_event({}, {"workers": 1.0}, 0) is None
