"""``repmon demo --browser``: the demo on the embedded default with the incidents page open in
Debian's headless chromium; the crisis appears there without a reload."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT
from tools.browser import missing

pytestmark = [pytest.mark.embedded, pytest.mark.browser]


def test_the_demo_crisis_appears_on_the_open_page_without_a_reload() -> None:
    why = missing()
    if why is not None:
        pytest.fail(why)
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("REPMON_CONFIG", "REPMON_REDIS__URL", "REPMON_KAFKA__BOOTSTRAP")
    }
    out = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--browser", "--json"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    page = summary["browser"]
    assert page["incidents_on_page"] >= 1 and page["reloaded"] is False, page
    # every row appeared after its message was published (one machine's clock, to the ms), within seconds
    lags = page["visible_after_published_s"]
    assert lags and all(-0.01 <= x < 10 for x in lags), page
    assert os.path.getsize(page["screenshot"]) > 10_000
