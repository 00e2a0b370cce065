"""Label review streams for the backtest: weekly rating drops and positive bursts, per product.

Reads review files through a replay mapping (``infra/config/replay/*.toml``, the same parsing as
``repmon replay`` and ``repmon backtest``) and writes a labels JSON. The data stays where it is:
only the labels (entity, dates, counts) are written.

**Rating drop**: an ISO week (Monday 00:00 UTC) of a product whose mean rating is at least
``drop`` stars (1.0) below the mean of its trailing 8 weeks, with a minimum support: at least
``min_week`` (5) reviews in the week and ``min_trailing`` (20) in the trailing 8 weeks. Fewer,
and a week mean is mostly noise (with a rating spread of ~1.3 stars, the standard error of a
5-review mean is ~0.6 stars).

**Positive burst**: a UTC day with at least ``burst_min`` (10) five-star reviews of a product and at
least ``burst_ratio`` (5) times its trailing daily rate of five-star reviews (mean over the 90 days
before, at least one per 90 days): a launch or a campaign, good news that must never page.

Products are named by the source's product hint (``product`` in the mapping, e.g. the ASIN),
lowercased: the backtest matches them to entity keys (``brand/product`` or ``product``).

``python -m tools.label_reviews FILE... --mapping M --out labels.json [--config-out c.toml]``

``--chance N`` also counts the drops the rule finds in N copies of the data with each product's
ratings shuffled in time (same products, same review times, same star counts, no real drop): on
a polarised stream with a few reviews a week, a week a star below its trailing mean happens by
chance, and no detector with a bounded false-page rate can catch those.

``--config-out`` writes the config a new user would start from: only the entities (the mapping's
constant brand, else its source, and each product of it), no detection settings.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["ReviewPoint", "chance_drops", "entities_config", "label_points", "label_reviews", "main"]

WEEK = timedelta(days=7)


@dataclass(frozen=True, slots=True)
class ReviewPoint:
    entity: str
    at: datetime
    rating: float


def _week_start(t: datetime) -> datetime:
    d = t.astimezone(UTC).date()
    monday = d - timedelta(days=d.weekday())
    return datetime(monday.year, monday.month, monday.day, tzinfo=UTC)


def _day_start(t: datetime) -> datetime:
    d = t.astimezone(UTC).date()
    return datetime(d.year, d.month, d.day, tzinfo=UTC)


def label_points(
    points: Iterable[ReviewPoint],
    *,
    drop: float = 1.0,
    trailing_weeks: int = 8,
    min_week: int = 5,
    min_trailing: int = 20,
    burst_min: int = 10,
    burst_ratio: float = 5.0,
    burst_days: int = 90,
) -> dict[str, Any]:
    """Rating drops and positive bursts of review points (module doc).

    >>> t0 = datetime(2024, 1, 1, tzinfo=UTC)  # a Monday
    >>> pts = [ReviewPoint("p", t0 + timedelta(days=d), 5.0) for d in range(0, 56, 2) for _ in range(1)]
    >>> pts += [ReviewPoint("p", t0 + timedelta(days=56 + d), 2.0) for d in range(6)]
    >>> [(d["entity"], d["week"], d["n"]) for d in label_points(pts)["drops"]]
    [('p', '2024-02-26', 6)]
    """
    weeks: dict[str, dict[datetime, list[float]]] = defaultdict(lambda: defaultdict(list))
    fives: dict[str, dict[datetime, int]] = defaultdict(lambda: defaultdict(int))
    for p in points:
        weeks[p.entity][_week_start(p.at)].append(p.rating)
        if p.rating >= 5:
            fives[p.entity][_day_start(p.at)] += 1
    drops: list[dict[str, Any]] = []
    for ent, by_week in sorted(weeks.items()):
        for wk in sorted(by_week):
            rs = by_week[wk]
            trail = [r for k in range(1, trailing_weeks + 1) for r in by_week.get(wk - k * WEEK, [])]
            if len(rs) < min_week or len(trail) < min_trailing:
                continue
            mean, base = sum(rs) / len(rs), sum(trail) / len(trail)
            if mean <= base - drop:
                drops.append(
                    {
                        "entity": ent,
                        "week": wk.date().isoformat(),
                        "n": len(rs),
                        "mean": round(mean, 3),
                        "trailing_mean": round(base, 3),
                        "trailing_n": len(trail),
                    }
                )
    bursts: list[dict[str, Any]] = []
    for ent, by_day in sorted(fives.items()):
        for day in sorted(by_day):
            k = by_day[day]
            if k < burst_min:
                continue
            before = sum(by_day.get(day - timedelta(days=i), 0) for i in range(1, burst_days + 1))
            rate = max(before / burst_days, 1.0 / burst_days)
            if k >= burst_ratio * rate:
                bursts.append(
                    {"entity": ent, "day": day.date().isoformat(), "five_star": k, "daily_rate": round(rate, 3)}
                )
    return {
        "definition": {
            "drop": f"ISO week mean >= {drop} star below the trailing {trailing_weeks} weeks' mean; "
            f"support >= {min_week} reviews in the week and >= {min_trailing} in the trailing weeks",
            "burst": f">= {burst_min} five-star reviews in a UTC day and >= {burst_ratio}x the trailing "
            f"{burst_days}-day daily rate of five-star reviews",
        },
        "entities": sorted(weeks),
        "drops": drops,
        "bursts": bursts,
    }


def chance_drops(points: Sequence[ReviewPoint], seeds: int, **kwargs: Any) -> list[int]:
    """Drops labelled in ``seeds`` copies of ``points`` with each entity's ratings shuffled in time
    (module doc).

    >>> t0 = datetime(2024, 1, 1, tzinfo=UTC)
    >>> pts = [ReviewPoint("p", t0 + timedelta(days=d), 5.0) for d in range(70)]
    >>> chance_drops(pts, 3)  # one star everywhere: no week is ever below the others
    [0, 0, 0]
    """
    import random

    by: dict[str, list[ReviewPoint]] = defaultdict(list)
    for p in points:
        by[p.entity].append(p)
    out = []
    for seed in range(seeds):
        rng = random.Random(seed)
        shuffled: list[ReviewPoint] = []
        for ent, ps in by.items():
            ratings = [p.rating for p in ps]
            rng.shuffle(ratings)
            shuffled += [ReviewPoint(ent, p.at, r) for p, r in zip(ps, ratings, strict=True)]
        out.append(len(label_points(shuffled, **kwargs)["drops"]))
    return out


def read_points(files: Sequence[Path], mapping: Path) -> list[ReviewPoint]:
    """Reviews with a rating and a product hint, through the replay mapping."""
    from connectors.base import ListSink
    from connectors.replay import Replayer, load_mapping
    from contract.records import Review, parse_raw

    sink = ListSink()
    Replayer(load_mapping(mapping), list(files), speed=0.0, progress=False).run(sink)
    out = []
    for _, value in sink.items:
        try:
            rec = parse_raw(value)
        except ValueError:
            continue
        if isinstance(rec, Review) and rec.rating is not None and (rec.product or rec.brand):
            out.append(ReviewPoint(str(rec.product or rec.brand).strip().lower(), rec.occurred_at, float(rec.rating)))
    return out


def label_reviews(files: Sequence[Path], mapping: Path, chance: int = 0, **kwargs: Any) -> dict[str, Any]:
    points = read_points(files, mapping)
    result = label_points(points, **kwargs)
    result["files"] = [p.name for p in files]
    if chance:
        result["chance_drops"] = chance_drops(points, chance, **kwargs)
    return result


def entities_config(products: Iterable[str], brand: str) -> str:
    """A config TOML naming only the entities: the brand and each product of it.

    >>> print(entities_config(["b0001"], "Acme"))
    [[entities]]
    name = "Acme"
    kind = "brand"
    <BLANKLINE>
    [[entities]]
    name = "b0001"
    kind = "product"
    brand = "Acme"
    <BLANKLINE>
    """
    blocks = [f'[[entities]]\nname = {json.dumps(brand)}\nkind = "brand"\n']
    for p in products:
        blocks.append(f'[[entities]]\nname = {json.dumps(p)}\nkind = "product"\nbrand = {json.dumps(brand)}\n')
    return "\n".join(blocks)


def main(
    files: Annotated[list[Path], typer.Argument(exists=True, help="Review files (CSV/TSV/JSONL, .gz ok).")],
    mapping: Annotated[Path, typer.Option("--mapping", "-m", exists=True, help="Replay mapping TOML.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Labels JSON to write.")],
    min_week: Annotated[int, typer.Option(help="Minimum reviews in a labelled week.")] = 5,
    min_trailing: Annotated[int, typer.Option(help="Minimum reviews in the trailing 8 weeks.")] = 20,
    chance: Annotated[int, typer.Option(help="Also count the drops found with ratings shuffled, N times.")] = 0,
    config_out: Annotated[
        Path | None, typer.Option("--config-out", help="Also write a config TOML naming only the entities.")
    ] = None,
) -> None:
    """Label weekly rating drops and positive bursts per product."""
    result = label_reviews(files, mapping, chance=chance, min_week=min_week, min_trailing=min_trailing)
    out.write_text(json.dumps(result, indent=1))
    if config_out is not None:
        from connectors.replay import load_mapping

        # a source without a brand column (Amazon 5-core: ASINs only) gets its source as the brand
        m = load_mapping(mapping)
        config_out.write_text(entities_config(result["entities"], str(m.constants.get("brand") or m.source)))
    typer.echo(
        f"{len(result['entities'])} products: {len(result['drops'])} rating drops, "
        f"{len(result['bursts'])} positive bursts -> {out}"
    )
    if chance:
        c = result["chance_drops"]
        typer.echo(
            f"with ratings shuffled in time ({chance} times): {sum(c) / len(c):.1f} drops (min {min(c)}, max {max(c)})"
        )


if __name__ == "__main__":
    typer.run(main)
