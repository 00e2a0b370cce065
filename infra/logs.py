"""Log lines for people (text) or for log shippers (one JSON object per line), stdlib only.

>>> import io
>>> rec = logging.LogRecord("streams.x", logging.WARNING, __file__, 1, "lag %d", (3,), None)
>>> sorted(orjson.loads(JsonFormatter().format(rec)))
['level', 'logger', 'message', 'ts']
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

import orjson

__all__ = ["JsonFormatter", "configure"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message"}`` plus ``exc`` (the traceback, as one string) when there
    is one: a multi-line traceback stays one record in Loki, Elasticsearch or CloudWatch."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


def configure(level: str, fmt: Literal["text", "json"] = "text") -> None:
    """Configure the root logger (replacing handlers already there, e.g. a library's)."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
