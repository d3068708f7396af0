"""One resolved run configuration (:class:`Predictor`): the bundle and its engine, the post-processing parameters
and the raw-input options, built once by :meth:`Predictor.load` and shared by the CLI, batch and the front ends."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Sequence

from pedtumorseg.inference.bundle import Bundle, default_bundle_path, load_bundle
from pedtumorseg.inference.engine import Engine, PredictOptions
from pedtumorseg.inputs.prepare import RawOptions
from pedtumorseg.postprocess import PostprocessParams

#: ``--quality`` presets: which folds and whether to mirror (test-time augmentation)
QUALITY_PRESETS = ("fast", "full")


@dataclass
class Predictor:
    """One resolved run configuration: the loaded bundle and its engine, the post-processing parameters (bundle
    defaults with ``--set`` overrides applied) and the raw-input options. The CLI, ``run_batch``, Slicer's
    ``batch.py`` and the module all build one with :meth:`load`."""

    bundle: Bundle
    engine: Engine
    params: PostprocessParams | None = None
    raw: RawOptions = field(default_factory=RawOptions)
    quality: str | None = None

    def __post_init__(self):
        if self.params is None:
            self.params = self.bundle.postprocessing

    @classmethod
    def load(cls, model: str | os.PathLike | None = None, *, device: str = "auto",
             folds: Sequence[int] | None = None, tta: bool = True, step_size: float = 0.5,
             quality: str | None = None, overrides: Sequence[str] | None = None,
             raw: RawOptions | None = None, backend: str = "torch") -> "Predictor":
        """Load the bundle once and resolve everything a run needs.

        ``quality`` (``fast``: the bundle's first fold without TTA; ``full``: all folds with TTA) replaces
        ``folds``/``tta`` when given. ``overrides`` are ``KEY=VALUE`` post-processing settings (``--set``).
        ``backend``: ``torch``, ``onnxruntime``, ``openvino`` or ``auto`` (the fastest installed on a CPU).
        """
        bundle = load_bundle(model if model is not None else default_bundle_path())
        if quality is not None:
            if quality not in QUALITY_PRESETS:
                raise ValueError(f"quality must be one of {', '.join(QUALITY_PRESETS)}, got {quality!r}")
            folds, tta = ([bundle.folds[0]], False) if quality == "fast" else (None, True)
        options = PredictOptions(device=device, folds=None if folds is None else list(folds), tta=tta,
                                 step_size=step_size, backend=backend)
        params = bundle.postprocessing
        if overrides:
            params = params.with_overrides(list(overrides))
        return cls(bundle=bundle, engine=Engine(bundle, options), params=params, raw=raw or RawOptions(),
                   quality=quality)

    def model_info(self) -> dict:
        return {
            "name": self.bundle.name,
            "version": self.bundle.version,
            "intended_use": self.bundle.intended_use,
            "folds": list(self.engine.folds),
            "tta": bool(self.engine.options.tta),
            "device": str(self.engine.device),
            "backend": self.engine.backend,
        }

    def describe(self) -> str:
        """One line for logs: model, folds/TTA, device."""
        return (f"model {self.bundle.name} {self.bundle.version}, folds {list(self.engine.folds)}, "
                f"TTA {'on' if self.engine.options.tta else 'off'}, device {self.engine.device}")
