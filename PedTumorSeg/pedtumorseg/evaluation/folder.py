"""Evaluate a folder of predictions against ground truth.

Per case and region the core ``metrics.evaluate_case`` rows (the BraTS 2024/2025 PED scores: lesion-wise
Dice, HD95, NSD with lesion counts, and whole-region Dice, HD95, sensitivity, NSD, specificity) go to a CSV; a JSON summary next to it holds mean / std (population, ddof=0) / median per
region and metric (NaN values ignored, their count reported), and the volume-proportion agreement of the
clinical comparison paper (Vossough et al., AJNR 2024): per subregion ET, NET, CC, ED the fraction of the whole tumor (WT) in the
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

from pedtumorseg.arrays import volumes
from pedtumorseg.conventions import FOREGROUND_LABELS, LABEL_NAMES, REGIONS, SEG_SUFFIX
from pedtumorseg.conventions import strip_image_extension as _image_stem  # without the image extension, or None
from pedtumorseg.errors import InputError
from pedtumorseg.evaluation.metrics import evaluate_case
from pedtumorseg.files import atomic_output, folder_problem
from pedtumorseg.inputs.images import read_header, read_labels

#: columns of the per-case CSV, in order
CSV_COLUMNS: tuple[str, ...] = ("case", "region", "lesion_dice", "lesion_hd95", "lesion_nsd_0.5", "lesion_nsd_1.0",
                                "dice", "hd95", "sensitivity", "nsd_0.5", "nsd_1.0", "specificity",
                                "num_tp_lesions", "num_fn_lesions", "num_fp_lesions")
METRICS: tuple[str, ...] = CSV_COLUMNS[2:]
#: ``--scorer`` values: brats2025 = ``pedtumorseg.evaluation.metrics`` (the BraTS 2024/2025 PED scorer, default),
#: brats2026 = the challenge package brats-evaluation (``pedtumorseg.scorer_brats2026``, optional extra)
SCORERS: tuple[str, ...] = ("brats2025", "brats2026")


def metric_columns(scorer: str = "brats2025") -> tuple[str, ...]:
    """The metric columns (after ``case``, ``region``) of the CSV of ``scorer``."""
    if scorer == "brats2025":
        return METRICS
    if scorer == "brats2026":
        from pedtumorseg.evaluation.brats2026 import COLUMNS

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
    problem = folder_problem(folder)
    if problem:
        raise InputError(folder, problem)
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
    """Subregion volume / WT volume for ET, NET, CC, ED (``arrays.share_of_wt``); NaN where the share is undefined
    (an empty WT), so that such a case drops out of the agreement statistics."""
    share = volumes(labels, spacing_zyx)["fraction_of_wt"]
    return {name: math.nan if share[name] is None else float(share[name]) for name in SUBREGIONS}


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


@dataclass(frozen=True)
class Pair:
    """One case to score: its prediction and ground-truth files, and how."""

    case_id: str
    prediction: Path
    ground_truth: Path
    spacing_from: str = "gt"
    report_data: bool = False
    scorer: str = "brats2025"


@dataclass
class CaseScores:
    """What one case contributes: its CSV rows, the WT fractions of both sides, and with ``report_data`` the
    volumes (mL) of the report's regions ``{"prediction": ..., "ground_truth": ...}``."""

    case_id: str
    rows: list[dict]
    prediction_fractions: dict[str, float]
    ground_truth_fractions: dict[str, float]
    volumes: dict | None = None


def score_pair(pair: Pair) -> CaseScores:
    """Score one case; ``InputError`` when the prediction is on another grid than its ground truth."""
    gt_geom = read_header(pair.ground_truth, "label map")
    pred_geom = read_header(pair.prediction, "label map")
    if not pred_geom.same_grid(gt_geom):
        raise InputError(pair.prediction, f"prediction grid (size {pred_geom.size}, spacing {pred_geom.spacing}, "
                                          f"origin {pred_geom.origin}) differs from the ground-truth grid of "
                                          f"{pair.ground_truth.name} (size {gt_geom.size}, spacing {gt_geom.spacing}, "
                                          f"origin {gt_geom.origin})")
    gt, pred = read_labels(pair.ground_truth), read_labels(pair.prediction)
    spacing = (gt_geom if pair.spacing_from == "gt" else pred_geom).spacing_zyx
    if pair.scorer == "brats2026":
        from pedtumorseg.evaluation.brats2026 import evaluate_files

        scored = evaluate_files(pair.prediction, pair.ground_truth, pair.case_id)
    else:
        scored = evaluate_case(pred, gt, spacing)
    scores = CaseScores(pair.case_id, _csv_rows(pair.case_id, scored, pair.scorer), wt_fractions(pred, spacing),
                        wt_fractions(gt, spacing))
    if pair.report_data:
        from pedtumorseg.evaluation.analysis import COMBINED_AS, COMBINED_REGION, combined_labels, with_combined

        # the combined region is the ED row of label maps whose label 4 covers NET, CC and ED (always scored with
        # the 2024/2025 definitions: the report's statistics are computed on those columns)
        combined = evaluate_case(combined_labels(pred), combined_labels(gt), spacing)
        scores.rows += [dict(r, region=COMBINED_REGION) for r in _csv_rows(pair.case_id, combined)
                        if r["region"] == LABEL_NAMES[COMBINED_AS]]
        scores.volumes = {"prediction": with_combined(volumes(pred, spacing)["volumes_ml"]),
                          "ground_truth": with_combined(volumes(gt, spacing)["volumes_ml"])}
    return scores


@dataclass
class _WorkerError:
    path: str | None
    problem: str


def _score_in_worker(pair: Pair):
    """``score_pair`` for a process pool: an ``InputError`` comes back as a value (its two-argument constructor
    does not survive pickling) and is raised again in the parent."""
    try:
        return score_pair(pair)
    except InputError as exc:
        return _WorkerError(exc.path, exc.problem)


def _score_all(pairs: list[Pair], workers: int) -> list[CaseScores]:
    if workers <= 1 or len(pairs) <= 1:
        return [score_pair(p) for p in pairs]
    import multiprocessing

    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    with ProcessPoolExecutor(max_workers=min(workers, len(pairs)),
                             mp_context=multiprocessing.get_context(method)) as pool:
        results = list(pool.map(_score_in_worker, pairs))
    for r in results:
        if isinstance(r, _WorkerError):
            raise InputError(r.path, r.problem)
    return results


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
    from pedtumorseg.evaluation.metrics import proportion_agreement

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

    from pedtumorseg.files import atomic_output

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
        from pedtumorseg.evaluation.brats2026 import evaluator

        evaluator()  # the optional package is there (clear error before any work)
    if spacing_from not in ("gt", "pred"):
        raise ValueError(f"spacing_from must be 'gt' or 'pred', got {spacing_from!r}")
    out_csv = Path(out_csv)
    gts = label_files(gt_dir)
    if not gts:
        raise InputError(gt_dir, "no ground-truth label files ('<case>.nii.gz' or '<case>-seg.nii.gz')")
    preds = label_files(pred_dir)
    pairs = [Pair(cid, preds[cid], gts[cid], spacing_from, report_data, scorer) for cid in sorted(gts) if cid in preds]
    if not pairs:
        raise InputError(pred_dir, f"no prediction for any of the {len(gts)} ground-truth case(s)")
    scores = _score_all(pairs, workers)
    rows = [row for s in scores for row in s.rows]
    fractions = _fractions_over_cases(scores)
    agreement = proportion_rows(fractions["prediction"], fractions["ground_truth"])
    missing, extra = sorted(set(gts) - set(preds)), sorted(set(preds) - set(gts))
    summary = _summary(pairs, rows, columns, fractions, agreement, missing, extra, spacing_from, scorer)
    stem = out_csv.name[: -len(out_csv.suffix)] if out_csv.suffix else out_csv.name
    summary_path = out_csv.with_name(stem + "-summary.json")
    case_volumes = {s.case_id: s.volumes for s in scores if s.volumes is not None}
    _write_csv(out_csv, columns, rows)
    with atomic_output(summary_path) as tmp:
        tmp.write_text(json.dumps(_json_safe(summary), indent=2) + "\n")
    volumes_path = _write_volumes_csv(out_csv.with_name(stem + "-volumes.csv"), case_volumes) if report_data else None
    plot_path = out_csv.with_name(stem + "-bland-altman.png")
    try:
        write_bland_altman_png(fractions["prediction"], fractions["ground_truth"], plot_path, agreement)
    except ImportError:  # matplotlib is not a core dependency (it comes with the [train] extra)
        plot_path = None
    return EvaluationResult(rows, _json_safe(summary), missing, out_csv, summary_path, plot_path, extra,
                            case_volumes, volumes_path)


def _summary(pairs, rows, columns, fractions, agreement, missing, extra, spacing_from, scorer) -> dict:
    """What the summary JSON holds (``fractions`` loses its ``without`` list to ``cases_without_fractions``)."""
    return {
        "n_cases": len(pairs),
        "cases": [p.case_id for p in pairs],
        "missing_predictions": missing,
        "predictions_without_ground_truth": extra,
        "spacing_from": spacing_from,
        "std": "population (ddof=0), NaN values left out",
        "scorer": scorer,
        "metrics": summarize(rows, columns[2:]),
        "volume_proportions": {
            "definition": "subregion volume / WT volume, prediction vs ground truth, over cases",
            "cases_without_fractions": fractions.pop("without"),
            "agreement": agreement,
            "fractions": fractions,
        },
    }


def _fractions_over_cases(scores: list[CaseScores]) -> dict:
    """``{"prediction": {subregion: [per case]}, "ground_truth": ..., "without": [cases]}``: cases where a side's
    share of WT is undefined (an empty WT) are left out and listed."""
    out = {"prediction": {n: [] for n in SUBREGIONS}, "ground_truth": {n: [] for n in SUBREGIONS}, "without": []}
    for s in scores:
        if not all(math.isfinite(s.prediction_fractions[n]) and math.isfinite(s.ground_truth_fractions[n])
                   for n in SUBREGIONS):
            out["without"].append(s.case_id)
            continue
        for n in SUBREGIONS:
            out["prediction"][n].append(s.prediction_fractions[n])
            out["ground_truth"][n].append(s.ground_truth_fractions[n])
    return out


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(columns))
            writer.writeheader()
            for row in rows:
                writer.writerow({k: (row[k] if k in ("case", "region") else repr(float(row[k]))) for k in columns})


def _write_volumes_csv(path: Path, case_volumes: dict) -> Path:
    with atomic_output(path) as tmp:
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["case", "region", "ground_truth_ml", "prediction_ml"])
            for cid, vol in case_volumes.items():
                for region, gt_ml in vol["ground_truth"].items():
                    writer.writerow([cid, region, repr(gt_ml), repr(vol["prediction"][region])])
    return path
