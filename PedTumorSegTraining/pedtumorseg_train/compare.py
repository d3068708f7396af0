"""``pedtumorseg-train compare``: several models (bundles or prediction folders) on one ground truth, one table.

For every model ``NAME=PATH``:

* a bundle (folder or ``.zip``): every case of ``--gt`` (BraTS case folders with the four images and the
  segmentation) is predicted by the core engine on ``--device`` (network output, argmax: no post-processing,
  so that the networks are compared), the wall time of each ``Engine.predict`` (preprocessing, sliding window,
  resampling back) is recorded, and the labels are written to ``OUT/NAME/predictions/``; the table also gets
  the network's parameters and the FLOPs of one forward pass of one patch (``patch_flops``);
* a folder of predicted label maps: evaluated as it is (no parameters, FLOPs or times).

Every model is scored by ``pedtumorseg.evaluation.folder.evaluate_folder`` (lesion-wise scores per region, volume
agreement; its CSV, summary JSON and Bland-Altman plot go to ``OUT/NAME/``). ``OUT/compare.csv`` and
``OUT/compare.md`` hold one row per model: mean lesion-wise Dice and HD95 per region, parameters, GFLOPs per
patch, median and mean seconds per case. ``OUT/paired_tests.csv`` (and a section of ``compare.md``) holds, for
every pair of models and region, the two-sided Wilcoxon signed-rank test (``scipy.stats.wilcoxon``) of the
per-case lesion-wise Dice over the cases both models have, with the median paired difference.
"""

from __future__ import annotations

import csv
import itertools
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from pedtumorseg.errors import InputError

SCORE_METRICS = ("lesion_dice", "lesion_hd95")


def parse_model(spec: str) -> tuple[str, Path]:
    """``NAME=PATH`` (or just ``PATH``: the name is the file/folder name without ``.zip``)."""
    name, sep, path = spec.partition("=")
    if not sep:
        path, name = spec, Path(spec).name.removesuffix(".zip")
    if not name or not path:
        raise InputError(spec, "a model must be given as NAME=PATH")
    if not all(c.isalnum() or c in "-_." for c in name):
        raise InputError(spec, f"model name {name!r} may hold only letters, digits, '-', '_' and '.'")
    return name, Path(path)


def is_bundle(path: Path) -> bool:
    return (path.is_dir() and (path / "manifest.json").is_file()) or (path.is_file() and path.suffix == ".zip")


def patch_flops(network, patch_size: Sequence[int], spatial_dims: int = 3) -> int:
    """FLOPs of one forward pass of one 4-channel patch (convolutions, transposed convolutions and matrix
    products as 2 x multiply-accumulates, ``torch.utils.flop_counter``; norms and activations not counted).
    A 2D network's patch is one slice (the leading 1 of the patch size is dropped). The pass runs on a copy of
    the network on PyTorch's "meta" device (shapes only, no arithmetic), or on the CPU if that fails."""
    import copy

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    shape = tuple(int(p) for p in patch_size)
    if spatial_dims == 2:
        shape = shape[-2:]
    for device in ("meta", "cpu"):
        try:
            net = copy.deepcopy(network).to(device).eval()
            x = torch.zeros(1, 4, *shape, device=device)
            with torch.no_grad(), FlopCounterMode(display=False) as fc:
                net(x)
            return int(fc.get_total_flops())
        except (NotImplementedError, RuntimeError):
            if device == "cpu":
                raise
    raise AssertionError("unreachable")


def n_parameters(network) -> int:
    return int(sum(p.numel() for p in network.parameters()))


def predict_folder(bundle_path: Path, gt_dir: Path, out_dir: Path, device: str = "auto", tta: bool = True,
                   log=print) -> dict:
    """Predict every case of ``gt_dir`` with a bundle; returns ``{"times": {case: s}, "params", "flops",
    "patch_size", "device"}``."""
    from pedtumorseg.inference.bundle import load_bundle
    from pedtumorseg.inference.engine import Engine, PredictOptions
    from pedtumorseg.inputs.cases import find_cases
    from pedtumorseg.inputs.images import load_case
    from pedtumorseg.outputs.images import write_labels
    bundle = load_bundle(bundle_path)
    cases = find_cases(gt_dir)
    if not cases:
        raise InputError(gt_dir, "no case folders with the four images (needed to predict with a bundle)")
    engine = Engine(bundle, PredictOptions(device=device, tta=tta))
    net = bundle.build_network()
    info = {"params": n_parameters(net), "flops": patch_flops(net, bundle.patch_size, bundle.spatial_dims),
            "patch_size": list(bundle.patch_size), "device": str(engine.device), "times": {}}
    out_dir.mkdir(parents=True, exist_ok=True)
    for files in cases:
        case = load_case(files)
        t0 = time.perf_counter()
        pred = engine.predict(case.images, case.geometry.spacing_zyx)
        if engine.device.type == "cuda":
            import torch
            torch.cuda.synchronize(engine.device)
        info["times"][case.case_id] = time.perf_counter() - t0
        write_labels(pred.labels, case.geometry, out_dir / f"{case.case_id}.nii.gz")
        log(f"  {case.case_id}: {info['times'][case.case_id]:.2f} s")
    return info


def paired_tests(per_case: dict[str, dict[str, dict[str, float]]], metric: str = "lesion_dice") -> list[dict]:
    """Two-sided Wilcoxon signed-rank tests between every pair of models, per region.

    ``per_case[model][region][case]`` = the metric. For each pair and region the cases where both values are
    finite are paired; returns rows with ``model_a``, ``model_b``, ``region``, ``n``, ``median_difference``
    (a - b), ``statistic`` and ``p_value`` (NaN with fewer than 2 pairs or when all differences are 0)."""
    from scipy.stats import wilcoxon

    rows = []
    for a, b in itertools.combinations(list(per_case), 2):
        regions = [r for r in per_case[a] if r in per_case[b]]
        for region in regions:
            va, vb = per_case[a][region], per_case[b][region]
            pairs = [(va[c], vb[c]) for c in sorted(set(va) & set(vb))
                     if math.isfinite(va[c]) and math.isfinite(vb[c])]
            diff = np.array([x - y for x, y in pairs], float)
            stat = p = math.nan
            if diff.size >= 2 and np.any(diff != 0):
                res = wilcoxon([x for x, _ in pairs], [y for _, y in pairs])
                stat, p = float(res.statistic), float(res.pvalue)
            rows.append({"model_a": a, "model_b": b, "region": region, "metric": metric, "n": int(diff.size),
                         "median_difference": float(np.median(diff)) if diff.size else math.nan,
                         "statistic": stat, "p_value": p})
    return rows


def _fmt(v, digits=3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "n/a"
    if isinstance(v, int):
        return f"{v:,}"
    return f"{v:.{digits}f}"


def compare(models: Sequence[str], gt_dir, out_dir, device: str = "auto", tta: bool = True, log=print) -> dict:
    """Run the comparison; returns ``{"rows": [...], "tests": [...], "csv", "markdown", "tests_csv"}``."""
    from pedtumorseg.evaluation.folder import evaluate_folder
    from pedtumorseg.files import atomic_output

    gt_dir, out_dir = Path(gt_dir), Path(out_dir)
    specs = [parse_model(m) for m in models]
    names = [n for n, _ in specs]
    if len(set(names)) != len(names):
        raise InputError(out_dir, f"model names must be unique, got {names}")
    for name, path in specs:
        if not path.exists():
            raise InputError(path, f"model {name}: no such bundle or prediction folder")
    rows, per_case, regions = [], {}, []
    for name, path in specs:
        model_dir = out_dir / name
        info: dict = {}
        if is_bundle(path):
            log(f"{name}: predicting with bundle {path}")
            pred_dir = model_dir / "predictions"
            info = predict_folder(path, gt_dir, pred_dir, device=device, tta=tta, log=log)
        else:
            pred_dir = path
        result = evaluate_folder(pred_dir, gt_dir, model_dir / "evaluation.csv")
        metrics = result.summary["metrics"]
        regions = regions or list(metrics)
        times = list(info.get("times", {}).values())
        row = {"model": name, "source": str(path), "n_cases": result.summary["n_cases"],
               "params": info.get("params"), "gflops_per_patch": info["flops"] / 1e9 if "flops" in info else None,
               "patch_size": "x".join(str(p) for p in info["patch_size"]) if "patch_size" in info else "",
               "device": info.get("device", ""),
               "median_s_per_case": float(np.median(times)) if times else None,
               "mean_s_per_case": float(np.mean(times)) if times else None}
        for region in metrics:
            for m in SCORE_METRICS:
                row[f"{region}_{m}"] = metrics[region][m]["mean"]
        rows.append(row)
        per_case[name] = {}
        for r in result.rows:
            per_case[name].setdefault(r["region"], {})[r["case"]] = float(r["lesion_dice"])
    tests = paired_tests(per_case)

    out_dir.mkdir(parents=True, exist_ok=True)
    columns = list(rows[0])
    for r in rows[1:]:
        columns += [c for c in r if c not in columns]
    csv_path, md_path, tests_path = out_dir / "compare.csv", out_dir / "compare.md", out_dir / "paired_tests.csv"
    with atomic_output(csv_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns)
        w.writeheader()
        w.writerows([{k: ("" if v is None else v) for k, v in r.items()} for r in rows])
    with atomic_output(tests_path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["model_a", "model_b", "region", "metric", "n", "median_difference",
                                          "statistic", "p_value"])
        w.writeheader()
        w.writerows(tests)
    md = markdown_table(rows, regions, tests)
    with atomic_output(md_path) as tmp:
        Path(tmp).write_text(md)
    return {"rows": rows, "tests": tests, "csv": csv_path, "markdown": md_path, "tests_csv": tests_path}


def markdown_table(rows: list[dict], regions: Sequence[str], tests: list[dict]) -> str:
    head = (["model", "params", "GFLOPs/patch", "patch", "s/case (median)"]
            + [f"{r} Dice" for r in regions] + [f"{r} HD95" for r in regions])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["model"], _fmt(r["params"]), _fmt(r["gflops_per_patch"], 2), r["patch_size"] or "n/a",
                 _fmt(r["median_s_per_case"], 2)]
        cells += [_fmt(r.get(f"{g}_lesion_dice")) for g in regions]
        cells += [_fmt(r.get(f"{g}_lesion_hd95"), 1) for g in regions]
        lines.append("| " + " | ".join(cells) + " |")
    n = max((r["n_cases"] for r in rows), default=0)
    lines += ["", f"Mean lesion-wise Dice / HD95 (mm) over {n} case(s); parameters and FLOPs of the network; "
                  "seconds per case measured in this run on the device named in compare.csv."]
    if tests:
        lines += ["", "Paired two-sided Wilcoxon signed-rank tests of per-case lesion-wise Dice:", "",
                  "| A | B | region | n | median A-B | p |", "|---|---|---|---|---|---|"]
        for t in tests:
            lines.append(f"| {t['model_a']} | {t['model_b']} | {t['region']} | {t['n']} | "
                         f"{_fmt(t['median_difference'])} | {_fmt(t['p_value'], 4)} |")
    return "\n".join(lines) + "\n"
