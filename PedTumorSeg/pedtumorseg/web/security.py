"""Who may talk to the server. Two checks, both aiohttp middlewares:

- :class:`AccessGuard` on the address the browser opens (the session launcher): with an access token, every request
  must carry it (``?token=`` once, then the cookie set from it).
- :class:`SessionGuard` on each session's worker (bound to 127.0.0.1 only): every request must carry the secret that
  only the launcher knows (a header the launcher adds when it forwards), and one websocket at a time holds the
  worker's case, so that a second page cannot see or change the first page's case even by guessing its address.

Requests are logged without paths or case names."""

from __future__ import annotations

import hmac
import logging
import secrets

LOG = logging.getLogger("pedtumorseg.web")
COOKIE = "pedtumorseg_token"
WS_PATH = "/ws"
#: the header the launcher adds to every request it forwards to a session's worker
SECRET_HEADER = "X-PedTumorSeg-Session"
#: the environment variable that hands the worker its secret (not the command line: ``ps`` shows that to everyone)
SECRET_ENV = "PEDTUMORSEG_SESSION_SECRET"


def _same(given: str, expected: str) -> bool:
    return bool(given) and hmac.compare_digest(given.encode(), expected.encode())


class AccessGuard:
    """The access token of the address the browser opens (None: no token, the local address only)."""

    def __init__(self, token: str | None):
        self.token = token or None
        self.refused = 0
        self._cookie_value = secrets.token_urlsafe(24) if self.token else None

    def query(self) -> str:
        return f"?token={self.token}" if self.token else ""

    def allowed(self, request) -> bool:
        if self.token is None:
            return True
        return _same(request.query.get("token", ""), self.token) or \
            _same(request.cookies.get(COOKIE, ""), self._cookie_value)

    def middleware(self):
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            if not self.allowed(request):
                self.refused += 1
                LOG.warning("refused a request without a valid access token")
                return web.Response(status=403, text="access token required")
            response = await handler(request)
            if self.token is not None and "token" in request.query:
                response.set_cookie(COOKIE, self._cookie_value, httponly=True, samesite="Strict")
            return response

        return guard


class SessionGuard:
    """The worker's side: the launcher's secret on every request, at most one websocket."""

    def __init__(self, secret: str):
        if not secret or len(secret) < 16:
            raise ValueError("a session worker needs a secret of at least 16 characters")
        self.secret = secret
        self.sockets = 0
        self.refused = 0

    def bind(self, wslinkServer) -> None:
        """``on_server_bind`` of the worker's trame server."""
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            return await self.handle(request, handler)

        wslinkServer.app.middlewares.append(guard)

    async def handle(self, request, handler):
        from aiohttp import web

        if not _same(request.headers.get(SECRET_HEADER, ""), self.secret):
            self.refused += 1
            return web.Response(status=403, text="not reachable directly")
        if request.path != WS_PATH:
            return await handler(request)
        if self.sockets >= 1:
            self.refused += 1
            return web.Response(status=409, text="this session is open in another page")
        self.sockets += 1
        try:
            return await handler(request)
        finally:
            self.sockets -= 1
