"""A worker is either working or gone: never a live-looking zombie.

Faust restarts an agent whose body raised, but the restarted agent may never consume again
while the process stays up, serves its metrics and holds its partitions: lag grows forever and
no supervisor notices. Here an agent that raises takes the process down instead (a graceful stop
first, a hard exit if that hangs), so docker, systemd or Kubernetes restarts it and Kafka hands
its partitions to a live worker. The same deadline bounds every shutdown: SIGTERM always stops the
worker.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

__all__ = ["EXIT_AGENT_CRASHED", "EXIT_SHUTDOWN_HUNG", "crashed", "fatal_on_error", "shutdown_deadline"]

logger = logging.getLogger(__name__)

EXIT_AGENT_CRASHED = 70  # EX_SOFTWARE
EXIT_SHUTDOWN_HUNG = 75  # EX_TEMPFAIL
SHUTDOWN_SECONDS = 30.0

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])

_deadline_lock = threading.Lock()
_deadline_armed = False
_crashed = threading.Event()


def crashed() -> bool:
    """True once an agent crashed: the worker command then exits with :data:`EXIT_AGENT_CRASHED`."""
    return _crashed.is_set()


def shutdown_deadline(seconds: float = SHUTDOWN_SECONDS, code: int = EXIT_SHUTDOWN_HUNG) -> None:
    """Exit the process with ``code`` if it is still alive ``seconds`` from now (armed once)."""
    global _deadline_armed
    with _deadline_lock:
        if _deadline_armed:
            return
        _deadline_armed = True

    def expire() -> None:
        logger.critical("shutdown did not finish within %.0f s: exiting with %d", seconds, code)
        logging.shutdown()
        os._exit(code)

    t = threading.Timer(seconds, expire)
    t.daemon = True
    t.start()


def fatal_on_error(name: str, stop: Callable[[], None] | None = None) -> Callable[[F], F]:
    """Wrap an agent body: an exception that escapes it stops the worker (exit code 70).

    ``stop`` asks for a graceful stop (default: SIGTERM to this process, which runs the shutdown
    hooks: checkpoints, River state); :func:`shutdown_deadline` makes sure the process is gone even
    if that hangs. Cancellation (a rebalance, a normal stop) passes through untouched.
    """

    def wrap(fn: F) -> F:
        async def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return await fn(*args, **kwargs)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.critical("agent %s crashed: stopping the worker so that it is restarted", name, exc_info=True)
                _crashed.set()
                shutdown_deadline(code=EXIT_AGENT_CRASHED)
                (stop or _sigterm_self)()
                raise

        run.__name__ = getattr(fn, "__name__", name)
        run.__qualname__ = getattr(fn, "__qualname__", name)
        return run  # type: ignore[return-value]

    return wrap


def _sigterm_self() -> None:
    os.kill(os.getpid(), signal.SIGTERM)
