"""The address ``pedtumorseg serve`` gives the browser: one worker process per browser session behind it.

A trame server holds one state shared by every page connected to it, and trame-slicer one MRML scene, so sessions
that must not see each other's case cannot share a process. The launcher (aiohttp only: it imports neither trame nor
VTK) answers ``/`` by handing the page a session of its own, ``/s/<id>/``, served by a worker process
(``pedtumorseg.web.worker``: the trame app, its own scene, uploads and exports) bound to 127.0.0.1 on a port of its
own, and forwards that path's requests and websocket to it, adding a secret only the launcher knows (the worker
refuses anything without it, so another local user cannot reach a worker directly). One worker is kept started
ahead, so that a new page does not wait for Slicer's scene and views. A session ends ``grace_s`` after its page
closed or, if no page ever connected, after it was handed out (a reload within that time finds it again); at most
``max_sessions`` run at once (then ``/`` answers 503).
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass

from pedtumorseg.web.security import SECRET_ENV, SECRET_HEADER, AccessGuard

LOG = logging.getLogger("pedtumorseg.web")
SESSION_PREFIX = "/s/"
#: headers that belong to one hop and are not forwarded (aiohttp sets its own)
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
                        "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"})
WORKER_START_S = 180.0
SPARE_BACKOFF_S = 30.0
REAP_EVERY_S = 1.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _signal(process: subprocess.Popen, number: int) -> None:
    try:
        os.killpg(process.pid, number)
    except ProcessLookupError:
        pass


def _kill_if_alive(process: subprocess.Popen) -> None:
    if process.poll() is None:
        _signal(process, signal.SIGKILL)


@dataclass
class Worker:
    """One session's worker process."""

    session: str
    port: int
    secret: str
    process: subprocess.Popen
    ready: asyncio.Future
    claimed: bool = False
    sockets: int = 0
    idle_since: float = 0.0  # monotonic time since which no page is connected

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.process.poll() is None


class SessionLauncher:
    """``command(session, port)``: the worker's command line; it must serve the app on 127.0.0.1:``port`` and read
    its secret from ``$PEDTUMORSEG_SESSION_SECRET``. ``token``: the access token of the browser's address."""

    def __init__(self, command: Callable[[str, int], list], *, token: str | None = None, max_sessions: int = 4,
                 spare: int = 1, grace_s: float = 30.0, env: dict | None = None):
        if max_sessions < 1:
            raise ValueError("max_sessions must be at least 1")
        self.command = command
        self.guard = AccessGuard(token)
        self.max_sessions = max_sessions
        self.spare = min(spare, max_sessions)
        self.grace_s = grace_s
        self.env = dict(os.environ if env is None else env)
        self.workers: dict[str, Worker] = {}
        self._client = None
        self._spare_after = 0.0  # no spare is started before this time (monotonic) after a worker failed to start

    # -- workers -------------------------------------------------------------------------------------------------
    def _spawn(self) -> Worker:
        session, secret, port = secrets.token_urlsafe(12), secrets.token_urlsafe(32), free_port()
        process = subprocess.Popen(self.command(session, port), env=dict(self.env, **{SECRET_ENV: secret}),
                                   stdin=subprocess.DEVNULL, start_new_session=True)
        worker = Worker(session, port, secret, process, asyncio.get_running_loop().create_future(),
                        idle_since=time.monotonic())
        self.workers[session] = worker
        asyncio.ensure_future(self._wait_ready(worker))
        return worker

    async def _wait_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + WORKER_START_S
        while time.monotonic() < deadline and worker.alive:
            try:
                async with self._client.get(worker.url + "/", headers={SECRET_HEADER: worker.secret}) as answer:
                    if answer.status == 200:
                        worker.ready.set_result(True)
                        return
            except OSError:
                pass
            await asyncio.sleep(0.05)
        self.stop(worker)
        self._spare_after = time.monotonic() + SPARE_BACKOFF_S  # not a crash loop of spares
        worker.ready.set_result(False)

    def _top_up(self) -> None:
        """Keep ``spare`` unclaimed workers starting or ready, within ``max_sessions``."""
        spare = sum(1 for w in self.workers.values() if not w.claimed)
        while time.monotonic() >= self._spare_after and spare < self.spare and len(self.workers) < self.max_sessions:
            self._spawn()
            spare += 1

    async def claim(self) -> tuple[Worker | None, str]:
        """A ready worker for a new session, or None and why not (``max_sessions`` in use, the worker did not
        start)."""
        free = [w for w in self.workers.values() if not w.claimed]
        if not free:
            if len(self.workers) >= self.max_sessions:
                return None, "busy"
            free = [self._spawn()]
        worker = free[0]
        worker.claimed, worker.idle_since = True, time.monotonic()
        self._top_up()
        if not await worker.ready:
            LOG.error("a session's worker did not start (exit status %s)", worker.process.poll())
            return None, "failed"
        return worker, ""

    def stop(self, worker: Worker, wait: float = 0.0) -> None:
        """SIGTERM to the worker's process group (the worker cancels its prediction run first), SIGKILL if it is
        still there after 10 s; ``wait``: seconds to wait for it here (0: the event loop checks later)."""
        self.workers.pop(worker.session, None)
        if not worker.alive:
            return
        _signal(worker.process, signal.SIGTERM)
        if not wait:
            asyncio.get_running_loop().call_later(10, _kill_if_alive, worker.process)
            return
        try:
            worker.process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            _signal(worker.process, signal.SIGKILL)

    async def _reap(self) -> None:
        """Ends the sessions without a page for more than ``grace_s``, forgets workers that exited, keeps the spare
        started."""
        while True:
            await asyncio.sleep(REAP_EVERY_S)
            now = time.monotonic()
            for worker in list(self.workers.values()):
                idle = now - worker.idle_since
                if not worker.alive:
                    self.workers.pop(worker.session, None)
                elif worker.claimed and worker.sockets == 0 and idle > self.grace_s and worker.ready.done():
                    LOG.info("a session ended")
                    self.stop(worker)
            self._top_up()

    # -- requests ------------------------------------------------------------------------------------------------
    async def index(self, request):
        """``/``: a new session, the page redirected to its own path."""
        from aiohttp import web

        worker, why = await self.claim()
        if why == "busy":
            return web.Response(status=503, text=f"all {self.max_sessions} sessions of this server are in use; "
                                                 "try again when one is closed")
        if worker is None:
            return web.Response(status=500, text="the session could not be started; the server's log says why")
        LOG.info("a session started (%d running)", sum(w.claimed for w in self.workers.values()))
        return web.Response(status=302, headers={"Location": f"{SESSION_PREFIX}{worker.session}/"})

    async def status(self, request):
        """``/status``: how many sessions run, and whether a new page would get a worker at once (no session is
        started by asking)."""
        from aiohttp import web

        workers = list(self.workers.values())
        return web.json_response({"sessions": sum(w.claimed for w in workers), "max_sessions": self.max_sessions,
                                  "spare_ready": any(not w.claimed and w.ready.done() and w.ready.result()
                                                     for w in workers)})

    async def forward(self, request):
        """``/s/<id>/<path>``: to the session's worker (a websocket both ways, anything else once)."""
        from aiohttp import web

        worker = self.workers.get(request.match_info["session"])
        if worker is None or not worker.claimed or not worker.alive:
            return web.Response(status=404, text="this session has ended: open the server's address again")
        target = f"{worker.url}/{request.match_info['tail']}"
        if request.query_string:
            target += "?" + request.query_string
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._forward_websocket(request, worker, target.replace("http://", "ws://", 1))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP and k != SECRET_HEADER}
        headers[SECRET_HEADER] = worker.secret
        async with self._client.request(request.method, target, headers=headers, data=await request.read(),
                                        allow_redirects=False) as answer:
            body = await answer.read()
            out = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            return web.Response(status=answer.status, body=body, headers=out)

    async def _forward_websocket(self, request, worker: Worker, target: str):
        from aiohttp import WSMsgType, web

        protocols = [p.strip() for p in request.headers.get("Sec-WebSocket-Protocol", "").split(",") if p.strip()]
        try:
            upstream = await self._client.ws_connect(target, headers={SECRET_HEADER: worker.secret},
                                                     protocols=protocols, max_msg_size=0)
        except Exception:  # the worker refused (e.g. 409: the session is open in another page) or is gone
            return web.Response(status=409, text="this session is open in another page")
        page = web.WebSocketResponse(protocols=protocols, max_msg_size=0)
        await page.prepare(request)
        worker.sockets += 1

        async def pump(source, sink):
            async for message in source:
                if message.type == WSMsgType.TEXT:
                    await sink.send_str(message.data)
                elif message.type == WSMsgType.BINARY:
                    await sink.send_bytes(message.data)
                else:
                    break

        try:
            tasks = [asyncio.ensure_future(pump(page, upstream)), asyncio.ensure_future(pump(upstream, page))]
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in tasks:
                task.cancel()
        finally:
            worker.sockets -= 1
            worker.idle_since = time.monotonic()
            await upstream.close()
            await page.close()
        return page

    # -- server --------------------------------------------------------------------------------------------------
    def application(self):
        from aiohttp import web

        app = web.Application(middlewares=[self.guard.middleware()], client_max_size=1024 ** 3)
        app.router.add_get("/", self.index)
        app.router.add_get("/status", self.status)
        app.router.add_route("*", SESSION_PREFIX + "{session}/{tail:.*}", self.forward)
        return app

    async def serve(self, host: str, port: int, started: Callable[[], None] | None = None) -> None:
        """Listen on ``host:port`` until cancelled (SIGINT/SIGTERM); stops every worker on the way out."""
        import aiohttp
        from aiohttp import web

        self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, sock_connect=5))
        runner = web.AppRunner(self.application(), access_log=None)
        await runner.setup()
        try:
            self._top_up()
            await web.TCPSite(runner, host, port).start()
            if started is not None:
                started()
            await self._reap()
        finally:
            for worker in list(self.workers.values()):
                self.stop(worker, wait=10)
            await runner.cleanup()
            await self._client.close()
