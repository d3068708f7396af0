"""Cohort throughput: cases per hour for N phantom cases, one `pedtumorseg predict --case` process per case (the
shell loop nnU-Net users write) against one cohort worker (`pedtumorseg cohort run-task`: one process, the model
loaded once, the cases in turn), on the same machine in one run, with the same threads.

    PYTHONPATH=PedTumorSeg python benchmarks/cohort_throughput.py                 # 10 small phantoms, demo bundle
    PYTHONPATH=PedTumorSeg python benchmarks/cohort_throughput.py --n 10 --size brats --threads 2

Both ways write the same outputs (checked: every case's label map equal). Prints seconds, cases per hour and the
ratio worker / per-case; ``--json FILE`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from pedtumorseg.cohort.manifest import manifest_from_folder, write_manifest
from pedtumorseg.cohort.state import CohortFolder, Resources, RunSettings, settings_dict
from pedtumorseg.files import write_json
from pedtumorseg.inference.bundle import default_bundle_path
from pedtumorseg.inputs.images import read_labels
from pedtumorseg.outputs.paths import CaseOutputs
from pedtumorseg.phantoms.clean import write_phantoms


def _env(threads: int) -> dict[str, str]:
    # the same threads both ways: the engine caps its threads by SLURM_CPUS_PER_TASK
    return {**os.environ, "SLURM_CPUS_PER_TASK": str(threads), "OMP_NUM_THREADS": str(threads),
            "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[1] / "PedTumorSeg"),
                                           os.environ.get("PYTHONPATH", "")])}


def per_case(cases: list[Path], out: Path, bundle: str, device: str, threads: int, backend: str) -> float:
    start = time.perf_counter()
    for case in cases:
        subprocess.run([sys.executable, "-m", "pedtumorseg", "predict", "--case", str(case), "--out", str(out),
                        "--model", bundle, "--device", device, "--backend", backend, "--no-tta", "--progress",
                        "none"], env=_env(threads), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def one_worker(root: Path, out: Path, bundle: str, device: str, threads: int, backend: str) -> float:
    rows, _ = manifest_from_folder(root)
    folder = CohortFolder(out)
    manifest = write_manifest(rows, folder.submission_path(1, ".csv"))
    settings = write_json(settings_dict(out, manifest, RunSettings(model=bundle, device=device, tta=False,
                                                                          backend=backend),
                                        Resources(cases_per_task=len(rows))), folder.submission_path(1, ".json"))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "pedtumorseg", "cohort", "run-task", "--settings", str(settings),
                    "--task-id", "0"], env=_env(threads), check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10, help="phantom cases (default 10)")
    ap.add_argument("--size", choices=("small", "brats"), default="small")
    ap.add_argument("--model", help="bundle (default: the shipped demo bundle)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--backend", default="torch", help="the same for both ways (default torch)")
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    args = ap.parse_args()
    bundle = str(args.model or default_bundle_path())
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_phantoms(tmp / "cases", args.n, size=args.size, seed=100)
        cases = sorted(p for p in (tmp / "cases").iterdir() if p.is_dir())
        worker_s = one_worker(tmp / "cases", tmp / "worker", bundle, args.device, args.threads, args.backend)
        per_case_s = per_case(cases, tmp / "per-case", bundle, args.device, args.threads, args.backend)
        for case in cases:
            a, b = (read_labels(CaseOutputs.of(case.name, tmp / d).seg) for d in ("per-case", "worker"))
            assert np.array_equal(a, b), f"{case.name}: the two ways disagree"
    result = {"cases": args.n, "size": args.size, "bundle": Path(bundle).name, "device": args.device,
              "backend": args.backend, "threads": args.threads,
              "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
              "per_case_seconds": round(per_case_s, 1), "worker_seconds": round(worker_s, 1),
              "per_case_cases_per_hour": round(3600 * args.n / per_case_s, 1),
              "worker_cases_per_hour": round(3600 * args.n / worker_s, 1),
              "worker_over_per_case": round(per_case_s / worker_s, 2)}
    print(f"{args.n} {args.size} phantom cases, {result['bundle']}, {args.device}, {args.threads} thread(s)")
    print(f"  one process per case : {per_case_s:7.1f} s  {result['per_case_cases_per_hour']:8.1f} cases/h")
    print(f"  one cohort worker    : {worker_s:7.1f} s  {result['worker_cases_per_hour']:8.1f} cases/h")
    print(f"  worker / per-case throughput: {result['worker_over_per_case']:.2f}x")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
