"""replay.v1: recorded events from CSV/TSV/JSONL (optionally .gz) through a column mapping.

The mapping (a TOML file, see ``infra/config/replay/`` and :mod:`connectors.mapping`) turns each
row into a record with a stable id (``source:native_id``, else a hash of the row). A row that
cannot become a valid record is not dropped: it goes to the sink as JSON with an ``_error``
field, so the pipeline dead-letters it with the reason. Replay runs as fast as possible
(``speed=0``) or ``speed`` times real time following the gaps in event time.

The run stops at the first record the broker does not acknowledge and raises
:class:`~connectors.base.DeliveryError` naming the broker (``repmon replay`` exits non-zero).
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson

from connectors.base import Connector, Item, Malformed, RunStats
from connectors.mapping import Mapping, TimeSpec, load_mapping, parse_time, to_item
from connectors.registry import register

__all__ = ["Mapping", "ReplayStats", "Replayer", "TimeSpec", "load_mapping", "parse_time"]

logger = logging.getLogger(__name__)

csv.field_size_limit(10_000_000)

ReplayStats = RunStats  # the stats of one replay (kept for importers)


def _open(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8-sig", errors="replace", newline="")
    return path.open(encoding="utf-8-sig", errors="replace", newline="")


@register
class Replayer(Connector):
    kind = "replay"
    name = "replay.v1"

    def __init__(
        self,
        mapping: Mapping,
        files: Sequence[Path | str],
        *,
        speed: float = 0.0,
        limit: int | None = None,
        progress: bool = True,
        sort_by_time: bool = False,
        sleep: Callable[[float], None] = time.sleep,
        max_sleep: float = 5.0,
    ) -> None:
        self.mapping = mapping
        self.files = [Path(f) for f in files]
        self.speed = speed
        self.limit = limit
        self.total = limit
        self.progress = progress
        self.sort_by_time = sort_by_time
        self.sleep = sleep
        self.max_sleep = max_sleep

    # -- reading ----------------------------------------------------------------------------
    def _rows(self, path: Path) -> Iterator[dict[str, Any]]:
        fmt = self.mapping.format
        name = path.name.removesuffix(".gz")
        if fmt is None:
            fmt = "jsonl" if name.endswith((".jsonl", ".json")) else ("tsv" if name.endswith(".tsv") else "csv")
        with _open(path) as f:
            if fmt == "jsonl":
                for line in f:
                    if line.strip():
                        try:
                            obj = orjson.loads(line)
                        except orjson.JSONDecodeError:
                            yield {"__unparsable__": line.rstrip("\n")}
                            continue
                        yield obj if isinstance(obj, dict) else {"__unparsable__": line.rstrip("\n")}
                return
            delim = self.mapping.delimiter or ("\t" if fmt == "tsv" else ",")
            if self.mapping.header:
                yield from csv.DictReader(f, delimiter=delim)
            else:
                for row in csv.reader(f, delimiter=delim):
                    yield {str(i): v for i, v in enumerate(row)}

    def events(self) -> Iterator[dict[str, Any] | Malformed]:
        """Every row in file order, mapped: a valid record dict or :class:`Malformed`."""
        n = 0
        for path in self.files:
            for row in self._rows(path):
                if self.limit is not None and n >= self.limit:
                    return
                n += 1
                if "__unparsable__" in row:
                    yield Malformed(str(row["__unparsable__"]).encode(), "unparsable line")
                else:
                    yield to_item(row, self.mapping)

    def stream(self) -> Iterator[Item]:
        """The events, sorted by event time when asked (or paced), paced ``speed`` x real time."""
        items: Iterable[dict[str, Any] | Malformed] = self.events()
        if self.sort_by_time or self.speed > 0:
            everything = list(items)
            bad = [e for e in everything if isinstance(e, Malformed)]
            good = sorted((e for e in everything if isinstance(e, dict)), key=lambda e: str(e["occurred_at"]))
            items = [*bad, *good]
        prev: datetime | None = None
        for item in items:
            if isinstance(item, dict) and self.speed > 0:
                ts = datetime.fromisoformat(item["occurred_at"])
                if prev is not None:
                    gap = (ts - prev) / timedelta(seconds=1) / self.speed
                    if gap > 0:
                        self.sleep(min(gap, self.max_sleep))
                prev = ts
            yield item
