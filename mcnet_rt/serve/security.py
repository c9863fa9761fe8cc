"""Who may talk to the server. Loopback binds are open to the local user; any other bind needs a token (given, or
generated and printed), checked on every request — the page, its files, the API and the WebRTC offer. Without a
token only loopback Host names are served (a DNS-rebinding page names its own host and is refused with 421). Every
response, errors and our own failures (500, logged with their traceback) included, carries a
Content-Security-Policy that lets the page load and connect only to this server."""
from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import urllib.parse

from aiohttp import web

from ..errors import InputError

log = logging.getLogger("mcnet_rt.serve")

TOKEN_COOKIE = "mcnet_rt_token"
# The page's own files only; media are the camera and the WebRTC stream (blob:/mediastream:); no other host.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                           "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_token(host: str, token: str | None) -> str | None:
    """The token the server will require: the one given, a new one for a non-loopback bind, or None (loopback)."""
    if token is not None:
        if len(token) < 16:
            raise InputError("the access token must be at least 16 characters long", options=("token",))
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def presented_tokens(request: web.Request) -> list[str]:
    """The tokens sent with a request: `?token=T` (the URL printed at start-up, which sets the cookie),
    `Authorization: Bearer T` and the cookie the page got. Any of them may be right: a stale cookie from an earlier
    run does not hide a correct `?token=`."""
    header = request.headers.get("Authorization", "")
    given = [request.query.get("token"), header.removeprefix("Bearer ") if header.startswith("Bearer ") else None,
             request.cookies.get(TOKEN_COOKIE)]
    return [t for t in given if t is not None]


def token_matches(given: str, token: str) -> bool:
    """Constant-time comparison; header bytes that are not UTF-8 reach us as surrogates and simply do not match."""
    return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), token.encode())


def loopback_host(request: web.Request) -> bool:
    """The request's Host names this server by a loopback address or `localhost`, with its own port. A page from
    another site that rebinds its name to 127.0.0.1 still sends that name (an attacker owns names, not addresses)."""
    sockname = request.transport.get_extra_info("sockname") if request.transport is not None else None
    try:
        host = urllib.parse.urlsplit("//" + request.headers.get("Host", ""))
        port = host.port or 80
    except ValueError:  # a port that is not a number, or out of range
        return False
    return bool(sockname) and host.hostname is not None and is_loopback(host.hostname) and port == sockname[1]


def security_middleware(token: str | None):
    """Refuses requests without the token (401), with a foreign Host when there is no token (421), cross-site API
    calls (403); turns our own failures into a logged traceback and a plain 500; adds the security headers."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        try:
            response = await checked(request, handler)
        except web.HTTPException as e:
            e.headers.update(SECURITY_HEADERS)
            raise
        except Exception:
            log.exception("%s %s failed", request.method, request.path)
            response = web.json_response({"error": "the server failed to handle this request (its log says why)"},
                                         status=500)
        response.headers.update(SECURITY_HEADERS)
        return response

    async def checked(request: web.Request, handler):
        if token is None and not loopback_host(request):
            raise web.HTTPMisdirectedRequest(text="this server answers only to loopback names (127.0.0.1, localhost, "
                                                  "[::1]) with its port; it serves others only with an access token")
        if token is not None:
            given = presented_tokens(request)
            if not any(token_matches(t, token) for t in given):
                raise web.HTTPUnauthorized(text="this server needs its access token: open the URL it printed at "
                                                "start-up (…/?token=…)")
        origin = request.headers.get("Origin")
        if request.method != "GET" and origin is not None and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text=f"cross-site request from {origin} refused")
        response = await handler(request)
        if token is not None and token_matches(request.query.get("token", ""), token):
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    return middleware
