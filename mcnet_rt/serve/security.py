"""Who may talk to the server. Loopback binds are open to the local user; any other bind needs a token (given, or
generated and printed), checked on every request — the page, its files, the API and the WebRTC offer. Every
response carries a Content-Security-Policy that lets the page load and connect only to this server."""
from __future__ import annotations

import hmac
import ipaddress
import secrets

from aiohttp import web

from ..errors import InputError

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
            raise InputError("--token must be at least 16 characters long")
        return token
    return None if is_loopback(host) else secrets.token_urlsafe(24)


def presented_token(request: web.Request) -> str | None:
    """The token sent with a request: `Authorization: Bearer T`, the cookie the page got, or `?token=T` (the URL
    printed at start-up, which sets the cookie)."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ")
    return request.cookies.get(TOKEN_COOKIE) or request.query.get("token")


def security_middleware(token: str | None):
    """Refuses requests without the token (401), refuses cross-site API calls, adds the security headers."""

    @web.middleware
    async def middleware(request: web.Request, handler):
        try:
            response = await checked(request, handler)
        except web.HTTPException as e:
            e.headers.update(SECURITY_HEADERS)
            raise
        response.headers.update(SECURITY_HEADERS)
        return response

    async def checked(request: web.Request, handler):
        if token is not None:
            given = presented_token(request)
            if given is None or not hmac.compare_digest(given.encode(), token.encode()):
                raise web.HTTPUnauthorized(text="this server needs its access token: open the URL it printed at "
                                                "start-up (…/?token=…)")
        origin = request.headers.get("Origin")
        if request.method != "GET" and origin is not None and origin.split("://", 1)[-1] != request.host:
            raise web.HTTPForbidden(text=f"cross-site request from {origin} refused")
        response = await handler(request)
        if token is not None and request.query.get("token") == token:
            response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict")
        return response

    return middleware
