"""googleplay.v1: Google Play reviews (Play Developer API) -> review records (rating 1-5).

``GET /androidpublisher/v3/applications/<package>/reviews`` (https://developers.google.com/android-publisher/api-ref/rest/v3/reviews/list)
returns the reviews of the last week, newest first, paged by ``tokenPagination.nextPageToken``;
a review is ``{reviewId, authorName, comments: [{userComment: {text, starRating, lastModified:
{seconds}, reviewerLanguage, appVersionName}}]}``. An edited review is a new event (the native id
carries its ``lastModified``). Pages are read until one reaches the newest review delivered.

Credentials, either of two logins (``accounts`` are package names):

- a **service account** (what Google recommends for server-to-server access; grant it access to
  the app in the Play Console): ``service_account`` names an environment variable holding the
  account's JSON key itself (not a path: a key file stays out of the process's working tree and
  the config). The source signs a JWT with the key (RS256; ``iss`` the account's e-mail, ``scope``
  androidpublisher, ``aud`` the token URI, an hour long) and trades it for an access token (the
  OAuth 2.0 JWT bearer grant, RFC 7523);
- an **OAuth client** with a refresh token: ``client_id``, ``client_secret``, ``refresh_token``.

The access token is kept until a minute before it expires.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import jwt
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import BaseModel, ConfigDict, Field

from connectors.registry import register
from connectors.source import Batch, Entry, Source, SourceError, SourceState, epoch, off_loop

__all__ = ["GooglePlaySource"]

SCOPE = "https://www.googleapis.com/auth/androidpublisher"
OAUTH_CLIENT = ("client_id", "client_secret", "refresh_token")


@functools.lru_cache(maxsize=16)
def _private_key(pem: str) -> rsa.RSAPrivateKey:
    """A PEM private key, loaded once per process: loading validates the RSA key (~35 ms of CPU
    that holds the GIL, so it stalls the event loop from any thread), and the sources of one
    service account share it."""
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise TypeError(type(key).__name__)
    return key


DEFAULT_TOKEN_URL = "https://oauth2.googleapis.com/token"  # noqa: S105 - an endpoint, not a secret


class GooglePlayOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token_url: str = Field(
        default=DEFAULT_TOKEN_URL,
        description="Where tokens come from; a service account's key names its own (token_uri), "
        "used unless this is set.",
    )
    max_pages: int = Field(default=20, ge=1)
    product: str | None = Field(default=None, description="Product hint put on the reviews (the app's name).")


@register
class GooglePlaySource(Source):
    kind = "googleplay"
    name = "googleplay.v1"
    summary = (
        "Google Play reviews (Play Developer API; a service_account JSON key, "
        "or client_id, client_secret, refresh_token)"
    )
    Options = GooglePlayOptions
    optional_credentials = ("service_account", *OAUTH_CLIENT)
    needs = ("accounts",)
    default_base_url = "https://androidpublisher.googleapis.com"
    options: GooglePlayOptions

    _token: str | None = None
    _expires = 0.0
    _key: dict[str, str] | None = None
    _signer: rsa.RSAPrivateKey | None = None

    async def open(self, state: SourceState) -> None:
        if "service_account" in self.spec.credentials:
            # in the CPU thread, not on the event loop (every source opens in the same loop turn)
            self._key, self._signer = await off_loop(self._service_key)
            return
        if not any(role in self.spec.credentials for role in OAUTH_CLIENT):
            raise SourceError(
                'no login: set credentials = { service_account = "ENV_VAR" } (a service account\'s JSON key) '
                "or client_id, client_secret and refresh_token (an OAuth client)"
            )
        for role in OAUTH_CLIENT:
            self.secret(role)

    def _service_key(self) -> tuple[dict[str, str], rsa.RSAPrivateKey]:
        """The service account's JSON key and its loaded private key, checked once at open: a bad
        key is one line, not a traceback."""
        var = self.spec.credentials["service_account"]
        raw = self.secret("service_account") or ""
        fix = f"put the service account's JSON key (from the Cloud console) itself in ${var}"
        try:
            key = json.loads(raw)
        except ValueError:
            raise SourceError(f"${var} is not JSON; {fix}") from None
        missing = [k for k in ("client_email", "private_key") if not isinstance(key, dict) or not key.get(k)]
        if missing:
            raise SourceError(f"${var} has no {' or '.join(missing)}; {fix}")
        try:
            signer = _private_key(str(key["private_key"]))
            jwt.encode({"probe": 1}, signer, algorithm="RS256")
        except (ValueError, TypeError, UnsupportedAlgorithm, jwt.PyJWTError) as exc:
            raise SourceError(f"${var}: private_key is not an RSA key ({type(exc).__name__}); {fix}") from None
        return {k: str(v) for k, v in key.items() if isinstance(v, str)}, signer

    @property
    def _login(self) -> str:
        return "the service account key" if self._key is not None else "the OAuth client and refresh token"

    def _grant(self) -> tuple[str, dict[str, str]]:
        """The token URL and form of this source's login."""
        if self._key is not None and self._signer is not None:
            now = int(time.time())
            aud = self._key.get("token_uri") or self.options.token_url
            assertion = jwt.encode(
                {"iss": self._key["client_email"], "scope": SCOPE, "aud": aud, "iat": now, "exp": now + 3600},
                self._signer,
                algorithm="RS256",
                headers={"kid": self._key["private_key_id"]} if self._key.get("private_key_id") else None,
            )
            url = self.options.token_url if self.options.token_url != DEFAULT_TOKEN_URL else aud
            return url, {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion}
        return self.options.token_url, {
            "grant_type": "refresh_token",
            "client_id": self.secret("client_id") or "",
            "client_secret": self.secret("client_secret") or "",
            "refresh_token": self.secret("refresh_token") or "",
        }

    async def _auth(self) -> dict[str, str]:
        if self._token is None or time.monotonic() > self._expires - 60:
            login = self._login
            url, form = self._grant()
            resp = await self.http(login).request("POST", url, data=form)
            body = resp.json() if resp is not None else {}
            if not isinstance(body, dict) or "access_token" not in body:
                raise SourceError(f"Google gave no access token ({str(body)[:100]}); check {login}")
            self._token = str(body["access_token"])
            self._expires = time.monotonic() + float(body.get("expires_in", 3600))
        return {"Authorization": f"Bearer {self._token}"}

    def _review(self, r: Any, package: str) -> Entry:
        comments = r.get("comments") if isinstance(r, dict) else None
        user = next((c["userComment"] for c in comments or [] if isinstance(c, dict) and "userComment" in c), None)
        if not isinstance(r, dict) or not r.get("reviewId") or not isinstance(user, dict):
            return self.malformed(r, "Play review without reviewId or userComment")
        seconds = (user.get("lastModified") or {}).get("seconds")
        if seconds is None:
            return self.malformed(r, f"Play review {r['reviewId']} has no lastModified", str(r["reviewId"]))
        lang = user.get("reviewerLanguage")
        rec = {
            "kind": "review",
            "text": (user.get("text") or "").strip(),
            "rating": user.get("starRating"),
            "occurred_at": epoch(float(seconds)),
            "platform": "googleplay",
            "author": r.get("authorName") or None,
            "lang": lang.split("_")[0][:2] if isinstance(lang, str) and lang else None,
            "product": self.options.product,
        }
        rec = {k: v for k, v in rec.items() if v is not None}
        return self.record(r, rec, f"{package}:{r['reviewId']}:{seconds}")

    async def fetch(self, state: SourceState) -> AsyncIterator[Batch]:
        http = self.http(self._login)
        cursor = dict(state.cursor)
        for package in self.spec.accounts:
            since = float(cursor.get(package, 0))
            newest = since
            token = None
            for page in range(self.options.max_pages):
                params: dict[str, Any] = {"maxResults": 100}
                if token:
                    params["token"] = token
                url = f"{self.base_url}/androidpublisher/v3/applications/{package}/reviews"
                data = await http.get_json(url, params=params, headers=await self._auth())
                reviews = data.get("reviews", []) if isinstance(data, dict) else []
                times = []
                for r in reviews:
                    for c in r.get("comments", []) if isinstance(r, dict) else []:
                        s = (
                            (c.get("userComment") or {}).get("lastModified", {}).get("seconds")
                            if isinstance(c, dict)
                            else None
                        )
                        if s is not None:
                            times.append(float(s))
                newest = max([newest, *times])
                token = (data.get("tokenPagination") or {}).get("nextPageToken") if isinstance(data, dict) else None
                last = not token or (bool(times) and min(times) <= since) or page + 1 >= self.options.max_pages
                if last:
                    cursor[package] = newest
                yield Batch([self._review(r, package) for r in reviews], dict(cursor) if last else None)
                if last:
                    break
