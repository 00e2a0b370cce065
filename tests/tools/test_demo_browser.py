"""``repmon demo --browser``: the demo on the embedded default with the incidents page open in
Debian's headless chromium; the crisis appears there without a reload. The same run stays up
(``REPMON_DEMO_WEB_STAY``) after the replay: the war room still answers, then is gone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading

import httpx
import pytest

from tests.conftest import ROOT
from tools.browser import missing

pytestmark = [pytest.mark.embedded, pytest.mark.browser]

STAY_SECONDS = 8  # room for a few requests on a loaded host; the test waits for the exit anyway


def test_the_demo_crisis_appears_on_the_open_page_without_a_reload_and_stays_up() -> None:
    why = missing()
    if why is not None:
        pytest.fail(why)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REPMON_CONFIG", "REPMON_REDIS__URL", "REPMON_KAFKA__BOOTSTRAP")
        and not k.startswith("REPMON_WEB_")  # no tokens: the demo's war room is open on loopback
    }
    # COLUMNS: rich must not wrap the line that names the URL
    env |= {"REPMON_DEMO_WEB_STAY": str(STAY_SECONDS), "COLUMNS": "400"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cli.main", "demo", "--browser", "--json"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    staying = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "stays up at" in line:
                staying.set()
        staying.set()  # the demo ended without staying: the assertion below says so

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert staying.wait(600), "no demo output within 600 s"
        said = next((ln for ln in lines if "stays up at" in ln), None)
        assert said is not None, "".join(lines)[-3000:]
        url = re.search(r"stays up at (http://\S+)", said).group(1)  # type: ignore[union-attr]
        assert f"for {STAY_SECONDS} s" in said
        # after the replay (the summary is printed, the worker stopped) the pages still answer
        assert proc.poll() is None
        assert "done" in "".join(lines)
        page = httpx.get(f"{url}/", timeout=5)
        assert page.status_code == 200 and 'data-incident-id="' in page.text
        assert any(r["entity"] == "northwind" for r in httpx.get(f"{url}/api/v1/incidents", timeout=5).json())
        assert proc.wait(timeout=STAY_SECONDS + 60) == 0, "".join(lines)[-3000:]
        assert proc.stdout is not None
        stdout = proc.stdout.read()  # one summary line: it never filled the pipe
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    reader.join(10)
    with pytest.raises(httpx.ConnectError):  # and once the stay is over, the war room is gone
        httpx.get(f"{url}/healthz", timeout=5)
    summary = json.loads(stdout.strip().splitlines()[-1])
    page_report = summary["browser"]
    assert page_report["incidents_on_page"] >= 1 and page_report["reloaded"] is False, page_report
    # every row appeared after its message was published (one machine's clock, to the ms), within seconds
    lags = page_report["visible_after_published_s"]
    assert lags and all(-0.01 <= x < 10 for x in lags), page_report
    assert os.path.getsize(page_report["screenshot"]) > 10_000
