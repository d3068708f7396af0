"""The session launcher of ``pedtumorseg serve`` (``pedtumorseg.web.launcher``) with small aiohttp workers in place of
the trame app (the app itself is driven in a real browser in ``test_web_browser.py``): each page gets its own worker,
requests and websockets reach only that worker, workers refuse anything without the launcher's secret, at most
``max_sessions`` run, a session ends after its page closed, and every worker ends with the launcher."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

aiohttp = pytest.importorskip("aiohttp")

from pedtumorseg.web.launcher import SessionLauncher, free_port  # noqa: E402
from pedtumorseg.web.security import SECRET_HEADER  # noqa: E402

#: a worker: the real SessionGuard in front of a page that says which session it is and an echo websocket at /ws
WORKER = """
import os, sys
from types import SimpleNamespace
from aiohttp import web
from pedtumorseg.web.security import SECRET_ENV, SessionGuard

session, port = sys.argv[1], int(sys.argv[2])
guard = SessionGuard(os.environ[SECRET_ENV])
app = web.Application()
guard.bind(SimpleNamespace(app=app))

async def page(request):
    return web.Response(text=f"session {session} {request.query_string}")

async def echo(request):
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for message in ws:
        await ws.send_str(f"{session}: {message.data}")
    return ws

app.router.add_get("/", page)
app.router.add_get("/ws", echo)
web.run_app(app, host="127.0.0.1", port=port, print=None)
"""


def _launcher(tmp_path, **kwargs) -> SessionLauncher:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return SessionLauncher(lambda session, port: [sys.executable, str(script), session, str(port)], **kwargs)


async def _with_launcher(launcher: SessionLauncher, body):
    port = free_port()
    serving = asyncio.ensure_future(launcher.serve("127.0.0.1", port))
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as client:  # cookies of an IP
        for _ in range(100):
            try:
                async with client.get(base + "/nothing"):
                    break
            except aiohttp.ClientConnectionError:
                await asyncio.sleep(0.05)
        try:
            return await body(client, base)
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


async def _new_session(client, base) -> str:
    async with client.get(base + "/", allow_redirects=False) as answer:
        assert answer.status == 302, await answer.text()
        return answer.headers["Location"]


def test_each_page_gets_its_own_worker_and_reaches_only_it(tmp_path):
    launcher = _launcher(tmp_path, max_sessions=2, spare=1)

    async def body(client, base):
        first, second = await _new_session(client, base), await _new_session(client, base)
        assert first != second and first.startswith("/s/") and first.endswith("/")
        texts = []
        for path in (first, second):
            async with client.get(base + path + "?x=1") as answer:
                texts.append(await answer.text())
        assert texts == [f"session {first[3:-1]} x=1", f"session {second[3:-1]} x=1"]
        async with client.ws_connect(base + first + "ws") as ws:  # the websocket goes both ways, to that worker
            await ws.send_str("hello")
            assert (await ws.receive()).data == f"{first[3:-1]}: hello"
            # a second page on the same session is refused while the first is connected (one case per session)
            with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
                await client.ws_connect(base + first + "ws")
            assert refused.value.status == 409
        async with client.get(base + "/", allow_redirects=False) as answer:  # both sessions in use
            assert answer.status == 503 and "2 sessions" in await answer.text()
        async with client.get(base + "/s/unknown/") as answer:
            assert answer.status == 404
        workers = list(launcher.workers.values())
        for worker in workers:  # a worker answers nobody without the launcher's secret
            async with client.get(worker.url + "/") as answer:
                assert answer.status == 403
            async with client.get(worker.url + "/", headers={SECRET_HEADER: "x" * 43}) as answer:
                assert answer.status == 403
        return workers

    workers = asyncio.run(_with_launcher(launcher, body))
    assert len(workers) == 2
    deadline = time.monotonic() + 15
    while any(w.process.poll() is None for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(w.process.poll() is not None for w in workers)  # every worker ended with the launcher


def test_a_session_ends_after_its_page_closed_and_a_spare_is_kept(tmp_path):
    launcher = _launcher(tmp_path, max_sessions=3, spare=1, grace_s=1.0)

    async def body(client, base):
        path = await _new_session(client, base)
        session = path[3:-1]
        async with client.ws_connect(base + path + "ws") as ws:
            await ws.send_str("a")
            await ws.receive()
            await asyncio.sleep(2.5)  # connected: kept beyond the grace time
            assert session in launcher.workers
        await asyncio.sleep(3.0)  # closed for longer than the grace time: ended
        assert session not in launcher.workers
        async with client.get(base + path) as answer:
            assert answer.status == 404
        spares = [w for w in launcher.workers.values() if not w.claimed]
        assert len(spares) == 1  # the next page does not wait for a worker to start
        assert await spares[0].ready
        for _ in range(3):  # asking for the status starts no session
            async with client.get(base + "/status") as answer:
                assert await answer.json() == {"sessions": 0, "max_sessions": 3, "spare_ready": True}
        assert len(launcher.workers) == 1

    asyncio.run(_with_launcher(launcher, body))


def test_the_access_token_guards_the_launcher(tmp_path):
    token = "a-token-of-the-tests-0123"
    launcher = _launcher(tmp_path, max_sessions=1, spare=0, token=token)

    async def body(client, base):
        async with client.get(base + "/", allow_redirects=False) as answer:
            assert answer.status == 403
        assert launcher.workers == {}  # refused before any worker was started
        async with client.get(base + f"/?token={token}", allow_redirects=False) as answer:
            assert answer.status == 302
            path = answer.headers["Location"]
        async with client.get(base + path) as answer:  # the cookie set from the token carries it
            assert answer.status == 200
        async with aiohttp.ClientSession() as stranger:  # the session's path alone is not enough
            async with stranger.get(base + path) as answer:
                assert answer.status == 403

    asyncio.run(_with_launcher(launcher, body))


def test_a_worker_that_does_not_start_is_said_and_not_restarted_in_a_loop(tmp_path):
    launcher = SessionLauncher(lambda session, port: [sys.executable, "-c", "raise SystemExit(3)"], max_sessions=2,
                               spare=1)

    async def body(client, base):
        async with client.get(base + "/", allow_redirects=False) as answer:
            assert answer.status == 500 and "could not be started" in await answer.text()
        spawned = []
        original = launcher._spawn
        launcher._spawn = lambda: spawned.append(1) or original()
        await asyncio.sleep(2.5)  # the reaper runs every second: no spare is started again meanwhile
        assert spawned == [] and launcher.workers == {}

    asyncio.run(_with_launcher(launcher, body))
