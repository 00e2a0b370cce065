"""Connector registry: ``kind`` -> :class:`~connectors.base.Connector` class.

A source is one file in ``connectors/`` whose class is decorated with :func:`register`; the
registry imports every module of the package on first use, so nothing else needs editing::

    @register
    class RssConnector(Connector):
        kind = "rss"
        name = "rss.v1"
        def stream(self): ...

>>> "replay" in list_kinds() and "demo" in list_kinds()
True
>>> get("replay").name
'replay.v1'
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, TypeVar

from connectors.base import Connector

__all__ = ["create", "get", "list_kinds", "register"]

C = TypeVar("C", bound=type[Connector])

_KINDS: dict[str, type[Connector]] = {}
_discovered = False


def register(cls: C) -> C:
    """Class decorator: make ``cls`` available as ``cls.kind``."""
    if not (isinstance(cls, type) and issubclass(cls, Connector)):
        raise TypeError(f"{cls!r} is not a Connector subclass")
    kind = cls.kind
    if not kind or not kind.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"{cls.__qualname__}.kind must be a short name like 'rss', not {kind!r}")
    other = _KINDS.get(kind)
    if other is not None and (other.__module__, other.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"connector kind {kind!r} is taken by {other.__module__}.{other.__qualname__}")
    _KINDS[kind] = cls
    return cls


def _discover() -> None:
    global _discovered
    if _discovered:
        return
    import connectors

    for mod in pkgutil.iter_modules(connectors.__path__):
        if not mod.name.startswith("_") and mod.name not in ("base", "registry", "mapping"):
            importlib.import_module(f"connectors.{mod.name}")
    _discovered = True


def list_kinds() -> list[str]:
    """Every registered connector kind, sorted."""
    _discover()
    return sorted(_KINDS)


def get(kind: str) -> type[Connector]:
    """The class registered as ``kind``; ``ValueError`` naming the known kinds otherwise."""
    _discover()
    try:
        return _KINDS[kind]
    except KeyError:
        raise ValueError(f"no connector of kind {kind!r}; known kinds: {', '.join(sorted(_KINDS))}") from None


def create(kind: str, /, **options: Any) -> Connector:
    """An instance of the connector registered as ``kind``."""
    return get(kind)(**options)
