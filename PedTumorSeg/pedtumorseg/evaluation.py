"""Evaluate a folder of predictions against ground truth (DESIGN §8).

Per case and region the core ``metrics.evaluate_case`` rows (the BraTS 2024/2025 PED scores: lesion-wise
Dice, HD95, NSD with lesion counts, and whole-region Dice, HD95, sensitivity, NSD, specificity) go to a CSV; a JSON summary next to it holds mean / std (population, ddof=0) / median per
region and metric (NaN values ignored, their count reported), and the volume-proportion agreement of the
clinical paper (shared/seeds/001): per subregion ET, NET, CC, ED the fraction of the whole tumor (WT) in the
prediction and the ground truth, compared over cases with the core ``metrics.proportion_agreement`` (Pearson,
Spearman, Bland-Altman) and drawn as a Bland-Altman PNG (one panel per subregion: mean of the two fractions
against their difference prediction - ground truth, with the bias and the limits of agreement bias +- 1.96 SD).
Cases whose ground-truth or predicted WT is empty have no fractions and are left out of the agreement (listed).

Files are paired by case id: ``<case>.nii.gz`` (nnU-Net) or ``<case>-seg.nii.gz`` (BraTS) on either side.
A ground-truth case without a prediction is reported in ``EvaluationResult.missing`` (the others are still
evaluated; CLIs exit non-zero); a prediction on a different grid than its ground truth raises ``InputError``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pedtumorseg.conventions import FOREGROUND_LABELS, LABEL_NAMES, REGIONS, SEG_SUFFIX
from pedtumorseg.conventions import strip_image_extension as _image_stem  # without the image extension, or None
from pedtumorseg.errors import InputError

#: columns of the per-case CSV, in order
CSV_COLUMNS: tuple[str, ...] = ("case", "region", "lesion_dice", "lesion_hd95", "lesion_nsd_0.5", "lesion_nsd_1.0",
                                "dice", "hd95", "sensitivity", "nsd_0.5", "nsd_1.0", "specificity",
                                "num_tp_lesions", "num_fn_lesions", "num_fp_lesions")
METRICS: tuple[str, ...] = CSV_COLUMNS[2:]
#: ``--scorer`` values: brats2025 = ``pedtumorseg.metrics`` (the BraTS 2024/2025 PED scorer, default),
#: brats2026 = the challenge package brats-evaluation (``pedtumorseg.scorer_brats2026``, optional extra)
SCORERS: tuple[str, ...] = ("brats2025", "brats2026")


def metric_columns(scorer: str = "brats2025") -> tuple[str, ...]:
    """The metric columns (after ``case``, ``region``) of the CSV of ``scorer``."""
    if scorer == "brats2025":
        return METRICS
    if scorer == "brats2026":
        from pedtumorseg.scorer_brats2026 import COLUMNS

        return COLUMNS
    raise ValueError(f"scorer must be one of {', '.join(SCORERS)}, got {scorer!r}")
#: subregions whose share of WT is compared (001 paper)
SUBREGIONS: tuple[str, ...] = tuple(LABEL_NAMES[label] for label in FOREGROUND_LABELS)


# --- pairing ------------------------------------------------------------------------------------------------

def case_id_of(name: str) -> str | None:
    """Case id of a label-map file name: ``<case>.nii.gz`` or ``<case>-seg.nii.gz`` (any image extension);
    ``None`` for other files (``-seg-raw`` outputs included)."""
    stem = _image_stem(name)
    if stem is None:
        return None
    if stem.startswith(".") or re.search(r"[-_]seg[-_]raw$", stem, flags=re.IGNORECASE):
        return None
    m = re.fullmatch(rf"(.+)[-_]{SEG_SUFFIX}", stem, flags=re.IGNORECASE)
    return m.group(1) if m else stem


def _is_seg_name(name: str) -> bool:
    """Whether ``name`` is ``<case>-seg`` / ``<case>_seg`` with an image extension (not an image of the case)."""
    cid = case_id_of(name)
    return cid is not None and cid != _image_stem(name)


def label_files(folder: str | os.PathLike) -> dict[str, Path]:
    """Case id -> label file in ``folder``, or in its case sub-folders (BraTS layout ``<ID>/<ID>-seg.nii.gz``).
    ``InputError`` if a case id appears twice."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(folder, "not a folder")
    found: dict[str, Path] = {}
    candidates = []
    for p in sorted(folder.iterdir()):
        if p.is_dir():  # a case folder: only its segmentation, not the images beside it
            candidates += [q for q in sorted(p.iterdir()) if q.is_file() and _is_seg_name(q.name)]
        elif p.is_file():
            candidates.append(p)
    for p in candidates:
        cid = case_id_of(p.name)
        if cid is None:
            continue
        if cid in found:
            raise InputError(p, f"two label files for case {cid} (also {found[cid].name})")
        found[cid] = p
    return found


# --- one case -----------------------------------------------------------------------------------------------

def wt_fractions(labels: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0)) -> dict[str, float]:
    """Subregion volume / WT volume for ET, NET, CC, ED from the core ``metrics.volumes``; NaN when WT is empty
    (the core reports 0 there, which would enter the agreement as a real proportion)."""
    from pedtumorseg.metrics import volumes

    v = volumes(labels, spacing_zyx)
    if v["volumes_ml"]["WT"] <= 0:
        return {name: math.nan for name in SUBREGIONS}
    return {name: float(v["fraction_of_wt"][name]) for name in SUBREGIONS}


def _csv_rows(case_id: str, scored: list[dict], scorer: str = "brats2025") -> list[dict]:
    """``evaluate_case`` rows reduced to the CSV columns (None -> NaN)."""
    rows = []
    for r in scored:
        row = {"case": case_id, "region": r["region"]}
        for m in metric_columns(scorer):
            v = r.get(m, math.nan)
            row[m] = math.nan if v is None else float(v)
        rows.append(row)
    return rows


def _evaluate_pair(args) -> tuple[list[dict], dict[str, float], dict[str, float], dict | None]:
    """Rows (CSV columns), predicted and ground-truth WT fractions of one case; with ``report_data`` also the
    rows of the combined region NET+CC+ED and the volumes (mL) ``{"prediction": ..., "ground_truth": ...}`` of
    the report's regions (None otherwise)."""
    case_id, pred_path, gt_path, spacing_from, report_data, scorer = args
    from pedtumorseg.io import read_labels

    gt_geom = _read_geometry(gt_path)
    pred_geom = _read_geometry(pred_path)
    if not pred_geom.same_grid(gt_geom):
        raise InputError(pred_path, f"prediction grid (size {pred_geom.size}, spacing {pred_geom.spacing}, origin "
                                    f"{pred_geom.origin}) differs from the ground-truth grid of {gt_path.name} "
                                    f"(size {gt_geom.size}, spacing {gt_geom.spacing}, origin {gt_geom.origin})")
    from pedtumorseg.metrics import evaluate_case

    gt = read_labels(gt_path)
    pred = read_labels(pred_path)
    spacing = (gt_geom if spacing_from == "gt" else pred_geom).spacing_zyx
    if scorer == "brats2026":
        from pedtumorseg.scorer_brats2026 import evaluate_files

        scored = evaluate_files(pred_path, gt_path, case_id)
    else:
        scored = evaluate_case(pred, gt, spacing)
    rows = _csv_rows(case_id, scored, scorer)
    case_volumes = None
    if report_data:
        from pedtumorseg.analysis import COMBINED_AS, COMBINED_REGION, combined_labels, with_combined
        from pedtumorseg.conventions import LABEL_NAMES
        from pedtumorseg.metrics import volumes

        # the combined region is the ED row of label maps whose label 4 covers NET, CC and ED (always scored with
        # the 2024/2025 definitions: the report's statistics are computed on those columns)
        combined = evaluate_case(combined_labels(pred), combined_labels(gt), spacing)
        rows += [dict(r, region=COMBINED_REGION) for r in _csv_rows(case_id, combined)
                 if r["region"] == LABEL_NAMES[COMBINED_AS]]
        case_volumes = {"prediction": with_combined(volumes(pred, spacing)["volumes_ml"]),
                        "ground_truth": with_combined(volumes(gt, spacing)["volumes_ml"])}
    return rows, wt_fractions(pred, spacing), wt_fractions(gt, spacing), case_volumes


def _read_geometry(path: Path):
    """The ``Geometry`` of an image file from its header only."""
    import SimpleITK as sitk

    from pedtumorseg.io import Geometry

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise InputError(path, f"cannot read the image header ({str(exc).strip().splitlines()[-1]})") from None
    return Geometry(tuple(int(v) for v in reader.GetSize()), tuple(float(v) for v in reader.GetSpacing()),
                    tuple(float(v) for v in reader.GetOrigin()), tuple(float(v) for v in reader.GetDirection()))


@dataclass
class _WorkerError:
    path: str | None
    problem: str


def _evaluate_pair_in_worker(args):
    """``_evaluate_pair`` for a process pool: an ``InputError`` comes back as a value (its two-argument
    constructor does not survive pickling) and is raised again in the parent."""
    try:
        return _evaluate_pair(args)
    except InputError as exc:
        return _WorkerError(exc.path, exc.problem)


# --- summaries ----------------------------------------------------------------------------------------------

def summarize(rows: list[dict], metrics: tuple[str, ...] = METRICS) -> dict:
    """``{region: {metric: {"mean", "std", "median", "n", "n_nan"}}}`` over the rows (regions in ``REGIONS``
    order, then any other); NaN values are left out and counted in ``n_nan``; all-NaN gives NaN stats."""
    regions = [r for r in REGIONS if any(row["region"] == r for row in rows)]
    regions += sorted({row["region"] for row in rows} - set(regions))
    out: dict = {}
    for region in regions:
        out[region] = {}
        for m in metrics:
            v = np.asarray([row[m] for row in rows if row["region"] == region], float)
            ok = v[np.isfinite(v)]
            out[region][m] = {
                "mean": float(ok.mean()) if ok.size else math.nan,
                "std": float(ok.std()) if ok.size else math.nan,
                "median": float(np.median(ok)) if ok.size else math.nan,
                "n": int(ok.size),
                "n_nan": int(v.size - ok.size),
            }
    return out


def _json_safe(obj):
    """Replace NaN/inf by None and numpy scalars by Python ones, recursively."""
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _json_safe(obj.tolist())
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if hasattr(obj, "__dataclass_fields__"):
        import dataclasses

        return _json_safe(dataclasses.asdict(obj))
    return obj


def proportion_rows(pred_fractions: dict[str, list[float]], gt_fractions: dict[str, list[float]]) -> dict:
    """Per subregion (ET, NET, CC, ED): the core ``metrics.proportion_agreement`` of predicted vs ground-truth
    WT fractions over cases: ``n``, ``pearson_r``, ``spearman_rho``, ``mean_difference`` (bias, pred - gt),
    ``sd_difference``, ``loa_lower``, ``loa_upper``."""
    from pedtumorseg.metrics import proportion_agreement

    return proportion_agreement({n: pred_fractions[n] for n in SUBREGIONS},
                                {n: gt_fractions[n] for n in SUBREGIONS}, regions=SUBREGIONS)


def write_bland_altman_png(pred_fractions: dict[str, list[float]], gt_fractions: dict[str, list[float]],
                           path: str | os.PathLike, agreement: dict | None = None) -> Path:
    """One Bland-Altman panel per subregion (x: mean of the two fractions, y: prediction - ground truth; bias
    solid, limits of agreement dashed, from ``agreement`` = ``proportion_rows(...)``, computed when None);
    written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    from pedtumorseg.io import atomic_output

    if agreement is None:
        agreement = proportion_rows(pred_fractions, gt_fractions)
    fig = Figure(figsize=(4.0 * len(SUBREGIONS), 4.0), dpi=100)
    axes = fig.subplots(1, len(SUBREGIONS), squeeze=False)[0]
    for ax, name in zip(axes, SUBREGIONS):
        p = np.asarray(pred_fractions[name], float)
        g = np.asarray(gt_fractions[name], float)
        ax.scatter((p + g) / 2, p - g, s=12, color="tab:blue")
        ba = agreement.get(name, {})
        bias = ba.get("mean_difference", math.nan)
        if math.isfinite(bias):
            ax.axhline(bias, color="k", lw=1, label=f"bias {bias:+.3f}")
        for key in ("loa_lower", "loa_upper"):
            if math.isfinite(ba.get(key, math.nan)):
                ax.axhline(ba[key], color="tab:red", lw=1, ls="--",
                           label="bias \u00b1 1.96 SD" if key == "loa_lower" else None)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(f"{name} / WT (n={p.size})")
        ax.set_xlabel("mean of prediction and ground truth")
        ax.set_ylabel("prediction - ground truth")
    fig.tight_layout()
    path = Path(path)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png")
    return path


# --- the folder -----------------------------------------------------------------------------------------------

@dataclass
class EvaluationResult:
    rows: list[dict]
    summary: dict  # what the JSON holds
    missing: list[str]  # ground-truth cases without a prediction
    csv_path: Path
    summary_path: Path
    plot_path: Path | None
    extra: list[str] = field(default_factory=list)  # predictions without ground truth (ignored)
    # with report_data: case -> {"prediction": {region: mL}, "ground_truth": {region: mL}}, and their CSV
    volumes: dict[str, dict[str, dict[str, float]]] = field(default_factory=dict)
    volumes_path: Path | None = None

    def summary_lines(self) -> list[str]:
        """Short human-readable lines: mean lesion-wise Dice / HD95 per region, then the files."""
        lines = [f"evaluated {self.summary['n_cases']} case(s)"]
        for region, stats in self.summary["metrics"].items():
            ld, lh = stats["lesion_dice"]["mean"], stats["lesion_hd95"]["mean"]
            fmt = lambda v: "nan" if v is None or not math.isfinite(v) else f"{v:.4f}"  # noqa: E731
            lines.append(f"{region:>3}: lesion Dice {fmt(ld)}  lesion HD95 {fmt(lh)}")
        lines.append(f"per-case metrics: {self.csv_path}")
        lines.append(f"summary: {self.summary_path}")
        if self.plot_path is not None:
            lines.append(f"Bland-Altman plot: {self.plot_path}")
        if self.volumes_path is not None:
            lines.append(f"per-case volumes: {self.volumes_path}")
        if self.missing:
            lines.append(f"{len(self.missing)} case(s) without a prediction: {', '.join(self.missing)}")
        return lines


def evaluate_folder(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, out_csv: str | os.PathLike,
                    spacing_from: str = "gt", workers: int = 1, report_data: bool = False,
                    scorer: str = "brats2025") -> EvaluationResult:
    """Evaluate every ground-truth case of ``gt_dir`` that has a prediction in ``pred_dir``.

    Writes ``out_csv`` (``case``, ``region`` and the ``metric_columns(scorer)``; one row per case and region),
    ``<out_csv stem>-summary.json`` and ``<out_csv stem>-bland-altman.png`` next to it, all atomically.
    ``scorer``: one of :data:`SCORERS` (brats2026 raises ImportError without the optional brats-evaluation). ``spacing_from`` ("gt" or "pred")
    says whose header gives the voxel spacing. ``workers`` > 1 evaluates cases in a process pool.
    ``report_data`` adds what the HTML report needs: rows of the combined region NET+CC+ED (also in the CSV)
    and per-case volumes of every region (``EvaluationResult.volumes``, ``<out_csv stem>-volumes.csv`` with
    columns ``case, region, ground_truth_ml, prediction_ml``).
    Returns an ``EvaluationResult``; ``missing`` lists ground-truth cases without a prediction. Raises
    ``InputError`` when no case can be evaluated or a prediction is on another grid than its ground truth
    (nothing is written then).
    """
    columns = ("case", "region") + metric_columns(scorer)
    if scorer == "brats2026":
        from pedtumorseg.scorer_brats2026 import evaluator

        evaluator()  # the optional package is there (clear error before any work)
    if spacing_from not in ("gt", "pred"):
        raise ValueError(f"spacing_from must be 'gt' or 'pred', got {spacing_from!r}")
    out_csv = Path(out_csv)
    gts = label_files(gt_dir)
    if not gts:
        raise InputError(gt_dir, "no ground-truth label files ('<case>.nii.gz' or '<case>-seg.nii.gz')")
    preds = label_files(pred_dir)
    missing = sorted(set(gts) - set(preds))
    extra = sorted(set(preds) - set(gts))
    todo = [(cid, preds[cid], gts[cid], spacing_from, report_data, scorer) for cid in sorted(gts) if cid in preds]
    if not todo:
        raise InputError(pred_dir, f"no prediction for any of the {len(gts)} ground-truth case(s)")

    if workers > 1 and len(todo) > 1:
        import multiprocessing

        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                 mp_context=multiprocessing.get_context(method)) as pool:
            results = list(pool.map(_evaluate_pair_in_worker, todo))
        for r in results:
            if isinstance(r, _WorkerError):
                raise InputError(r.path, r.problem)
    else:
        results = [_evaluate_pair(t) for t in todo]

    rows = [row for r, *_ in results for row in r]
    case_volumes = {t[0]: r[3] for t, r in zip(todo, results) if r[3] is not None}
    pred_fr: dict[str, list[float]] = {n: [] for n in SUBREGIONS}
    gt_fr: dict[str, list[float]] = {n: [] for n in SUBREGIONS}
    no_fraction = []
    for (cid, *_), (_, pf, gf, _) in zip(todo, results):
        if not all(math.isfinite(pf[n]) and math.isfinite(gf[n]) for n in SUBREGIONS):
            no_fraction.append(cid)
            continue
        for n in SUBREGIONS:
            pred_fr[n].append(pf[n])
            gt_fr[n].append(gf[n])

    agreement = proportion_rows(pred_fr, gt_fr)
    summary = {
        "n_cases": len(todo),
        "cases": [t[0] for t in todo],
        "missing_predictions": missing,
        "predictions_without_ground_truth": extra,
        "spacing_from": spacing_from,
        "std": "population (ddof=0), NaN values left out",
        "scorer": scorer,
        "metrics": summarize(rows, columns[2:]),
        "volume_proportions": {
            "definition": "subregion volume / WT volume, prediction vs ground truth, over cases",
            "cases_without_fractions": no_fraction,
            "agreement": agreement,
            "fractions": {"prediction": pred_fr, "ground_truth": gt_fr},
        },
    }
    summary_path = out_csv.with_name(out_csv.name[: -len(out_csv.suffix)] + "-summary.json"
                                     if out_csv.suffix else out_csv.name + "-summary.json")
    plot_path = summary_path.with_name(summary_path.name.replace("-summary.json", "-bland-altman.png"))
    volumes_path = summary_path.with_name(summary_path.name.replace("-summary.json", "-volumes.csv"))

    from pedtumorseg.io import atomic_output

    with atomic_output(out_csv) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (row[k] if k in ("case", "region") else repr(float(row[k]))) for k in columns})
    with atomic_output(summary_path) as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    if report_data:
        with atomic_output(volumes_path) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["case", "region", "ground_truth_ml", "prediction_ml"])
                for cid, vol in case_volumes.items():
                    for region, gt_ml in vol["ground_truth"].items():
                        writer.writerow([cid, region, repr(gt_ml), repr(vol["prediction"][region])])
    else:
        volumes_path = None
    try:
        write_bland_altman_png(pred_fr, gt_fr, plot_path, agreement)
    except ImportError:  # matplotlib is not a core dependency (it comes with the [train] extra)
        plot_path = None
    return EvaluationResult(rows, _json_safe(summary), missing, out_csv, summary_path, plot_path, extra,
                            case_volumes, volumes_path)
