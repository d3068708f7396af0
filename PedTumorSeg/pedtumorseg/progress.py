"""Progress events of a prediction run: the one vocabulary the CLI writes and every front end reads.

``pedtumorseg predict --progress json`` prints one event per line on stdout (:func:`to_line`); the Slicer module,
the web app and batch callers turn each line back into an event with :func:`parse_line`. Events are small frozen
dataclasses, so a field renamed on one side breaks the other side's tests instead of silently showing nothing.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Callable, Union

#: a progress callback: ``report(fraction in [0, 1], message)``
ProgressCallback = Callable[[float, str], None]


def no_progress(fraction: float, message: str) -> None:
    """A progress callback that reports nothing."""


def scaled(report: ProgressCallback | None, start: float, stop: float) -> ProgressCallback:
    """``report`` for a sub-step that covers ``[start, stop]`` of the whole run."""
    report = report or no_progress
    return lambda fraction, message: report(start + (stop - start) * float(fraction), message)


@dataclass(frozen=True)
class Progress:
    """Part of the run is done."""

    fraction: float
    message: str
    event: str = field(default="progress", init=False)


@dataclass(frozen=True)
class Done:
    """The run finished; ``outputs`` maps output kinds (``seg``, ``raw``, ``stats`` ...) to file paths."""

    case_id: str
    outputs: dict
    backend: str | None = None
    device: str | None = None
    seconds: float | None = None  # the whole case, reading to the last file written
    network_seconds: float | None = None  # the engine alone
    warnings: tuple = ()
    event: str = field(default="done", init=False)


@dataclass(frozen=True)
class Failed:
    """The run ended without a result (``cancelled`` when the user stopped it)."""

    message: str
    cancelled: bool = False
    event: str = field(default="error", init=False)


@dataclass(frozen=True)
class Log:
    """A line of the process that is not an event (stderr, or free text on stdout)."""

    message: str
    stream: str = "stdout"
    event: str = field(default="log", init=False)


@dataclass(frozen=True)
class Exited:
    """The process ended and both its output streams were read to the end (made by the runner, not the CLI)."""

    returncode: int | None
    event: str = field(default="exit", init=False)


Event = Union[Progress, Done, Failed, Log, Exited]
_KINDS = {cls.__dataclass_fields__["event"].default: cls for cls in (Progress, Done, Failed, Log, Exited)}


def to_dict(event: Event) -> dict:
    """The JSON object of ``event`` (its ``event`` key names the kind)."""
    data = dataclasses.asdict(event)
    if isinstance(event, Done):
        data["outputs"] = {str(k): str(v) for k, v in event.outputs.items()}
        data["warnings"] = list(event.warnings)
    return data


def to_line(event: Event) -> str:
    """One line of JSON (no newline)."""
    return json.dumps(to_dict(event))


def from_dict(data: dict) -> Event:
    """The event of a JSON object written by :func:`to_dict`; unknown keys are ignored (a newer writer)."""
    cls = _KINDS.get(data.get("event"))
    if cls is None:
        raise ValueError(f"unknown event {data.get('event')!r}")
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values = {k: v for k, v in data.items() if k in names}
    if cls is Done:
        values["outputs"] = dict(values.get("outputs") or {})
        values["warnings"] = tuple(values.get("warnings") or ())
    return cls(**values)


def parse_line(line: str, stream: str = "stdout") -> Event:
    """One line of the process's output as an event: a JSON event line, else a :class:`Log`."""
    text = line.strip()
    if stream == "stdout" and text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict) and data.get("event") in _KINDS:
            try:
                return from_dict(data)
            except (TypeError, ValueError):
                pass
    return Log(line, stream)


def status_text(done: Done | None) -> str:
    """The status line of a finished run, e.g. ``Done (openvino on cpu, 12.3 s).``"""
    if done is None:
        return "Done."
    parts = [done.backend] if done.backend else []
    if done.device:
        parts.append(("on " if parts else "") + str(done.device))
    details = " ".join(parts)
    if done.seconds is not None:
        details = (details + ", " if details else "") + f"{float(done.seconds):.1f} s"
    return f"Done ({details})." if details else "Done."
