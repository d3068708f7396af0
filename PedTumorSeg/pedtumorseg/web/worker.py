"""One browser session's process, started by the launcher (``pedtumorseg.web.launcher``): the trame app with its own
Slicer scene on 127.0.0.1, reachable only with the secret the launcher passes in ``$PEDTUMORSEG_SESSION_SECRET``.

    python -m pedtumorseg.web.worker --data DIR --out DIR --uploads DIR --port N [--model B ...] [--device D]

It ends when the launcher sends SIGTERM (a running prediction is cancelled first) or when the launcher is gone.
"""

from __future__ import annotations

import argparse
import os
import signal
import threading
import time

from pedtumorseg.web.security import SECRET_ENV, SessionGuard

PARENT_CHECK_S = 2.0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pedtumorseg.web.worker", description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--uploads", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--model", action="append", default=[], help="a bundle to choose from (repeated; the first is "
                   "the default; none: the shipped demo)")
    p.add_argument("--device", default="Auto")
    return p


def _end_with_the_launcher(app) -> None:
    """A thread: the launcher is this process's parent; when it is gone (killed), cancel the run and exit."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_S)
        _exit(app)

    threading.Thread(target=watch, daemon=True).start()


def _exit(app, *_) -> None:
    try:
        app.workflow.cancel()  # the prediction runs in its own process group: not reached by the launcher's signal
    finally:
        os._exit(0)


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    guard = SessionGuard(os.environ.pop(SECRET_ENV, ""))
    from trame.app import get_server

    from pedtumorseg.web.app import PedTumorSegWebApp

    server = get_server("pedtumorseg", client_type="vue3")
    server.controller.on_server_bind.add(guard.bind)
    app = PedTumorSegWebApp(server, dataRoot=args.data, outRoot=args.out, uploadRoot=args.uploads,
                            models=args.model or [""], device=args.device)
    signal.signal(signal.SIGTERM, lambda *_: _exit(app))
    _end_with_the_launcher(app)
    server.start(host="127.0.0.1", port=args.port, open_browser=False, show_connection_info=False,
                 disable_logging=True, exec_mode="main", timeout=0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
