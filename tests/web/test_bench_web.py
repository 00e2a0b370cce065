"""``repmon bench --web`` end to end on the embedded broker and Redis, with the page measured in
Debian's chromium: every live client gets every message, the mention stream sends at most its
per-second sample, and the open page holds a bounded number of rows and stays live."""

from __future__ import annotations

import pytest
from rich.console import Console

from infra.settings import load_settings
from tools.bench_web import bench_web
from tools.browser import missing

pytestmark = [pytest.mark.embedded, pytest.mark.browser]


def test_bench_web_measures_clients_stream_and_the_page_in_a_browser() -> None:
    why = missing()
    if why is not None:
        pytest.fail(why)
    settings = load_settings(None, web={"stream_per_second": 40})
    out = bench_web(
        settings, clients=3, incidents=3, rate=400, seconds=2, page_seconds=10, console=Console(stderr=True)
    )
    live, stream, page = out["live_clients"], out["mention_stream"], out["page_in_browser"]
    assert live["deliveries"] == live["expected_deliveries"] == 9
    assert stream["matched_by_server"] == stream["sent"] > 0 and stream["max_items_sent_per_frame"] <= 40
    # 40 a second for 10 s is some 400 rows sent: the page keeps its newest 300
    assert page["still_live"] and page["rows_in_page"] == 300, page
    # measured on the page while it drew the stream: a main thread held for a second is not responsive
    assert page["timer_late_ms_max"] < 1000 and 0 < page["script_round_trip_ms_max"] < 1000, page
    assert page["long_tasks"] is not None
