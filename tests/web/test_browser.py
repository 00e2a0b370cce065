"""The war room in a real browser: Debian's chromium, headless, driven through its chromedriver
(infra/chromium.sh installs both; nothing is downloaded here). The pages run against real Kafka and
Redis; the test run writes the README's screenshots to docs/."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
import redis.asyncio as aredis
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.select import Select

from alerts.dispatch import Dispatcher
from infra.settings import AlertSettings
from streams.windows import RedisWindows
from tests.conftest import ROOT
from tests.web.conftest import ONSET, WRITE_TOKEN, WarRoom, make_event, make_incident, wait_for
from tools.browser import headless_chromium, missing
from tools.receiver import HttpReceiver

pytestmark = [pytest.mark.integration, pytest.mark.browser]

DOCS = ROOT / "docs"


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    why = missing()
    if why is not None:
        pytest.fail(why)
    with headless_chromium() as driver:
        yield driver


def sign_in(driver: WebDriver, war_room: WarRoom) -> None:
    driver.get(f"{war_room.url}/")
    assert "/login" in driver.current_url  # no token yet: the page asks for one
    driver.find_element(By.NAME, "token").send_keys(WRITE_TOKEN)
    driver.find_element(By.CSS_SELECTOR, "form.login button").click()
    wait_for(lambda: driver.current_url.rstrip("/") == war_room.url, what="the incidents page after sign-in")


def live(driver: WebDriver) -> bool:
    return driver.find_element(By.ID, "live-status").text == "live"


def count_crisis(war_room: WarRoom) -> None:
    """Buckets in Redis around the onset, so the chart has a line: quiet, then a negative burst."""

    async def go() -> None:
        r = aredis.Redis.from_url(war_room.redis_url)
        try:
            w = RedisWindows(r, war_room.settings)
            evs = []
            for minute in range(-40, 10):
                neg = 8 if minute >= 0 else (1 if minute % 3 == 0 else 0)
                for i in range(10):
                    label = "negative" if i < neg else "positive"
                    evs.append(
                        make_event(minute * 100 + i, "northwind", label, ONSET + timedelta(minutes=minute, seconds=i))
                    )
            await w.add_batch([(e, 0) for e in evs])
        finally:
            await r.aclose()

    asyncio.run(go())


def test_crisis_appears_live_ack_reaches_redis_and_kafka_silence_holds_the_route(
    war_room: WarRoom, browser: WebDriver
) -> None:
    DOCS.mkdir(exist_ok=True)
    count_crisis(war_room)
    sign_in(browser, war_room)
    wait_for(lambda: live(browser), what="the live stream to connect")
    browser.execute_script("window.__notReloaded = 42;")

    inc = make_incident()
    t0 = time.monotonic()
    war_room.publish("incidents", inc, inc.entity)
    row = wait_for(
        lambda: browser.find_elements(By.CSS_SELECTOR, f'tr[data-incident-id="{inc.incident_id}"]'),
        what="the incident row without a reload",
    )
    shown_after = time.monotonic() - t0
    assert browser.execute_script("return window.__notReloaded;") == 42, "the page reloaded"
    assert "open" in row[0].text and "critical" in row[0].text and "northwind" in row[0].text
    print(f"incident published -> row visible: {shown_after:.3f} s")
    browser.save_screenshot(str(DOCS / "web-incidents.png"))

    # the incident page: the chart of the signal around the onset, with the baseline band
    row[0].find_element(By.CSS_SELECTOR, "a.incident-link").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "svg.chart path.line"), what="the chart")
    d = browser.find_element(By.CSS_SELECTOR, "svg.chart path.line").get_attribute("d") or ""
    assert d.count("L") >= 40, f"the line has too few points: {d[:120]}"
    band = browser.find_element(By.CSS_SELECTOR, "svg.chart polygon.band")
    assert band.size["height"] > 0 and band.size["width"] > 300
    assert browser.find_elements(By.CSS_SELECTOR, "svg.chart path.marker")  # the onset
    wait_for(lambda: live(browser), what="the live stream on the incident page")
    browser.save_screenshot(str(DOCS / "web-incident.png"))

    # acknowledge from the page: Redis has it, the incidents topic has it, the page shows it live
    browser.execute_script("window.__notReloaded = 43;")
    browser.find_element(By.ID, "action-why").send_keys("app team paged")
    browser.find_element(By.ID, "ack").click()
    rc = redis.Redis.from_url(war_room.redis_url)
    try:
        wait_for(
            lambda: rc.hget(f"{war_room.prefix}:ctl:inc:{inc.incident_id}", "state") == b"acknowledged",
            what="the acknowledgement in Redis",
        )
        acts = wait_for(
            lambda: [x for x in war_room.topic_records("incidents") if x.get("kind") == "action"] or None,
            what="the acknowledgement on the incidents topic",
        )
        assert [(a["action"], a["who"], a["incident_id"], a["why"]) for a in acts] == [
            ("acknowledge", "alice", inc.incident_id, "app team paged")
        ]
        wait_for(lambda: browser.find_element(By.ID, "incident-state").text == "acknowledged", what="the new state")
        assert browser.execute_script("return window.__notReloaded;") == 43
        assert "acknowledge by alice" in browser.find_element(By.ID, "timeline").text

        # silence the entity from the page, then page two incidents: the silenced one reaches no one
        browser.find_element(By.CSS_SELECTOR, "#silence-form input[name=comment]").send_keys("known outage")
        browser.find_element(By.CSS_SELECTOR, "#silence-form button").click()
        wait_for(lambda: rc.hlen(f"{war_room.prefix}:ctl:silences") == 1, what="the silence in Redis")
    finally:
        rc.close()
    receiver = HttpReceiver().start()
    try:
        asyncio.run(_page_two(war_room, receiver))
        got = receiver.wait_for(1, 15)
        assert [g.title for g in got] == [got[0].title] and "skyline" in got[0].title.lower()
        assert not [a for a in receiver.attempts if "northwind" in a.title.lower()]
    finally:
        receiver.stop()

    # the entity page and the mention stream, for the README
    browser.get(f"{war_room.url}/entities/northwind")
    wait_for(lambda: len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) == 3, what="the entity charts")
    assert browser.find_element(By.CSS_SELECTOR, "table.trust").text.count("northwind") >= 1
    browser.save_screenshot(str(DOCS / "web-entity.png"))
    browser.get(f"{war_room.url}/mentions?sentiment=negative")
    wait_for(lambda: live(browser), what="the mention stream to connect")
    for i in range(30):
        ev = make_event(5000 + i, "northwind" if i % 2 else "skyline", "negative" if i % 3 else "positive", ONSET)
        war_room.publish("enriched", ev, ev.entity or "")
    items = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#stream li"), what="streamed mentions")
    assert all("negative" in li.text for li in items)  # the filter holds
    browser.save_screenshot(str(DOCS / "web-mentions.png"))

    # a responder corrects a mention's sentiment from the stream: the label reaches the labels topic
    fix = items[0].find_element(By.CSS_SELECTOR, "select.relabel")
    event_id = fix.get_attribute("data-event-id")
    Select(fix).select_by_value("positive")
    (label,) = wait_for(
        lambda: [x for x in war_room.topic_records("labels") if x.get("event_id") == event_id] or None,
        what="the corrected label on the labels topic",
    )
    assert label["label"] == "positive" and label["was"] == "negative" and label["by"] == "alice"
    wait_for(lambda: not fix.is_enabled(), what="the correction acknowledged on the page")


async def _page_two(war_room: WarRoom, receiver: HttpReceiver) -> None:
    r = aredis.Redis.from_url(war_room.redis_url)
    alerts = AlertSettings(
        routes=[{"name": "hook", "urls": [receiver.apprise_url("/hook")]}],  # type: ignore[list-item]
        outbox_poll_seconds=0.2,
        console=False,
    )
    d = Dispatcher(alerts, r, key_prefix=war_room.prefix)
    try:
        silenced = await d.dispatch(make_incident("northwind", iid="inc-northwind-later"))
        assert silenced[0].status == "filtered" and "silenced" in (silenced[0].error or "")
        assert (await d.dispatch(make_incident("skyline", iid="inc-skyline")))[0].status == "queued"
        await asyncio.to_thread(receiver.wait_for, 1, 15)
    finally:
        await d.aclose()
        await r.aclose()
