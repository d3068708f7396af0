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
    p.add_argument("--model", default="", help="model bundle (default: the shipped demo bundle)")
    p.add_argument("--device", default="Auto", choices=("Auto", "GPU", "CPU"))
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only); "
                   "any other address needs --token")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--token", default=None, help="access token for --host other than 127.0.0.1 (default: "
                   "$PEDTUMORSEG_TOKEN); the browser opens http://HOST:PORT/?token=TOKEN once")
    p.set_defaults(func=cmd_serve)


def _check(args: argparse.Namespace) -> None:
    from pedtumorseg.web import checks

    token = args.token or os.environ.get("PEDTUMORSEG_TOKEN") or None
    problem = checks.host_problem(args.host, token)
    if problem:
        raise UsageError("--host", problem)
    data = Path(args.data)
    if not data.is_dir():
        raise UsageError(str(data), "the --data folder does not exist")
    missing = checks.missing_packages()
    if missing:
        raise PedTumorSegError("serve: " + "; ".join(missing))
    problem = checks.rendering_problem()
    if problem:
        raise PedTumorSegError("serve: " + problem)
    args.token = token


def cmd_serve(args: argparse.Namespace) -> int:
    if not os.environ.get("DISPLAY"):  # no X server: VTK's EGL window directly, without trying X first
        os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    _check(args)
    from trame.app import get_server

    from pedtumorseg.web.app import PedTumorSegWebApp
    from pedtumorseg.web.security import AccessGuard

    data = Path(args.data).resolve()
    out = Path(args.out).resolve() if args.out else data.parent / (data.name + "-exports")
    server = get_server("pedtumorseg", client_type="vue3")
    guard = AccessGuard(args.token)
    server.controller.on_server_bind.add(guard.bind)
    PedTumorSegWebApp(server, dataRoot=data, outRoot=out, modelPath=args.model, device=args.device)
    print(f"pedtumorseg serve: http://{args.host}:{args.port}/{guard.query()}", file=sys.stderr, flush=True)
    server.start(host=args.host, port=args.port, open_browser=False, show_connection_info=False,
                 disable_logging=True, exec_mode="main", timeout=0)
    return 0
