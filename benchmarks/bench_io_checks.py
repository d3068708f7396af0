"""Cost of the reliability checks of ``pedtumorseg.inputs`` on a BraTS-size case (240x240x155, 1 mm).

    .venv/bin/python benchmarks/bench_io_checks.py [--repeats N] [--float32]

Reading: ``load_case`` with the full-read NIfTI verification (complete gzip stream, byte count, pixdim,
NaN/Inf) and the intensity / identical-input checks, against the same ``load_case`` with the verification
switched off (ITK's read alone). Writing: ``write_labels`` (atomic, fsync, read back and compared) against a
bare ``sitk.WriteImage`` of the same label map. Prints the best-of-N CPU times and the ratios.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pedtumorseg.inputs import images as io
from pedtumorseg.phantoms.clean import make_phantom, write_phantom


def best_of(fn, repeats: int) -> float:
    """Best CPU time of this process over ``repeats`` runs (steadier than wall time on a shared machine; the
    work is single-threaded numpy/zlib/ITK I/O)."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--float32", action="store_true", help="store the images as float32 (the NaN scan runs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        phantom = make_phantom(0, "brats")
        if args.float32:
            phantom.images = {k: v.astype(np.float32) for k, v in phantom.images.items()}
        files = io.find_case(write_phantom(phantom, Path(tmp)))
        checked = best_of(lambda: io.load_case(files), args.repeats)
        real_verify = io._verify_nifti
        io._verify_nifti = lambda path, what: None
        try:
            plain = best_of(lambda: io.load_case(files), args.repeats)
        finally:
            io._verify_nifti = real_verify
        case = io.load_case(files)
        labels = phantom.seg
        out = Path(tmp) / "out"
        out.mkdir()
        write_checked = best_of(lambda: io.write_labels(labels, case.geometry, out / "a-seg.nii.gz"), args.repeats)
        image = case.geometry.to_image(labels)
        write_plain = best_of(lambda: sitk.WriteImage(image, str(out / "b-seg.nii.gz"), True), args.repeats)
    kind = "float32" if args.float32 else "int16"
    print(f"load_case ({kind} .nii.gz x4): checked {checked:.3f} s CPU, ITK read only {plain:.3f} s, "
          f"ratio {checked / plain:.2f}")
    print(f"write_labels (uint8 .nii.gz): checked {write_checked:.3f} s CPU, bare WriteImage {write_plain:.3f} s, "
          f"ratio {write_checked / write_plain:.2f}")


if __name__ == "__main__":
    main()
