"""Post-processing parameters: one dataclass (validated values, ``--set key=value`` parsing) and the UI description
of each parameter (:data:`PARAMETERS`), one name end to end (manifest, ``--set``, dataclass, parameter node, widget).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Iterable, NamedTuple

import numpy as np

from pedtumorseg.conventions import CC, ED, ET, NET

NORMALIZATIONS: tuple[str, ...] = ("zscore", "mean")

#: flat parameter name of each label's minimum component volume
MIN_VOLUME_KEYS: dict[int, str] = {ET: "min_volume_et", NET: "min_volume_net", CC: "min_volume_cc", ED: "min_volume_ed"}


@dataclass(frozen=True)
class PostprocessParams:
    """Parameters of :func:`postprocess`. Minimum volumes are in mm^3; 0 switches the filter off for a label."""

    ratio_enabled: bool = True
    ratio_high: float = 1.388
    ratio_low: float = 0.766
    ratio_min: float = 0.2
    ratio_max: float = 5.0
    normalization: str = "zscore"
    components_enabled: bool = True
    min_volume_et: float = 160.0
    min_volume_net: float = 0.0
    min_volume_cc: float = 50.0
    min_volume_ed: float = 0.0

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.type in ("bool", bool):
                if not isinstance(value, (bool, np.bool_)):
                    raise ValueError(f"{f.name}={value!r}: expected true or false")
                object.__setattr__(self, f.name, bool(value))
            elif f.type in ("float", float):
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                    raise ValueError(f"{f.name}={value!r}: expected a number")
                if not math.isfinite(float(value)):
                    raise ValueError(f"{f.name}={value!r}: expected a finite number")
                object.__setattr__(self, f.name, float(value))
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization={self.normalization!r}: expected one of {', '.join(NORMALIZATIONS)}")
        if not self.ratio_low < self.ratio_high:
            raise ValueError(f"ratio_low={self.ratio_low} must be below ratio_high={self.ratio_high}")
        if not self.ratio_min < self.ratio_max:
            raise ValueError(f"ratio_min={self.ratio_min} must be below ratio_max={self.ratio_max}")
        for key in MIN_VOLUME_KEYS.values():
            if getattr(self, key) < 0:
                raise ValueError(f"{key}={getattr(self, key)}: a volume cannot be negative (0 switches it off)")

    @property
    def min_volume_mm3(self) -> dict[int, float]:
        """label value -> minimum component volume in mm^3 (0 = off)."""
        return {label: getattr(self, key) for label, key in MIN_VOLUME_KEYS.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly flat dict (the bundle's ``postprocessing`` block)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PostprocessParams":
        """Inverse of :meth:`to_dict`; missing keys take their defaults, unknown keys are refused."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown post-processing parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return cls(**data)

    def replace(self, **changes) -> "PostprocessParams":
        """A copy with ``changes`` applied (validated; unknown names refused)."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise ValueError(f"unknown post-processing parameter(s) {', '.join(unknown)}; "
                             f"known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **changes)

    def with_overrides(self, items: Iterable[str]) -> "PostprocessParams":
        """Apply CLI ``--set key=value`` strings, e.g. ``["ratio_high=1.4", "components_enabled=false"]``."""
        types = {p.name: p.type for p in PARAMETERS}
        changes: dict[str, Any] = {}
        for item in items:
            key, sep, text = str(item).partition("=")
            key, text = key.strip(), text.strip()
            if not sep or not key:
                raise ValueError(f"--set {item!r}: expected key=value")
            if key not in types:
                raise ValueError(f"--set {item!r}: unknown parameter {key!r}; known: {', '.join(sorted(types))}")
            changes[key] = _parse_value(key, text, types[key])
        return self.replace(**changes)


def _parse_value(key: str, text: str, kind: str):
    if kind == "bool":
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ValueError(f"{key}={text!r}: expected true or false")
    if kind == "float":
        try:
            value = float(text)
        except ValueError:
            raise ValueError(f"{key}={text!r}: expected a number") from None
        if not math.isfinite(value):
            raise ValueError(f"{key}={text!r}: expected a finite number")
        return value
    if text not in NORMALIZATIONS:
        raise ValueError(f"{key}={text!r}: expected one of {', '.join(NORMALIZATIONS)}")
    return text


class Parameter(NamedTuple):
    """One row of :data:`PARAMETERS`: what a UI needs to build a slider / checkbox / combo box."""

    name: str
    type: str  # "bool" | "float" | "choice"
    default: Any
    min: float | None
    max: float | None
    step: float | None
    label: str
    unit: str
    choices: tuple[str, ...] | None = None


_D = PostprocessParams()
#: UI description of every parameter, in display order (validation is in the dataclass). The Slicer panel's
#: parameter node refuses values outside a slider's range, so the ranges must hold any default a bundle can
#: carry: both ratio thresholds span the whole default ratio window (a bundle fitted on well-separated data has
#: e.g. ratio_low > 1, see pedtumorseg_train.fit_postprocessing).
PARAMETERS: tuple[Parameter, ...] = (
    Parameter("ratio_enabled", "bool", _D.ratio_enabled, None, None, None, "T1CE/T1 ratio relabel", ""),
    Parameter("ratio_high", "float", _D.ratio_high, _D.ratio_min, _D.ratio_max, 0.01, "NET -> ET above ratio", ""),
    Parameter("ratio_low", "float", _D.ratio_low, _D.ratio_min, _D.ratio_max, 0.01, "ET -> NET below ratio", ""),
    Parameter("ratio_min", "float", _D.ratio_min, 0.0, 1.0, 0.05, "Ratio window minimum", ""),
    Parameter("ratio_max", "float", _D.ratio_max, 1.0, 20.0, 0.5, "Ratio window maximum", ""),
    Parameter("normalization", "choice", _D.normalization, None, None, None, "Intensity normalization", "",
              NORMALIZATIONS),
    Parameter("components_enabled", "bool", _D.components_enabled, None, None, None, "Remove small components", ""),
    Parameter("min_volume_et", "float", _D.min_volume_et, 0.0, 2000.0, 10.0, "Minimum ET component", "mm^3"),
    Parameter("min_volume_net", "float", _D.min_volume_net, 0.0, 2000.0, 10.0, "Minimum NET component", "mm^3"),
    Parameter("min_volume_cc", "float", _D.min_volume_cc, 0.0, 2000.0, 10.0, "Minimum CC component", "mm^3"),
    Parameter("min_volume_ed", "float", _D.min_volume_ed, 0.0, 2000.0, 10.0, "Minimum ED component", "mm^3"),
)
del _D
