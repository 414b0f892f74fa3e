"""What every request of the web app goes through: the access token, the CSRF check, the body bound and the
security headers.

* **Token.** Off a loopback address the app needs a token (:func:`check_bind` refuses to start without one);
  with a token, a request carries it as ``Authorization: Bearer <token>`` or in the cookie set when a
  browser first opens ``/?token=<token>`` (then redirected to the same page without it, so the token does
  not stay in the address bar or the history). Anything else is refused with 401.
* **CSRF.** Every response sets a random ``cl_plugin_csrf`` cookie if the browser has none; every form
  carries its value in a hidden ``csrf`` field, and a POST whose field (or ``X-CSRF-Token`` header) does not
  match the cookie is refused with 403 (double-submit: another site can make the browser send the cookie,
  but cannot read it to put it in the form).
* **Bodies** larger than :data:`MAX_BODY` are refused with 413, before they are read.
* **Headers**: a Content-Security-Policy that allows scripts from this origin only (the app's one script is
  a file; no inline script), ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer`` and no
  framing.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode

from starlette.datastructures import MutableHeaders
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cl_plugin.errors import ConfigError

__all__ = ["CSRF_COOKIE", "MAX_BODY", "TOKEN_COOKIE", "SecurityMiddleware", "check_bind", "form"]

#: Largest request body accepted, in bytes (a label form is a few hundred).
MAX_BODY = 64 * 1024
CSRF_COOKIE = "cl_plugin_csrf"
TOKEN_COOKIE = "cl_plugin_token"
TOKEN_ENV = "CL_PLUGIN_SERVE_TOKEN"

HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "style-src 'self' 'unsafe-inline'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
    "cache-control": "no-store",
}


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address or ``localhost``."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse to serve on a non-loopback address without a token.

    Raises:
        ConfigError: ``host`` is not a loopback address and no token is given.
    """
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"serving on {host} makes the dashboard reachable from other machines: pass --token or set "
            f"{TOKEN_ENV} (every request then needs it), or bind to 127.0.0.1",
            key="token",
        )


class SecurityMiddleware:
    """The token, the body bound, the CSRF cookie and the headers, around every HTTP request."""

    def __init__(self, app: ASGIApp, token: str | None = None) -> None:
        self.app, self.token = app, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            await self._respond(PlainTextResponse("request body too large", 413), scope, receive, send)
            return
        if self.token is not None:
            given = request.query_params.get("token")
            if given is not None and _same(given, self.token):
                await self._respond(self._enter(request), scope, receive, send)
                return
            if not self._allowed(request):
                await self._respond(
                    PlainTextResponse("a token is needed: Authorization: Bearer <token>", 401),
                    scope,
                    receive,
                    send,
                )
                return
        csrf = request.cookies.get(CSRF_COOKIE)
        if not csrf:
            csrf = secrets.token_urlsafe(24)
            scope.setdefault("state", {})["csrf_new"] = csrf
        scope.setdefault("state", {})["csrf"] = csrf
        await self.app(scope, _bounded(receive), self._decorated(send, scope))

    def _allowed(self, request: Request) -> bool:
        auth = request.headers.get("authorization", "")
        if auth.lower().startswith("bearer ") and _same(auth[7:].strip(), self.token or ""):
            return True
        return _same(request.cookies.get(TOKEN_COOKIE, ""), self.token or "")

    def _enter(self, request: Request) -> RedirectResponse:
        """The token given in the query: remember it in a cookie and drop it from the address."""
        rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
        target = request.url.path + (f"?{urlencode(rest)}" if rest else "")
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(TOKEN_COOKIE, self.token or "", httponly=True, samesite="strict")
        return response

    def _decorated(self, send: Send, scope: Scope) -> Send:
        async def wrapped(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for key, value in HEADERS.items():
                    headers.setdefault(key, value)
                new = scope["state"].get("csrf_new")
                if new:
                    headers.append("set-cookie", f"{CSRF_COOKIE}={new}; Path=/; SameSite=Strict")
            await send(message)

        return wrapped

    async def _respond(self, response: Any, scope: Scope, receive: Receive, send: Send) -> None:
        await response(scope, receive, self._decorated(send, {**scope, "state": {}}))


def _bounded(receive: Receive) -> Receive:
    """``receive`` that stops a body sent without a Content-Length (chunked) past :data:`MAX_BODY`."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > MAX_BODY:
                raise BodyTooLarge()
        return message

    return wrapped


class BodyTooLarge(Exception):
    """A request body past :data:`MAX_BODY` (sent without a Content-Length)."""


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


async def form(request: Request) -> dict[str, str] | None:
    """The POSTed form's fields (URL-encoded, one value each), or None when its CSRF token does not match
    the cookie: the caller answers 403."""
    try:
        body = await request.body()
        parsed = parse_qs(body.decode("utf-8", "replace"), max_num_fields=50)
    except (BodyTooLarge, ValueError):  # past the bound, or more fields than any form of the app has
        return None
    fields = {k: v[-1] for k, v in parsed.items()}
    cookie = request.cookies.get(CSRF_COOKIE, "")
    given = fields.get("csrf") or request.headers.get("x-csrf-token", "")
    if not cookie or not given or not _same(given, cookie):
        return None
    return fields
