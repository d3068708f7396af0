"""Errors shown to users: one line that names the file (when there is one) and the problem."""

from __future__ import annotations

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


class PredictionError(PedTumorSegError):
    """The model produced an unusable result (e.g. non-finite values) or cannot run on the chosen device."""


class Cancelled(PedTumorSegError):
    """The user cancelled a running prediction."""
