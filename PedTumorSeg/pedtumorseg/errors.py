"""Errors shown to users: one line that names the file (when there is one) and the problem."""

from __future__ import annotations

import contextlib
import os


class PedTumorSegError(Exception):
    """Base class of every error this package raises on purpose."""


class InputError(PedTumorSegError):
    """A file or folder given by the user cannot be used.

    ``str(err)`` is a single line ``<path>: <problem>`` suitable for a CLI or a Slicer status line.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")


class BundleError(PedTumorSegError):
    """A model bundle is missing, corrupt or incompatible."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")


class UsageError(PedTumorSegError):
    """A command-line mistake: a missing or contradictory option, a value out of range (exit status 2)."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(problem if path is None else f"{self.path}: {problem}")


class PredictionError(PedTumorSegError):
    """The model produced an unusable result (e.g. non-finite values) or cannot run on the chosen device."""


class Cancelled(PedTumorSegError):
    """The user cancelled a running prediction."""


# --- the one place where command-line tools turn errors into a line and an exit status ---------------------

#: exit statuses of every command-line tool: bad input or a failed case, bad command line, interrupted
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_CANCELLED = 130
TRACEBACK_ENV = "PEDTUMORSEG_TRACEBACK"


def describe_os_error(exc: OSError) -> str:
    """``<file>: <problem>`` for an ``OSError`` (a full disk, a read-only folder, a vanished file)."""
    if exc.filename is not None and exc.strerror:
        return f"{os.fsdecode(exc.filename)}: {exc.strerror}"
    return str(exc) or type(exc).__name__


def run_command(prog: str, func, args) -> int:
    """Run ``func(args)`` for the command-line tool ``prog`` and return its exit status.

    Every failure ends in one line ``<prog>: error: <file>: <problem>`` on stderr and a non-zero status:
    2 for a command-line mistake (``UsageError``; argparse's own errors exit 2 too), 1 for bad input, an unusable
    output location or a failed case (``PedTumorSegError``, ``OSError``, ``MemoryError``, and a ``ValueError`` a
    library raised about the data), 130 when interrupted (Ctrl-C, SIGTERM or ``Cancelled``). SIGTERM is turned
    into ``KeyboardInterrupt`` while ``func`` runs so that temporary files are removed on the way out, and SIGXFSZ
    (a file-size limit) is ignored so that the write fails as on a full disk. Anything else is a bug: one line that
    says so (``PEDTUMORSEG_TRACEBACK=1`` shows the traceback).
    """
    import sys

    def say(message: str) -> None:
        print(f"{prog}: error: {message}", file=sys.stderr, flush=True)

    with _command_signals():
        return _run_reporting(func, args, say)


def _run_reporting(func, args, say) -> int:
    try:
        return int(func(args) or 0)
    except (KeyboardInterrupt, Cancelled):
        say("interrupted")
        return EXIT_CANCELLED
    except UsageError as exc:
        say(str(exc))
        return EXIT_USAGE
    except (PedTumorSegError, ValueError) as exc:  # a ValueError of a library: about the data, not the command line
        say(str(exc))
        return EXIT_FAILED
    except OSError as exc:
        say(describe_os_error(exc))
        return EXIT_FAILED
    except MemoryError:
        say("out of memory")
        return EXIT_FAILED
    except Exception as exc:
        if os.environ.get(TRACEBACK_ENV):
            raise
        say(f"internal error {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''} "
            f"(please report it; {TRACEBACK_ENV}=1 shows the traceback)")
        return EXIT_FAILED


@contextlib.contextmanager
def _command_signals():
    """SIGTERM raises ``KeyboardInterrupt`` and SIGXFSZ is ignored while a command runs (main thread only)."""
    import signal
    import threading

    owner = os.getpid()

    def on_sigterm(signum, frame):
        if os.getpid() != owner:  # a forked worker (multiprocessing, nnU-Net's planner) inherited the handler:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)  # end as SIGTERM means, like the process it copies
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise KeyboardInterrupt

    wanted = {"SIGTERM": on_sigterm,
              # a file-size limit (ulimit -f) kills the process by default, leaving what it was writing behind;
              # ignored, the write fails with EFBIG ("File too large") and takes the usual way out
              "SIGXFSZ": signal.SIG_IGN}
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name, handler in wanted.items():
            if hasattr(signal, name):
                previous[name] = signal.signal(getattr(signal, name), handler)
    try:
        yield
    finally:
        for name, handler in previous.items():
            signal.signal(getattr(signal, name), handler)
