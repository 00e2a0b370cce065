"""Bearer tokens with read and write scopes, from the environment only.

``REPMON_WEB_READ_TOKENS`` and ``REPMON_WEB_WRITE_TOKENS`` each hold comma-separated
``name:token`` pairs (the name is who an action is recorded as); a write token can also read.
A browser signs in once on ``/login`` and gets the token in an HttpOnly, SameSite=Strict cookie;
writes that come with the cookie (not a bearer header) must also carry ``X-Repmon-Request: 1``,
which a cross-site form cannot send (no CSRF).

With no token configured the web view is open, which :func:`check_bind` allows on a loopback
address only.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["COOKIE", "Principal", "TokenError", "Tokens", "check_bind"]

COOKIE = "repmon_token"
READ_ENV, WRITE_ENV = "REPMON_WEB_READ_TOKENS", "REPMON_WEB_WRITE_TOKENS"
MIN_TOKEN_CHARS = 16


class TokenError(ValueError):
    """A bad token variable: the message names it and the fix."""


@dataclass(frozen=True)
class Principal:
    name: str
    scopes: frozenset[str]

    def can(self, scope: str) -> bool:
        return scope in self.scopes


ANONYMOUS = Principal("local", frozenset({"read", "write"}))


def _parse(var: str, raw: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in (x.strip() for x in raw.split(",")):
        if not item:
            continue
        name, sep, token = item.partition(":")
        if not sep or not name or not token:
            raise TokenError(f"{var}: write name:token pairs, comma-separated (e.g. alice:$(openssl rand -hex 24))")
        if len(token) < MIN_TOKEN_CHARS:
            raise TokenError(
                f"{var}: the token of {name!r} is shorter than {MIN_TOKEN_CHARS} characters; use a long random one"
            )
        out[token] = name
    return out


class Tokens:
    def __init__(self, read: Mapping[str, str], write: Mapping[str, str]) -> None:
        self._read, self._write = dict(read), dict(write)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Tokens:
        env = os.environ if env is None else env
        return cls(_parse(READ_ENV, env.get(READ_ENV, "")), _parse(WRITE_ENV, env.get(WRITE_ENV, "")))

    @property
    def open(self) -> bool:
        """No token configured: everyone is ``local`` with both scopes (loopback binds only)."""
        return not self._read and not self._write

    def principal(self, token: str | None) -> Principal | None:
        if self.open:
            return ANONYMOUS
        if not token:
            return None
        # compare against every token in constant time: no timing oracle on which prefix matched
        found: Principal | None = None
        for tok, name in self._write.items():
            if hmac.compare_digest(tok.encode(), token.encode()):
                found = Principal(name, frozenset({"read", "write"}))
        for tok, name in self._read.items():
            if hmac.compare_digest(tok.encode(), token.encode()) and found is None:
                found = Principal(name, frozenset({"read"}))
        return found


def check_bind(host: str, tokens: Tokens) -> str | None:
    """Why binding ``host`` is refused (an open web view off loopback), or None."""
    if not tokens.open:
        return None
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    if loopback:
        return None
    return (
        f"web.host={host} is not a loopback address and no token is configured: set {READ_ENV} / {WRITE_ENV} "
        "(name:token pairs) or bind 127.0.0.1"
    )
