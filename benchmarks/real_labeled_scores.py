"""Score a model bundle on real labeled cases whose labels use the BraTS <= 2020 numbers (1 necrosis / non-enhancing
core, 2 edema, 4 enhancing tumor), as the model card reports them.

    python benchmarks/real_labeled_scores.py CASES_DIR --out results.json [--model bundle.zip] [--tta]

``CASES_DIR`` holds ``<ID>/<ID>-{t1n,t1c,t2w,t2f,seg}.nii.gz``. The labels are mapped to this project's (4 -> ET,
1 -> NET, 2 -> ED; there is no cystic label, so CC counts only inside TC), every case is segmented with the bundle
(default: the shipped one) by the same path as ``pedtumorseg predict``, and scored with ``pedtumorseg evaluate``'s
scorer (the BraTS 2024/2025 PED definitions). Written: per case and region the voxel Dice, the lesion-wise Dice,
the false-positive lesion count and the predicted / reference volume ratio; their means; and the number of
predicted voxels outside the brain (outside every input's non-zero mask). Nothing here is a test: it is what a
model card quotes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

#: BraTS <= 2020 label -> this project's label
LEGACY_TO_PROJECT = {4: 1, 1: 2, 2: 4}
REPORTED = ("WT", "TC", "ET")


def _mapped_truth(case_dir: Path, out_dir: Path) -> Path:
    image = sitk.ReadImage(str(case_dir / f"{case_dir.name}-seg.nii.gz"))
    legacy = sitk.GetArrayFromImage(image)
    unknown = sorted(set(np.unique(legacy).tolist()) - {0, *LEGACY_TO_PROJECT})
    if unknown:
        raise SystemExit(f"{case_dir}: labels {unknown} are not BraTS <= 2020 labels (0, 1, 2, 4)")
    mapped = np.zeros_like(legacy, dtype=np.uint8)
    for old, new in LEGACY_TO_PROJECT.items():
        mapped[legacy == old] = new
    out = sitk.GetImageFromArray(mapped)
    out.CopyInformation(image)
    path = out_dir / f"{case_dir.name}-seg.nii.gz"
    sitk.WriteImage(out, str(path))
    return path


def _outside_brain(case_dir: Path, seg_path: Path) -> int:
    from pedtumorseg.arrays import nonzero_mask

    images = [sitk.GetArrayFromImage(sitk.ReadImage(str(p))) for p in sorted(case_dir.glob("*-t[12]*.nii.gz"))]
    seg = sitk.GetArrayFromImage(sitk.ReadImage(str(seg_path)))
    return int(np.count_nonzero((seg > 0) & ~nonzero_mask(np.stack(images))))


def score(cases_dir: Path, model: str | None, tta: bool) -> dict:
    from pedtumorseg.evaluation.folder import evaluate_folder
    from pedtumorseg.inputs.cases import find_case
    from pedtumorseg.pipeline import Predictor, predict_case

    cases = sorted(p for p in cases_dir.iterdir() if (p / f"{p.name}-seg.nii.gz").is_file())
    if not cases:
        raise SystemExit(f"{cases_dir}: no <ID>/<ID>-seg.nii.gz case folders")
    predictor = Predictor.load(model, device="cpu", tta=tta)
    result: dict = {"model": predictor.model_info(), "cases": {}}
    with tempfile.TemporaryDirectory() as tmp:
        truth_dir, pred_dir = Path(tmp, "gt"), Path(tmp, "pred")
        truth_dir.mkdir()
        for case in cases:
            _mapped_truth(case, truth_dir)
            start = time.perf_counter()
            out = predict_case(find_case(case), pred_dir, predictor)
            result["cases"][case.name] = {"seconds": round(time.perf_counter() - start, 1),
                                          "voxels_outside_brain": _outside_brain(case, out.outputs["seg"])}
        evaluation = evaluate_folder(pred_dir, truth_dir, Path(tmp, "scores.csv"), report_data=True)
        _collect(result, evaluation)
    return result


def _collect(result: dict, evaluation) -> None:
    for row in evaluation.rows:
        if row["region"] not in REPORTED:
            continue
        vol = evaluation.volumes[row["case"]]
        truth_ml, pred_ml = vol["ground_truth"][row["region"]], vol["prediction"][row["region"]]
        ratio = pred_ml / truth_ml if truth_ml else None
        result["cases"][row["case"]][row["region"]] = {
            "dice": row["dice"], "lesion_dice": row["lesion_dice"], "fp_lesions": row["num_fp_lesions"],
            "volume_ratio": ratio}
    means = {}
    for region in REPORTED:
        per_case = [c[region] for c in result["cases"].values()]
        means[region] = {key: float(np.mean([p[key] for p in per_case if p[key] is not None]))
                         for key in ("dice", "lesion_dice", "fp_lesions", "volume_ratio")}
    result["mean"] = means


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("cases_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the scores")
    parser.add_argument("--model", help="bundle (default: the shipped demo bundle)")
    parser.add_argument("--tta", action="store_true", help="mirroring test-time augmentation (default off)")
    args = parser.parse_args(argv)
    result = score(args.cases_dir, args.model, args.tta)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    for region, m in result["mean"].items():
        print(f"{region}: voxel Dice {m['dice']:.3f}, lesion-wise Dice {m['lesion_dice']:.3f}, "
              f"FP lesions/case {m['fp_lesions']:.2f}, volume ratio {m['volume_ratio']:.2f}")
    print("voxels outside the brain: " + ", ".join(f"{k} {v['voxels_outside_brain']}"
                                                    for k, v in result["cases"].items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
