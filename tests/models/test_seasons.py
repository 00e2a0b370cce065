"""Holiday calendars in the seasonal slots: a holiday is a Sunday, no calendar is today's slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli.main import app
from infra.settings import ConfigError, DetectSettings, load_settings
from models.seasons import SUNDAY, holiday_calendar, hour_of_week, seasonal_hour
from models.series import EntityVolumeDetector, how_of
from streams.detection import DetectionEngine
from streams.state import MemoryState
from streams.windows import MemoryWindows


def _t(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def test_a_holiday_monday_is_the_sunday_slot_of_its_hour() -> None:
    us = holiday_calendar(["US"])
    for h in range(24):
        labor_day = _t(2025, 9, 1, h)  # the first Monday of September
        assert hour_of_week(labor_day) == h
        assert seasonal_hour(labor_day, us) == SUNDAY + h
        assert seasonal_hour(labor_day - 7 * 86400, us) == h  # the Monday before is a Monday
        assert seasonal_hour(labor_day + 86400, us) == 24 + h
    assert seasonal_hour(_t(2025, 9, 1, 12), holiday_calendar(["BR"])) == 12  # not a Brazilian holiday


def test_a_subdivision_adds_its_own_holidays_to_the_country_s() -> None:
    revolution = _t(2025, 7, 9, 10)  # Constitutionalist Revolution: Sao Paulo only (a Wednesday)
    assert seasonal_hour(revolution, holiday_calendar(["BR"])) == 2 * 24 + 10
    assert seasonal_hour(revolution, holiday_calendar(["BR-SP"])) == SUNDAY + 10
    assert seasonal_hour(_t(2025, 12, 25, 10), holiday_calendar(["br-sp"])) == SUNDAY + 10  # and Brazil's


def test_an_empty_calendar_is_the_hour_of_the_week() -> None:
    assert holiday_calendar([]) is None
    assert DetectSettings().holidays == [] and load_settings(None).holidays_for("northwind") == []
    t0 = _t(2024, 1, 1)
    for t in range(t0, t0 + 2 * 366 * 86400, 1800):  # two years, every half hour, holidays included
        assert seasonal_hour(t, None) == hour_of_week(t)


def test_eval_detect_feeds_the_engine_s_slots() -> None:
    """``repmon eval detect``'s detector: an empty calendar is today's ``how_of``, bit for bit; a
    calendar moves only the holidays."""
    t0 = datetime(2025, 11, 20, tzinfo=UTC)
    series = [
        (t0 + timedelta(hours=i), float(30 if (t0 + timedelta(hours=i)).weekday() < 5 else 6)) for i in range(900)
    ]
    fed: dict[str, list[int]] = {"none": [], "us": []}
    for name, codes in (("none", []), ("us", ["US"])):
        det = EntityVolumeDetector(DetectSettings(holidays=codes), warmup=50)
        det.update(*series[0])
        det.update(*series[1])  # the bucket length is known from the second row: the detector exists
        assert det.det is not None
        update = det.det.update

        def spy(st: dict[str, float], how: int | None = None, _out: list[int] = fed[name], _u=update) -> object:
            _out.append(how if how is not None else -1)
            return _u(st, how)

        det.det.update = spy  # type: ignore[method-assign]
        for ts, x in series[2:]:
            det.update(ts, x)
    assert fed["none"] == [how_of(ts) for ts, _ in series[2:]]
    moved = [ts for (ts, _), a, b in zip(series[2:], fed["none"], fed["us"], strict=True) if a != b]
    assert {ts.date() for ts in moved} == {datetime(2025, 11, 27).date(), datetime(2025, 12, 25).date()}


def test_an_entity_s_own_calendar_replaces_the_global_one() -> None:
    s = load_settings(
        None,
        entities=[{"name": "shop", "holidays": ["BR"]}, {"name": "brand"}, {"name": "none", "holidays": []}],
        detect={"holidays": ["US"]},
    )
    eng = DetectionEngine(s, MemoryWindows(s), MemoryState())
    thanksgiving = _t(2025, 11, 27, 9)
    assert [seasonal_hour(thanksgiving, eng.calendars[e]) for e in ("shop", "brand", "none")] == [
        3 * 24 + 9,
        SUNDAY + 9,
        3 * 24 + 9,
    ]


@pytest.mark.parametrize(
    ("toml", "key", "env"),
    [
        ('[[entities]]\nname = "Acme"\n[detect]\nholidays = ["XX"]\n', "detect.holidays", "REPMON_DETECT__HOLIDAYS"),
        ('[[entities]]\nname = "Acme"\nholidays = ["US-ZZ"]\n', "entities.0.holidays", "REPMON_ENTITIES__HOLIDAYS"),
    ],
)
def test_an_unknown_calendar_is_a_config_error_naming_the_key_and_the_fix(
    tmp_path: Path, toml: str, key: str, env: str
) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(toml)
    with pytest.raises(ConfigError) as info:
        load_settings(cfg)
    problems = info.value.problems
    assert len(problems) == 1 and problems[0].startswith(key + ":"), problems
    assert ("not a country of the holidays package" in problems[0]) != ("no subdivision ZZ" in problems[0])
    assert env in problems[0] and "\n" not in problems[0]
    res = CliRunner().invoke(app, ["trust", "acme", "--config", str(cfg)], terminal_width=400)
    assert res.exit_code == 2 and key in res.output and "Traceback" not in res.output, res.output


def test_the_calendar_is_cached_per_code_and_year() -> None:
    from models.seasons import _holiday_days

    _holiday_days.cache_clear()
    us = holiday_calendar(["US"])
    assert us is holiday_calendar(["us"])  # one calendar per set of codes
    t0 = _t(2025, 1, 1)
    for t in range(t0, t0 + 365 * 86400, 3600):
        seasonal_hour(t, us)
    info = _holiday_days.cache_info()
    assert info.misses == 1  # one year of one calendar computed once, asked 365 times
