"""``pedtumorseg serve``: its argparse subcommand and the checks made before the server starts."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from pedtumorseg.errors import PedTumorSegError, UsageError


def add_parser(sub) -> None:
    p = sub.add_parser("serve", help="the Slicer module's workflow as a web app (needs the web extra)")
    p.add_argument("--data", required=True, help="folder of cases the browser may open (nothing else is reachable)")
    p.add_argument("--out", help="folder for the exports, one folder per case (default: <data>-exports)")
    p.add_argument("--model", action="append", default=[], help="a model bundle the browser may choose (repeat for "
                   "several; the first is the default; default: the shipped demo bundle)")
    p.add_argument("--models", help="a folder of model bundles (*.zip) the browser may choose from, after --model")
    p.add_argument("--device", default="Auto", choices=("Auto", "GPU", "CPU"))
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only); "
                   "any other address needs --token")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--sessions", type=int, default=4, help="browser sessions at once, each in its own process with "
                   "its own case (default 4; each holds a Slicer scene, ~0.5 GB)")
    p.add_argument("--token", default=None, help="access token for --host other than 127.0.0.1 (default: "
                   "$PEDTUMORSEG_TOKEN); the browser opens http://HOST:PORT/?token=TOKEN once")
    p.set_defaults(func=cmd_serve)


def _check(args: argparse.Namespace) -> None:
    """What is refused before anything starts (the rendering check runs while the first worker starts)."""
    from pedtumorseg.web import checks

    token = args.token or os.environ.get("PEDTUMORSEG_TOKEN") or None
    problem = checks.host_problem(args.host, token)
    if problem:
        raise UsageError("--host", problem)
    if args.sessions < 1:
        raise UsageError("--sessions", "must be at least 1")
    data = Path(args.data)
    if not data.is_dir():
        raise UsageError(str(data), "the --data folder does not exist")
    missing = checks.missing_packages()
    if missing:
        raise PedTumorSegError("serve: " + "; ".join(missing))
    args.token = token
    args.model = _bundles(args)


def _bundles(args: argparse.Namespace) -> list:
    """The bundles the browser may choose from, each checked now (a bad one is refused by its file name); none
    given: the shipped demo ("")."""
    from pedtumorseg.inference.bundle import load_bundle

    paths = [Path(p) for p in args.model]
    if args.models:
        folder = Path(args.models)
        if not folder.is_dir():
            raise UsageError(str(folder), "the --models folder does not exist")
        paths += sorted(folder.glob("*.zip"))
        if not paths:
            raise UsageError(str(folder), "the --models folder holds no bundle (*.zip)")
    for path in paths:
        load_bundle(path)  # BundleError names the file and the problem
    return [str(p.resolve()) for p in paths] or [""]


def _worker_command(args: argparse.Namespace, data: Path, out: Path):
    def command(session: str, port: int) -> list:
        return [sys.executable, "-m", "pedtumorseg.web.worker", "--data", str(data), "--out", str(out),
                "--uploads", str(out / "uploads" / session), "--port", str(port), "--device", args.device,
                *(part for path in args.model for part in ("--model", path))]
    return command


async def _serve(args: argparse.Namespace, launcher) -> None:
    import asyncio
    import signal

    from pedtumorseg.web import checks

    loop = asyncio.get_running_loop()
    probe = loop.run_in_executor(None, checks.rendering_problem)
    serving = asyncio.ensure_future(launcher.serve(args.host, args.port))
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, serving.cancel)
    problem = await probe
    if problem:
        serving.cancel()
        await asyncio.gather(serving, return_exceptions=True)
        raise PedTumorSegError("serve: " + problem)
    print(f"pedtumorseg serve: http://{args.host}:{args.port}/{launcher.guard.query()} (at most {args.sessions} "
          "sessions)", file=sys.stderr, flush=True)
    try:
        await serving
    except asyncio.CancelledError:
        pass


def cmd_serve(args: argparse.Namespace) -> int:
    import asyncio

    _check(args)
    from pedtumorseg.web.launcher import SessionLauncher

    data = Path(args.data).resolve()
    out = Path(args.out).resolve() if args.out else data.parent / (data.name + "-exports")
    if not os.environ.get("DISPLAY"):  # no X server: VTK's EGL window directly (the check and the workers)
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    launcher = SessionLauncher(_worker_command(args, data, out), token=args.token, max_sessions=args.sessions)
    asyncio.run(_serve(args, launcher))
    return 0
