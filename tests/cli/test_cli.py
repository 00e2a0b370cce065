"""The command line: a bad input or an unreachable service is one line, a non-zero exit, no traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from ..conftest import free_port


def repmon(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "COLUMNS": "80", **(env or {})},
    )


def test_version() -> None:
    out = repmon("--version")
    assert out.returncode == 0 and out.stdout.startswith("repmon ")


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [
        (["trust", "nobody"], 2, "unknown entity 'nobody': use one of the configured keys: northwind"),
        (["trust", "northwind", "--at", "yesterday"], 2, "--at 'yesterday' is not an ISO time"),
        (["trust", "northwind", "--window", "2h"], 2, "--window must be one of 15m, 1h, 24h, 7d, 30d"),
    ],
)
def test_bad_arguments_name_the_fix(args: list[str], code: int, says: str) -> None:
    out = repmon(*args)
    assert out.returncode == code, out
    assert says in out.stderr and "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1, out.stderr


@pytest.mark.parametrize("command", [["worker"], ["trust", "northwind"]])
def test_an_unreachable_redis_is_one_line_naming_it(command: list[str]) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    out = repmon(*command, env={"REPMON_REDIS__URL": url, "REPMON_AUTHOR_KEY_SECRET": "s"})
    assert out.returncode == 1, out
    assert f"Redis at {url} is not reachable" in out.stderr and "REPMON_REDIS__URL" in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_config_with_a_bad_key_names_it(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = tmp_path / "c.toml"
    cfg.write_text('[[entities]]\nname = "Acme"\n[windows]\nbucket_secs = 60\n')
    out = repmon("trust", "acme", "--config", str(cfg))
    assert out.returncode == 2 and "windows.bucket_secs" in out.stderr and "Traceback" not in out.stderr


def test_the_worker_refuses_the_default_pseudonym_key() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "REPMON_AUTHOR_KEY_SECRET"}
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "worker"], capture_output=True, text=True, timeout=120, env=env
    )
    assert out.returncode == 2 and "REPMON_AUTHOR_KEY_SECRET is not set" in out.stderr
    assert "openssl rand" in out.stderr and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_a_bad_log_format_is_one_line() -> None:
    out = repmon("worker", "--log-format", "xml", env={"REPMON_AUTHOR_KEY_SECRET": "s"})
    assert out.returncode == 2 and "--log-format 'xml' is not text or json" in out.stderr, out
    assert len(out.stderr.strip().splitlines()) == 1


def test_backtest_json_goes_to_stdout_and_its_progress_to_stderr(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    from pathlib import Path

    rows = [
        {"reviewText": "broke" if i % 4 == 0 else "fine", "overall": 5 - (i % 4 == 0) * 3, "asin": "P1"}
        | {"unixReviewTime": 1_600_000_000 + i * 86400, "reviewerID": f"r{i}"}
        for i in range(90)
    ]
    data = tmp_path / "reviews.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    product = '[[entities]]\nname = "p1"\nkind = "product"\nbrand = "acme"\n'
    (tmp_path / "c.toml").write_text('[[entities]]\nname = "acme"\n' + product)
    mapping = Path(__file__).resolve().parents[2] / "infra" / "config" / "replay" / "amazon_reviews_5core.toml"
    out = repmon("backtest", str(data), "--mapping", str(mapping), "--config", str(tmp_path / "c.toml"), "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["events"] == 90 and report["span"][0] < report["span"][1]
    assert "backtest" in out.stderr and "90/90" in out.stderr, out.stderr
