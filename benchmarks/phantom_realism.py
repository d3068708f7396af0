"""How real do the phantoms look? Per-label intensity statistics of real labeled scans against clean and realistic
phantoms, measured the same way on both (``pedtumorseg.phantoms.realism``), written as the markdown table that
justifies the realistic generator's choices (``PedTumorSeg/pedtumorseg/phantoms/REALISM.md``).

    PYTHONPATH=PedTumorSeg .venv/bin/python benchmarks/phantom_realism.py --real <folder of labeled cases> \
        [--unlabeled <case folder> ...] --n 12 --size small --out PedTumorSeg/pedtumorseg/phantoms/REALISM.md

The labeled cases carry BraTS 2018 labels (1 NCR/NET, 2 ED, 4 ET). With ``--size small`` the real cases are
resampled to the phantoms' 2.5 mm grid before measuring; their image-quality measures (noise, slice anisotropy,
bias) are also taken at their native 1 mm, where the slice thickness shows.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pedtumorseg.conventions import CHANNELS
from pedtumorseg.phantoms import realism as R
from pedtumorseg.phantoms.clean import geometry_for, make_phantom
from pedtumorseg.phantoms.realistic import make_realistic_phantom

SEQUENCE = {"t1": "T1", "t1ce": "T1CE", "t2": "T2", "flair": "FLAIR"}


def _fmt(v, digits=3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def _quantile_rows(name: str, table: dict) -> list[str]:
    rows = []
    for region in R.REGIONS:
        cells = [("–" if table[region][ch] is None else
                  f"{table[region][ch][2]:.2f} [{table[region][ch][1]:.2f}, {table[region][ch][3]:.2f}]")
                 for ch in CHANNELS]
        rows.append(f"| {name} | {region} | " + " | ".join(cells) + " |")
    return rows


def _distance_rows(clean: dict, realistic: dict) -> list[str]:
    rows = []
    for region in R.REGIONS:
        cells = [f"{_fmt(clean[region][ch])} → **{_fmt(realistic[region][ch])}**" for ch in CHANNELS]
        rows.append(f"| {region} | " + " | ".join(cells) + " |")
    return rows


def _quality_rows(name: str, cases: list) -> list[str]:
    rows = []
    for key in ("wm_cv", "anisotropy", "bias"):
        cells = []
        for ch in CHANNELS:
            values = [c.quality[ch][key] for c in cases if np.isfinite(c.quality[ch][key])]
            cells.append(f"{np.median(values):.3f} ({min(values):.2f}–{max(values):.2f})" if values else "–")
        rows.append(f"| {name} | {key} | " + " | ".join(cells) + " |")
    return rows


def _volumes(segs: list, spacing) -> list[str]:
    voxel = float(np.prod(spacing)) / 1000.0
    out = []
    for seg in segs:
        tc = float(np.isin(seg, (1, 2, 3)).sum() * voxel)
        wt = float((seg > 0).sum() * voxel)
        out.append(f"TC {tc:.1f} cm³, WT {wt:.1f} cm³ (WT/TC {wt / max(tc, 1e-6):.1f})")
    return out


def measure(args) -> dict:
    geometry = geometry_for(args.size) if args.size == "small" else None
    real, native, segs = [], [], []
    folders = sorted(p for p in Path(args.real).iterdir() if p.is_dir())
    for folder in folders:
        images, seg, spacing = R.read_labeled_case(folder, geometry)
        real.append(R.measure_case(images, seg, spacing))
        segs.append((seg, spacing))
        full, full_seg, full_spacing = R.read_labeled_case(folder)
        native.append(R.measure_case(full, full_seg, full_spacing))
    unlabeled = []
    for folder in args.unlabeled or []:
        full, _, full_spacing = R.read_labeled_case(folder)
        unlabeled.append(R.measure_case(full, np.zeros(full["t1"].shape, np.uint8), full_spacing))
    started = time.perf_counter()
    clean = [R.measure_case(p.images, p.seg, p.geometry.spacing_zyx)
             for p in (make_phantom(args.seed + k, args.size) for k in range(args.n))]
    clean_s = (time.perf_counter() - started) / args.n
    started = time.perf_counter()
    phantoms = [make_realistic_phantom(args.seed + k, args.size) for k in range(args.n)]
    realistic_s = (time.perf_counter() - started) / args.n
    realistic = [R.measure_case(p.images, p.seg, p.geometry.spacing_zyx) for p in phantoms]
    return {"real": real, "native": native, "unlabeled": unlabeled, "clean": clean, "realistic": realistic,
            "names": [f.name for f in folders], "segs": segs, "phantoms": phantoms,
            "seconds": (clean_s, realistic_s)}


def report(m: dict, args) -> str:
    """Long on purpose: one markdown page, section by section, in the order a reader checks the claims."""
    d_clean = R.distance_table(m["real"], m["clean"])
    d_real = R.distance_table(m["real"], m["realistic"])
    z_clean = R.distance_table(m["real"], m["clean"], "zscore")
    z_real = R.distance_table(m["real"], m["realistic"], "zscore")
    tumor = ("ET", "NCR", "ED")
    head = "| | region | " + " | ".join(SEQUENCE[c] for c in CHANNELS) + " |"
    line = "|---|---|" + "---|" * len(CHANNELS)
    kinds = {}
    for p in m["phantoms"]:
        for k in p.kinds or ["tumor-free"]:
            kinds[k] = kinds.get(k, 0) + 1
    out = [
        "# Realism of the phantoms, measured",
        "",
        f"Written by `benchmarks/phantom_realism.py --n {args.n} --size {args.size} --seed {args.seed}`; "
        f"real: {len(m['real'])} labeled adult gliomas (BraTS 2018: {', '.join(m['names'])})"
        + (f", resampled to the {args.size} grid (2.5 mm)" if args.size == "small" else "") + ". "
        "Intensities are divided by the median of normal-appearing white matter (NAWM) of the same sequence "
        "(`phantoms.realism`: tumor-free brain split by 3-class k-means on T1), so 1.0 is NAWM whatever the "
        "scanner's scale. NCR = NET + CC (BraTS 2018 has one label for necrosis and non-enhancing tumor). "
        "brain = tumor-free brain, wm/gm/csf its k-means classes.",
        "",
        "## Distance to the real scans (Wasserstein-1 of NAWM-normalized intensities; lower is closer)",
        "",
        "clean → **realistic**, pooled over cases (each case weighs the same: "
        f"{R.SAMPLES_PER_REGION} voxels per region and case).",
        "",
        "| region | " + " | ".join(SEQUENCE[c] for c in CHANNELS) + " |",
        "|---|" + "---|" * len(CHANNELS),
        *_distance_rows(d_clean, d_real),
        "",
        f"Mean over tumor regions (ET, NCR, ED) and sequences: clean {R.mean_distance(d_clean, tumor):.3f}, "
        f"realistic **{R.mean_distance(d_real, tumor):.3f}**; over all regions: clean "
        f"{R.mean_distance(d_clean):.3f}, realistic **{R.mean_distance(d_real):.3f}**.",
        "",
        "The same in the network's input space (each case z-scored over its brain, tumor included, as nnU-Net's "
        "z-score normalization does; units of the brain's standard deviation):",
        "",
        "| region | " + " | ".join(SEQUENCE[c] for c in CHANNELS) + " |",
        "|---|" + "---|" * len(CHANNELS),
        *_distance_rows(z_clean, z_real),
        "",
        f"Mean over tumor regions: clean {R.mean_distance(z_clean, tumor):.3f}, realistic "
        f"**{R.mean_distance(z_real, tumor):.3f}**; over all regions: clean {R.mean_distance(z_clean):.3f}, "
        f"realistic **{R.mean_distance(z_real):.3f}**.",
        "",
        "## Per-region medians [quartiles], NAWM = 1",
        "",
        head, line,
        *_quantile_rows("real", R.quantile_table(m["real"])),
        *_quantile_rows("clean", R.quantile_table(m["clean"])),
        *_quantile_rows("realistic", R.quantile_table(m["realistic"])),
        "",
        "## Between-scan spread of a class's median (sd of log median; what `appearance.SPREAD` draws)",
        "",
        head, line,
        *[f"| real | {r} | " + " | ".join(_fmt(v, 2) for v in R.case_spread(m["real"], r).values()) + " |"
          for r in ("ET", "NCR", "ED", "gm")],
        *[f"| realistic | {r} | " + " | ".join(_fmt(v, 2) for v in R.case_spread(m["realistic"], r).values())
          + " |" for r in ("ET", "NCR", "ED", "gm")],
        "",
        "## Image quality: NAWM spread (`wm_cv`), slice anisotropy (z/x neighbour differences), bias (octant "
        "NAWM max/min); median (range)",
        "",
        head, line,
        *_quality_rows("real, 1 mm", m["native"]),
        *(_quality_rows("real unlabeled, 1 mm", m["unlabeled"]) if m["unlabeled"] else []),
        *_quality_rows(f"real, {args.size}", m["real"]),
        *_quality_rows(f"clean, {args.size}", m["clean"]),
        *_quality_rows(f"realistic, {args.size}", m["realistic"]),
        "",
        "## Volumes and kinds",
        "",
        *[f"- {n}: {v}" for n, v in zip(m["names"], _volumes([s for s, _ in m["segs"]], m["segs"][0][1]))],
        f"- realistic phantoms drawn: {', '.join(f'{k} {v}' for k, v in sorted(kinds.items()))}",
        f"- seconds per case ({args.size}): clean {m['seconds'][0]:.1f}, realistic {m['seconds'][1]:.1f} "
        "(generation only, this machine)",
        *([f"- montage of the first six realistic phantoms: `{args.montage}`"] if args.montage else []),
        "",
        "## How the generator uses these numbers, and what they do not show",
        "",
        "- `appearance.RATIOS` centres each class on the real medians above (ET, NCR split into solid NET and "
        "necrosis around the NCR median, ED, GM); `appearance.SPREAD` draws per-case means with about the real "
        "between-scan spread; the texture and `appearance.NOISE` give the real NAWM spread (`wm_cv`); "
        "`P_THICK_SLICES` follows the anisotropy at 1 mm (T2/FLAIR/T1 mostly thick-sliced, T1CE mostly 3D); "
        "`_bias` gives octant spreads like the real ones; `NAWM_RANGE` spans the real scanners' scales.",
        "- The real `csf` class is mostly the dark rim that skull stripping leaves at the brain's edge (its T2 "
        "median is below 1, while ventricular CSF is T2-bright): the phantoms darken their edge too but keep "
        "ventricles T2-bright, so that row is not matched on purpose.",
        "- The real cases have no cyst label: CC's ratios (T1/T1CE dark, T2 CSF-like, FLAIR incompletely "
        "suppressed) come from fluid physics and only enter here inside NCR.",
        "- Four adult gliomas (three high-grade) are a small sample, of adult tumors: pediatric kinds (DIPG, "
        "pilocytic, medulloblastoma-like) share their contrast mechanisms but their ratios are not measured "
        "here; at 2.5 mm the T2/FLAIR slice anisotropy of the phantoms stays closer to isotropic than real.",
        "",
    ]
    return "\n".join(out)


def montage(phantoms: list, path: str) -> None:
    """One row per phantom (the axial slice with the most tumor): T1, T1CE, T2, FLAIR and the labels."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    from pedtumorseg.conventions import LABEL_COLORS

    colors = ListedColormap([(0, 0, 0)] + [LABEL_COLORS[k] for k in (1, 2, 3, 4)])
    fig, axes = plt.subplots(len(phantoms), 5, figsize=(7.5, 1.6 * len(phantoms)))
    for row, p in zip(np.atleast_2d(axes), phantoms):
        wt = p.seg > 0
        z = int(np.argmax(wt.sum((1, 2)))) if wt.any() else p.seg.shape[0] // 2
        for ax, ch in zip(row, CHANNELS):
            img = p.images[ch][z].astype(float)
            ax.imshow(img[::-1], cmap="gray", vmin=0, vmax=np.percentile(img[img > 0], 99.5) if (img > 0).any() else 1)
        row[4].imshow(p.seg[z][::-1], cmap=colors, vmin=0, vmax=4, interpolation="nearest")
        row[0].set_ylabel(" + ".join(p.kinds) or "tumor-free", fontsize=7)
        for ax, title in zip(row, [SEQUENCE[c] for c in CHANNELS] + ["labels"]):
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(title, fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=60)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", required=True, help="folder of labeled real case folders (BraTS 2018 labels)")
    parser.add_argument("--unlabeled", nargs="*", help="real case folders without labels (image quality only)")
    parser.add_argument("--n", type=int, default=12, help="phantoms of each style (default 12)")
    parser.add_argument("--size", choices=("small", "brats"), default="small")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="markdown file to write (default: print)")
    parser.add_argument("--montage", help="PNG of the first six realistic phantoms (for the eyes)")
    args = parser.parse_args(argv)
    measured = measure(args)
    text = report(measured, args)
    if args.montage:
        montage(measured["phantoms"][:6], args.montage)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
