"""The seasonal slot a bucket is learned and judged in: its hour of the week, a holiday read as a Sunday.

Count baselines (:mod:`models.detect`) keep an offset per hour of the week. A public holiday on a
weekday is as quiet as a Sunday: judged in its weekday slot it reads low, and learned there it
teaches the weekday a holiday's level, so the next ordinary weekday reads high. With a holiday
calendar (``detect.holidays``, or an entity's own ``holidays``), a bucket on a holiday of the
calendar uses the Sunday slot of the same hour instead (its hour-of-day slot is the same either
way). Days are UTC days: the project has no timezone setting, and every slot is UTC.

Everything that feeds a detector goes through :func:`seasonal_hour`: the worker's and the
backtest's :class:`streams.detection.DetectionEngine` and ``repmon eval detect``
(:class:`models.series.EntityVolumeDetector`). It runs per bucket per entity, so holidays are
computed once per (calendar, year) and the last day asked is remembered (buckets come in order).

Calendars are the ``holidays`` package's (MIT): a country code (``"US"``, ``"BR"``), optionally
with a subdivision (``"US-CA"``, ``"BR-SP"``: the country's holidays and the subdivision's own).

Off by default: measured (2026-12-07, README), a Sunday is a crude model of a holiday's small
hours. On NAB's nyc_taxi (local times, read as UTC days) ``["US"]`` removes two false detections
(Labor Day's among them) but adds four and misses Thanksgiving's window: Veterans Day's morning
reads high against a Sunday's, and three Sundays' 4 am (Saturday night's traffic) read high
after the Sunday slot learned Columbus and Veterans Day nights. NAB realTweets and the Olist
backtest (``["BR"]``) are unchanged.

>>> import datetime as dt
>>> t = int(dt.datetime(2025, 12, 25, 14, tzinfo=dt.UTC).timestamp())  # Christmas, a Thursday
>>> hour_of_week(t), seasonal_hour(t, holiday_calendar(["US"])), 6 * 24 + 14
(86, 158, 158)
>>> seasonal_hour(t, holiday_calendar([])) == hour_of_week(t)
True
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence

__all__ = ["HolidayCalendar", "calendar_problem", "holiday_calendar", "hour_of_week", "seasonal_hour"]

SUNDAY = 6 * 24  # hour of the week of Sunday 00h
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


def hour_of_week(t: int) -> int:
    """Hour of the week (0 = Monday 00h UTC) of epoch second ``t``.

    >>> hour_of_week(0)  # 1970-01-01 was a Thursday
    72
    """
    return (int(t // 3600) + 72) % 168


def _split(code: str) -> tuple[str, str | None]:
    country, _, sub = code.strip().partition("-")
    return country.upper(), (sub.upper() or None)


@functools.lru_cache(maxsize=1024)
def _holiday_days(code: str, year: int) -> frozenset[int]:
    """Epoch days (days since 1970-01-01) of one calendar's holidays in ``year``."""
    import holidays  # a hundred country modules: loaded only when a calendar is configured

    country, sub = _split(code)
    return frozenset(d.toordinal() - _EPOCH_ORDINAL for d in holidays.country_holidays(country, subdiv=sub, years=year))


def calendar_problem(code: str) -> str | None:
    """Why ``code`` is not a holiday calendar, or None when it is one.

    >>> calendar_problem("US-CA") is None, calendar_problem("BR") is None
    (True, True)
    >>> calendar_problem("XX")
    "'XX' is not a country of the holidays package (ISO 3166-1 alpha-2 codes, e.g. 'US', 'BR', 'US-CA')"
    >>> calendar_problem("US-ZZ")
    "'US-ZZ': US has no subdivision ZZ (write the country alone, or one of its codes, e.g. 'US-AK')"
    """
    import holidays

    country, sub = _split(code)
    subdivisions = holidays.list_supported_countries().get(country)
    if subdivisions is None:
        return f"{code!r} is not a country of the holidays package (ISO 3166-1 alpha-2 codes, e.g. 'US', 'BR', 'US-CA')"
    if sub is not None and sub not in subdivisions:
        example = f", e.g. '{country}-{subdivisions[0]}'" if subdivisions else ""
        return f"{code!r}: {country} has no subdivision {sub} (write the country alone, or one of its codes{example})"
    return None


class HolidayCalendar:
    """The union of some holiday calendars, asked by epoch day."""

    __slots__ = ("_last", "codes")

    def __init__(self, codes: Sequence[str]) -> None:
        self.codes = tuple(codes)
        self._last = (-1 << 62, False)  # (epoch day, holiday?) last asked

    def holiday(self, day: int) -> bool:
        """Whether epoch day ``day`` is a holiday in any of the calendars."""
        # one read of the pair: the leader judges closed buckets on a thread while early firing
        # asks on the event loop, and two reads could pair one day with another's answer
        last = self._last
        if day == last[0]:
            return last[1]
        year = dt.date.fromordinal(day + _EPOCH_ORDINAL).year
        hit = any(day in _holiday_days(c, year) for c in self.codes)
        self._last = (day, hit)
        return hit


@functools.lru_cache(maxsize=256)
def _calendar(codes: tuple[str, ...]) -> HolidayCalendar | None:
    return HolidayCalendar(codes) if codes else None


def holiday_calendar(codes: Sequence[str]) -> HolidayCalendar | None:
    """The calendar of ``codes`` (None for none: no holidays, today's slots), one per set of codes."""
    return _calendar(tuple(sorted({c.strip().upper() for c in codes})))


def seasonal_hour(t: int, calendar: HolidayCalendar | None) -> int:
    """The seasonal slot of epoch second ``t``: its hour of the week, or on a holiday of
    ``calendar`` the Sunday slot of its hour (module doc)."""
    how = hour_of_week(t)
    if calendar is not None and calendar.holiday(int(t // 86400)):
        return SUNDAY + how % 24
    return how
