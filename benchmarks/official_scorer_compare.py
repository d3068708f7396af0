"""Our BraTS PED scores against the official scorer (``metrics_PED.py`` of the BraTS-2024-Metrics code) on the
generated pairs of ``Testing/metrics_cases.py``; also regenerates the golden values of
``Testing/test_metrics_official.py``.

The official code needs its own environment (its pinned requirements.txt: numpy 1.26, scipy 1.10, cc3d, MedPy,
nibabel, pandas), for example::

    python3.11 -m venv /tmp/official_env
    /tmp/official_env/bin/pip install -r OFFICIAL_DIR/requirements.txt
    python benchmarks/official_scorer_compare.py OFFICIAL_DIR --official-python /tmp/official_env/bin/python
    python benchmarks/official_scorer_compare.py OFFICIAL_DIR --official-python ... \\
        --write-goldens Testing/data/official_ped_scores.json

``OFFICIAL_DIR`` is a checkout of the official repository (the folder with ``metrics_PED.py`` and its
``surface_distance`` package). The official side runs in a subprocess with ``--official-python``; this side
imports ``pedtumorseg``. Prints the largest |official - ours| of each score and every value outside the
tolerances; exits 1 when a Dice/NSD differs by more than 1e-4, an HD95 by more than 0.5 mm or a lesion count at
all (the whole-region HD95, sensitivity and specificity only where each side has at most one lesion: the official
code computes them on images of lesion numbers, see ``pedtumorseg.evaluation.metrics``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
TESTING = HERE.parent / "Testing"

#: official result column -> our key
FIELDS = {
    "LesionWise_Score_Dice": "lesion_dice",
    "LesionWise_Score_HD95": "lesion_hd95",
    "LesionWise_Score_NSD @ 0.5": "lesion_nsd_0.5",
    "LesionWise_Score_NSD @ 1.0": "lesion_nsd_1.0",
    "Num_TP": "num_tp_lesions",
    "Num_FN": "num_fn_lesions",
    "Num_FP": "num_fp_lesions",
    "Legacy_Dice": "dice",
    "Legacy_HD95": "hd95",
    "Legacy NSD @ 0.5": "nsd_0.5",
    "Legacy NSD @ 1.0": "nsd_1.0",
    "Sensitivity": "sensitivity",
    "Specificity": "specificity",
}
#: official tissue name -> our region
REGION_OF = {"ET": "ET", "NETC": "NET", "CC": "CC", "ED": "ED", "TC": "TC", "WT": "WT"}
#: keys that the official code computes on lesion-number images (valid only with <= 1 lesion per side)
SINGLE_LESION_ONLY = ("hd95", "sensitivity", "specificity")


def run_official(official_dir: Path, out_json: Path) -> None:
    """Runs inside the official environment: writes every case as NIfTI, scores it, dumps the values."""
    import nibabel as nib
    import numpy as np

    sys.path.insert(0, str(official_dir))
    sys.path.insert(0, str(TESTING))
    import metrics_PED  # noqa: E402  (the official scorer)
    from metrics_cases import CASES, make_case  # noqa: E402

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # the official code writes ./tmp_gt and ./tmp_pred
        for name in CASES:
            pred, gt, spacing_zyx = make_case(name)
            affine = np.diag(list(spacing_zyx[::-1]) + [1.0])
            files = {}
            for side, arr in (("pred", pred), ("gt", gt)):
                Path(side).mkdir(exist_ok=True)
                files[side] = f"{tmp}/{side}/{name}.nii.gz"
                nib.save(nib.Nifti1Image(arr.transpose(2, 1, 0).astype(np.uint8), affine), files[side])
            table, _ = metrics_PED.get_LesionWiseResults(files["pred"], files["gt"], "BraTS-PED")
            case = {}
            for _, row in table.iterrows():
                region = REGION_OF[row["Labels"]]
                values = {ours: float(row[theirs]) for theirs, ours in FIELDS.items()}
                for side, folder in (("pred", "tmp_pred"), ("gt", "tmp_gt")):
                    combined = nib.load(f"{folder}/{name}/{name}_{row['Labels']}_cc_combined.nii.gz").get_fdata()
                    values[f"{side}_lesions"] = int(len(np.unique(combined[combined > 0])))
                case[region] = values
            results[name] = case
    Path(out_json).write_text(json.dumps(results, indent=1, sort_keys=True))


def ours() -> dict:
    sys.path.insert(0, str(TESTING))
    from metrics_cases import CASES, make_case

    from pedtumorseg.evaluation.metrics import evaluate_case

    out = {}
    for name in CASES:
        pred, gt, spacing = make_case(name)
        out[name] = {row["region"]: row for row in evaluate_case(pred, gt, spacing)}
    return out


def compare(official: dict, mine: dict) -> list[str]:
    """Lines describing every value outside the tolerances."""
    failures = []
    for name, regions in official.items():
        for region, values in regions.items():
            single = values["pred_lesions"] <= 1 and values["gt_lesions"] <= 1
            for key in FIELDS.values():
                if key in SINGLE_LESION_ONLY and not single:
                    continue
                tol = 0.5 if "hd95" in key else (0 if key.startswith("num_") else 1e-4)
                if abs(values[key] - mine[name][region][key]) > tol:
                    failures.append(f"{name} {region} {key}: official {values[key]!r}, ours {mine[name][region][key]!r}")
    return failures


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("official_dir", type=Path, help="checkout of the official BraTS-2024-Metrics code")
    ap.add_argument("--official-python", default=sys.executable,
                    help="python of the environment with the official code's requirements")
    ap.add_argument("--write-goldens", type=Path, metavar="JSON",
                    help="write the official values (with the scorer's commit) to JSON, e.g. "
                         "Testing/data/official_ped_scores.json")
    ap.add_argument("--run-official", type=Path, help=argparse.SUPPRESS)  # internal: the subprocess side
    args = ap.parse_args(argv)
    if args.run_official:
        run_official(args.official_dir.resolve(), args.run_official.resolve())
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "official.json"
        subprocess.run([args.official_python, str(Path(__file__).resolve()), str(args.official_dir.resolve()),
                        "--run-official", str(out)], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        official = json.loads(out.read_text())
    commit = subprocess.run(["git", "-C", str(args.official_dir), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip() or "unknown (not a git checkout)"
    if args.write_goldens:
        doc = {"scorer": f"metrics_PED.py of BraTS-2024-Metrics at commit {commit}",
               "made_by": "benchmarks/official_scorer_compare.py --write-goldens", "cases": official}
        args.write_goldens.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    mine = ours()
    worst: dict[str, float] = {}
    for name, regions in official.items():
        for region, values in regions.items():
            for key in FIELDS.values():
                diff = abs(values[key] - mine[name][region][key])
                worst[key] = max(worst.get(key, 0.0), diff)
    print(f"official scorer commit {commit}; {len(official)} cases x 6 regions")
    for key, diff in worst.items():
        print(f"  largest |official - ours| {key:16s} {diff:.3g}")
    failures = compare(official, mine)
    for line in failures:
        print("MISMATCH", line)
    print("all within tolerance" if not failures else f"{len(failures)} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
