"""Who may talk to the server: with an access token, every request must carry it (``?token=`` once, then the
cookie set from it); and one browser session at a time holds the server's case (a second one is refused until the
first closes), so two sessions never see or change each other's case. Requests are logged without paths or
case names."""

from __future__ import annotations

import hmac
import logging
import secrets

LOG = logging.getLogger("pedtumorseg.web")
COOKIE = "pedtumorseg_token"
WS_PATH = "/ws"


class AccessGuard:
    """An aiohttp middleware on the trame server (``on_server_bind``): token check and one websocket session."""

    def __init__(self, token: str | None):
        self.token = token or None
        self.sessions = 0
        self.refused = 0
        self._cookie_value = secrets.token_urlsafe(24) if self.token else None

    def query(self) -> str:
        return f"?token={self.token}" if self.token else ""

    def bind(self, wslinkServer) -> None:
        from aiohttp import web

        guard = self

        @web.middleware
        async def middleware(request, handler):
            return await guard.handle(request, handler)

        wslinkServer.app.middlewares.append(middleware)

    def allowed(self, request) -> bool:
        if self.token is None:
            return True
        given = request.query.get("token", "")
        if given and hmac.compare_digest(given.encode(), self.token.encode()):
            return True
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie.encode(), self._cookie_value.encode())

    async def handle(self, request, handler):
        from aiohttp import web

        if not self.allowed(request):
            self.refused += 1
            LOG.warning("refused a request without a valid access token")
            return web.Response(status=403, text="access token required")
        if request.path == WS_PATH:
            if self.sessions >= 1:
                self.refused += 1
                return web.Response(status=409, text="another browser session is using this server")
            self.sessions += 1
            try:
                return await handler(request)
            finally:
                self.sessions -= 1
        response = await handler(request)
        if self.token is not None and "token" in request.query:
            response.set_cookie(COOKIE, self._cookie_value, httponly=True, samesite="Strict")
        return response
