"""The panel's controls without Qt: Device / Quality, the post-processing sliders built from
``postprocess.PARAMETERS``, the one clamp of the ratio window, and the raw-scan options."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from pedtumorseg.postprocess import PARAMETERS


DEVICE_CHOICES: tuple[str, ...] = ("Auto", "GPU", "CPU")
QUALITY_CHOICES: tuple[str, ...] = ("Fast", "Full")
_DEVICE_ARG = {"auto": "auto", "gpu": "cuda", "cuda": "cuda", "cpu": "cpu"}


def prediction_settings(quality: str, device: str, bundle_folds: Sequence[int]) -> dict:
    """``{"device": ..., "folds": [...], "tta": bool}`` for the Quality and Device controls.

    ``Fast``: the first fold of the bundle, no test-time augmentation. ``Full``: every fold, with mirroring TTA.
    """
    dev = _DEVICE_ARG.get(str(device).strip().lower())
    if dev is None:
        raise ValueError(f"device {device!r}: expected one of {', '.join(DEVICE_CHOICES)}")
    folds = [int(f) for f in bundle_folds]
    if not folds:
        raise ValueError("the model bundle lists no folds")
    q = str(quality).strip().lower()
    if q == "fast":
        return {"device": dev, "folds": folds[:1], "tta": False}
    if q == "full":
        return {"device": dev, "folds": folds, "tta": True}
    raise ValueError(f"quality {quality!r}: expected one of {', '.join(QUALITY_CHOICES)}")


#: parameters shown in the panel, in display order (ratio window and normalization stay bundle settings)
PANEL_PARAMETERS: tuple[str, ...] = ("ratio_enabled", "ratio_high", "ratio_low", "components_enabled",
                                     "min_volume_et", "min_volume_net", "min_volume_cc", "min_volume_ed")


#: the labels a control acts on: a minimum-volume slider its subregion's; the ratio relabel moves voxels between
#: NET and ET, so it means something only for a model that produces both
_CONTROL_LABELS: dict[str, frozenset[int]] = {
    "ratio_enabled": frozenset({1, 2}), "ratio_high": frozenset({1, 2}), "ratio_low": frozenset({1, 2}),
    "min_volume_et": frozenset({1}), "min_volume_net": frozenset({2}), "min_volume_cc": frozenset({3}),
    "min_volume_ed": frozenset({4})}


def panel_controls(model_labels: Sequence[int]) -> tuple[str, ...]:
    """The panel controls shown for a model producing ``model_labels`` (``Bundle.io.labels``), in display order.

    A model without a cystic label gets no CC slider; without ET or NET, no ratio controls; without any
    minimum-volume slider left, no components check box.
    """
    present = {int(v) for v in model_labels}
    shown = [n for n in PANEL_PARAMETERS if _CONTROL_LABELS.get(n, frozenset()) <= present]
    if not any(n.startswith("min_volume_") for n in shown):
        shown.remove("components_enabled")
    return tuple(shown)


@dataclass(frozen=True)
class SliderSpec:
    """One post-processing control: a check box (``kind == "checkbox"``) or a slider (``"slider"``)."""

    name: str  # PostprocessParams field; also the parameter-node attribute and the widget's SlicerParameterName
    kind: str
    label: str
    default: float | bool
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    decimals: int = 0
    unit: str = ""

    @property
    def widget_name(self) -> str:
        """objectName of the widget in PedTumorSeg.ui, e.g. ``ratio_highSlider``."""
        return self.name + ("CheckBox" if self.kind == "checkbox" else "Slider")


def _decimals(step: float) -> int:
    text = f"{step:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def slider_specs() -> list[SliderSpec]:
    """The panel's post-processing controls built from :data:`pedtumorseg.postprocess.PARAMETERS`."""
    by_name = {p.name: p for p in PARAMETERS}
    specs = []
    for name in PANEL_PARAMETERS:
        p = by_name[name]
        if p.type == "bool":
            specs.append(SliderSpec(name, "checkbox", p.label, bool(p.default)))
        elif p.type == "float":
            specs.append(SliderSpec(name, "slider", p.label, float(p.default), float(p.min), float(p.max),
                                    float(p.step), _decimals(float(p.step)), p.unit.replace("^3", "\u00b3")))
        else:
            raise ValueError(f"parameter {name} of type {p.type} cannot be a panel control")
    return specs


def parameter_changes(current, values: Mapping[str, object]) -> dict[str, object]:
    """The entries of ``values`` (control name -> value) that differ from the ``PostprocessParams`` ``current``.

    Float values are compared after rounding to the slider's decimals, so that a slider's float noise does not
    trigger a recomputation.
    """
    decimals = {s.name: s.decimals for s in slider_specs() if s.kind == "slider"}
    changes: dict[str, object] = {}
    for name, value in values.items():
        old = getattr(current, name)
        if isinstance(old, bool):
            new = bool(value)
        else:
            new = round(float(value), decimals.get(name, 6) + 2)
            if round(old, decimals.get(name, 6) + 2) == new:
                continue
        if new != old:
            changes[name] = new
    return changes


def clamp_ratio_window(current, changes: Mapping[str, object]) -> dict[str, object]:
    """``changes`` with the ratio window kept valid (``ratio_low < ratio_high``) instead of refused.

    A ``ratio_low`` dragged to or above ``ratio_high`` stops one slider step below it; a ``ratio_high`` dragged
    to or below ``ratio_low`` stops one step above it (when both change at once, ``ratio_high`` wins). The
    result stays inside the sliders' range. ``current`` is the ``PostprocessParams`` the changes apply to.
    """
    out = dict(changes)
    if "ratio_low" not in out and "ratio_high" not in out:
        return out
    specs = {s.name: s for s in slider_specs()}
    step = specs["ratio_low"].step
    high = float(out.get("ratio_high", current.ratio_high))
    low = float(out.get("ratio_low", current.ratio_low))
    if low < high:
        return out
    if "ratio_low" in changes:
        low = round(high - step, specs["ratio_low"].decimals)
        if low < specs["ratio_low"].minimum:  # high is at the bottom of the range: move it up instead
            low = specs["ratio_low"].minimum
            high = round(low + step, specs["ratio_high"].decimals)
            out["ratio_high"] = high
        out["ratio_low"] = low
    else:
        high = round(low + step, specs["ratio_high"].decimals)
        if high > specs["ratio_high"].maximum:
            high = specs["ratio_high"].maximum
            out["ratio_low"] = round(high - step, specs["ratio_low"].decimals)
        out["ratio_high"] = high
    return {name: value for name, value in out.items() if value != getattr(current, name) or name in changes}


#: the "Raw scans" choice: what the prediction does about skull stripping and registration
RAW_SCAN_CHOICES: tuple[str, ...] = ("Auto", "Yes", "No")


def raw_scan_arguments(skull_strip: str, register: str) -> list[str]:
    """CLI arguments of the panel's "Raw scans" controls: ``--skull-strip``/``--register`` ``yes|no``; ``Auto``
    is the CLI's default and adds nothing."""
    out = []
    for flag, value in (("--skull-strip", skull_strip), ("--register", register)):
        text = str(value).strip().lower()
        if text not in ("auto", "yes", "no"):
            raise ValueError(f"{flag} {value!r}: expected one of {', '.join(RAW_SCAN_CHOICES)}")
        if text != "auto":
            out += [flag, text]
    return out
