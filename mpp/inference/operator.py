"""The operator page: where the money is, behind an admin key.

Routes (only when the settings carry an admin key; without one they do not exist: 404):

- `GET /operator`: the page (self-contained HTML: inline CSS and JS, no external fetch, a
  strict Content-Security-Policy). Without a valid session, 401 and a login form.
- `POST /operator/login` (form field `key`): a right key sets an HttpOnly, SameSite=Strict
  session cookie and redirects to the page; a wrong one is 401, and past a few wrong keys per
  peer, key attempts get 429 (a valid session still works). The key never goes in a URL (it
  would end up in logs and browser history).
- `POST /operator/logout`: drops the cookie.
- `GET /operator/api/summary`: the JSON the page reads; also with `Authorization: Bearer <key>`.

The cookie holds an HMAC of a per-process salt under the key, not the key: a restart ends all
sessions. Keys and cookies are compared with `hmac.compare_digest`.

Amounts are integer base units, sent as decimal strings with a display text made with integer
arithmetic (`format_amount`).
"""

from __future__ import annotations

import hashlib
import hmac
import html
import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs

import anyio.to_thread
from starlette.requests import ClientDisconnect, Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from mpp.core.amounts import format_decimals
from mpp.http.server.metrics import ChannelFigures, channel_figures, totals
from mpp.http.server.ratelimit import RateLimiter
from mpp.inference.observe import Observability
from mpp.inference.settings import InferenceSettings

__all__ = ["OPERATOR_PATHS", "OperatorPage", "format_amount", "operator_routes"]

PAGE: Final = "/operator"
LOGIN: Final = "/operator/login"
LOGOUT: Final = "/operator/logout"
SUMMARY: Final = "/operator/api/summary"
OPERATOR_PATHS: Final = frozenset({PAGE, LOGIN, LOGOUT, SUMMARY})
COOKIE: Final = "mpp_operator"
SESSION_SECONDS: Final = 12 * 3600
MAX_FORM: Final = 4096
MAX_CHANNELS: Final = 200  # rows sent to the page (newest first); totals cover all


def format_amount(base: int, decimals: int | None) -> str | None:
    """`1234567, 6` → `"1.234567"`; None when the decimals are unknown. Integers only."""
    return None if decimals is None else format_decimals(base, decimals)


def _template(name: str) -> str:
    return resources.files("mpp.inference").joinpath(name).read_text(encoding="utf-8")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _csp(nonce: str) -> str:
    return (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    )


_HEADERS: Final = {
    "cache-control": "no-store",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


class OperatorPage:
    """The page's routes over one app's settings and observability (see the module doc)."""

    def __init__(
        self,
        key: str,
        settings: InferenceSettings,
        observe: Observability,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = key.encode()
        self._session = hmac.new(self._key, b"mpp-operator|" + os.urandom(16), hashlib.sha256)
        self.settings = settings
        self.observe = observe
        self._clock = clock
        self._failures = RateLimiter(rate=0.2, burst=5)  # wrong keys per peer
        self._page = _template("operator.html")
        self._login = _template("operator_login.html")

    def routes(self) -> list[Route]:
        return [
            Route(PAGE, self.page, methods=["GET"]),
            Route(LOGIN, self.login, methods=["POST"]),
            Route(LOGOUT, self.logout, methods=["POST"]),
            Route(SUMMARY, self.summary, methods=["GET"]),
        ]

    # --- auth -----------------------------------------------------------------------------------

    def _token(self) -> str:
        return self._session.hexdigest()

    def _peer(self, request: Request) -> str:
        return request.client.host if request.client else ""

    def _wait(self, request: Request) -> float:
        """Seconds until this peer may try a key again (0: now)."""
        return self._failures.waiting(self._peer(request))

    def _key_ok(self, request: Request, given: bytes) -> bool:
        if given and hmac.compare_digest(given, self._key):
            return True
        self._failures.acquire(self._peer(request))
        return False

    def _auth(self, request: Request) -> bool | None:
        """True: a valid session cookie or bearer key. False: neither. None: a bearer key from
        a peer past its rate of wrong keys, not even compared. A valid cookie always works, so
        wrong keys sent from the operator's address (a shared proxy) cannot lock them out."""
        cookie = request.cookies.get(COOKIE, "")
        if cookie and hmac.compare_digest(cookie.encode(), self._token().encode()):
            return True
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return False
        if self._wait(request) > 0:
            return None
        return self._key_ok(request, given.strip().encode())

    # --- routes ---------------------------------------------------------------------------------

    async def page(self, request: Request) -> Response:
        auth = self._auth(request)
        if auth is None:
            return self._login_page(429, "Too many wrong keys; try again later.", request)
        if not auth:
            return self._login_page(401)
        nonce = secrets.token_urlsafe(16)
        body = self._page.replace("{{nonce}}", nonce)
        return HTMLResponse(body, headers={**_HEADERS, "content-security-policy": _csp(nonce)})

    async def login(self, request: Request) -> Response:
        if self._wait(request) > 0:
            return self._login_page(429, "Too many wrong keys; try again later.", request)
        form = await _read_form(request)
        if form is None:
            return self._login_page(400, "The login form could not be read.")
        if not self._key_ok(request, form.get("key", [""])[0].encode()):
            return self._login_page(401, "Wrong admin key.")
        response = RedirectResponse(PAGE, status_code=303, headers=_HEADERS)
        response.set_cookie(
            COOKIE,
            self._token(),
            max_age=SESSION_SECONDS,
            path=PAGE,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(PAGE, status_code=303, headers=_HEADERS)
        response.delete_cookie(COOKIE, path=PAGE, httponly=True, samesite="strict")
        return response

    async def summary(self, request: Request) -> Response:
        auth = self._auth(request)
        if not auth:
            if auth is None:
                retry = str(RateLimiter.retry_after(self._wait(request)))
                headers = {**_HEADERS, "retry-after": retry}
                return JSONResponse({"error": "too many wrong keys"}, 429, headers=headers)
            headers = {**_HEADERS, "www-authenticate": 'Bearer realm="mpp-operator"'}
            return JSONResponse({"error": "admin key required"}, 401, headers=headers)
        body = await anyio.to_thread.run_sync(self.summary_body)
        return JSONResponse(body, headers=_HEADERS)

    def _login_page(
        self, status: int, message: str = "", request: Request | None = None
    ) -> Response:
        nonce = secrets.token_urlsafe(16)
        text = f'<p class="error">{html.escape(message)}</p>' if message else ""
        body = self._login.replace("{{nonce}}", nonce).replace("{{message}}", text)
        headers = {**_HEADERS, "content-security-policy": _csp(nonce)}
        if status == 401:
            headers["www-authenticate"] = 'Bearer realm="mpp-operator"'
        if status == 429 and request is not None:
            headers["retry-after"] = str(RateLimiter.retry_after(self._wait(request)))
        return HTMLResponse(body, status_code=status, headers=headers)

    # --- the summary ----------------------------------------------------------------------------

    def _amount(self, base: int) -> dict[str, str | None]:
        return {"base": str(base), "text": format_amount(base, self.settings.currency_decimals)}

    def _channel(self, f: ChannelFigures) -> dict[str, Any]:
        return {
            "channelId": f.channel_id,
            "payer": f.payer,
            "state": f.state,
            "deposit": self._amount(f.deposit),
            "accepted": self._amount(f.accepted),
            "spent": self._amount(f.spent),
            "settled": self._amount(f.settled),
            "unsettled": self._amount(f.unsettled),
            "updatedAt": _iso(f.updated_at) if f.updated_at else None,
        }

    def summary_body(self) -> dict[str, Any]:
        """What the page shows (blocking: reads the store)."""
        pay = self.settings.payment
        figures = channel_figures(pay.engine) if pay is not None else []
        sums = totals(figures)
        newest = sorted(figures, key=lambda f: f.updated_at, reverse=True)[:MAX_CHANNELS]
        series = self.observe.series
        now = int(self._clock())
        points = series.points()
        if points[-1][0] < now:
            points.append((now, series.total))  # the line runs up to now
        metrics = self.observe.payment
        watcher = self.settings.watcher.status() if self.settings.watcher else None
        return {
            "now": _iso(now),
            "currency": pay.engine.terms.currency if pay is not None else None,
            "decimals": self.settings.currency_decimals,
            "totals": {
                "channels": sums.channels,
                "deposit": self._amount(sums.deposit),
                "accepted": self._amount(sums.accepted),
                "spent": self._amount(sums.spent),
                "settled": self._amount(sums.settled),
                "unsettled": self._amount(sums.unsettled),
            },
            "channels": [self._channel(f) for f in newest],
            "channelsTotal": len(figures),
            "spend": {
                "since": _iso(series.since),
                "total": self._amount(series.total),
                "points": [[t, str(v)] for t, v in points],
            },
            "refusals": [
                {"reason": r.reason, "at": _iso(r.at), "channelId": r.channel_id}
                for r in (metrics.recent_refusals() if metrics is not None else [])
            ],
            "streams": {
                "active": metrics.active_streams if metrics is not None else 0,
                "pauses": metrics.pauses if metrics is not None else 0,
            },
            "watcher": None
            if watcher is None
            else {
                "head": watcher.head,
                "cursor": watcher.cursor,
                "lagBlocks": watcher.lag_blocks,
                "failures": watcher.failures,
                "running": watcher.running,
                "lastOk": _iso(watcher.last_ok) if watcher.last_ok else None,
            },
        }


async def _read_form(request: Request) -> dict[str, list[str]] | None:
    """An urlencoded form of at most MAX_FORM bytes; None for anything else."""
    if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        return None
    body = b""
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM:
                return None
    except ClientDisconnect:
        return None
    try:
        return parse_qs(body.decode("utf-8"), max_num_fields=8)
    except (UnicodeDecodeError, ValueError):
        return None


def operator_routes(settings: InferenceSettings, observe: Observability) -> list[Route]:
    """The page's routes; none without an admin key (the page is off: 404)."""
    if not settings.admin_key:
        return []
    return OperatorPage(settings.admin_key, settings, observe).routes()
