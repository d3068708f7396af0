"""Compare training variants on the cases where a subregion is absent (the FP term's target) and where it is present.

Input: the per-case CSVs that ``pedtumorseg evaluate`` (or ``pedtumorseg-train evaluate``) writes for each
variant's predictions of the same held-out cases. A subregion is *absent* from a case when its ground truth has no
lesion (``num_tp_lesions + num_fn_lesions == 0``); the official lesion-wise Dice is then 1 when nothing of it is
predicted and 0 when anything is (one stray lesion is enough), so its mean over absent cases is the fraction of
absent cases kept clean.

    python PedTumorSegTraining/experiments/absent_classes.py fp_on=eval_on.csv fp_off=eval_off.csv [--out r.json]

Prints one Markdown table (per variant and subregion: absent cases, clean cases, false-positive lesions, mean
lesion-wise Dice on absent and on present cases) and, for two variants, the paired counts (absent cases only the
first keeps clean / only the second) with an exact two-sided sign test on the discordant cases.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from math import comb

SUBREGIONS = ("ET", "NET", "CC", "ED")


def read_eval(path: str) -> dict[tuple[str, str], dict]:
    """{(case, region): row} of an evaluation CSV (numbers as floats)."""
    out = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            out[(row["case"], row["region"])] = {k: (v if k in ("case", "region") else float(v))
                                                 for k, v in row.items()}
    return out


def is_absent(row: dict) -> bool:
    return row["num_tp_lesions"] + row["num_fn_lesions"] == 0


def sign_test_p(k: int, n: int) -> float:
    """Exact two-sided binomial (p = 1/2) test of k successes in n discordant pairs."""
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(0, min(k, n - k) + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def summarize(variants: dict[str, dict]) -> dict:
    """Per variant and subregion: counts and means on absent / present cases (same cases in every variant)."""
    names = list(variants)
    keys = set.intersection(*(set(v) for v in variants.values()))
    if not keys:
        raise SystemExit("the evaluation CSVs have no (case, region) in common")
    result = {"variants": {}, "paired": {}}
    for name, rows in variants.items():
        per = {}
        for region in SUBREGIONS:
            mine = [rows[k] for k in sorted(keys) if k[1] == region]
            absent = [r for r in mine if is_absent(r)]
            present = [r for r in mine if not is_absent(r)]
            per[region] = {
                "n_absent": len(absent),
                "n_absent_clean": sum(1 for r in absent if r["lesion_dice"] == 1.0),
                "fp_lesions_absent": int(sum(r["num_fp_lesions"] for r in absent)),
                "lesion_dice_absent": (sum(r["lesion_dice"] for r in absent) / len(absent)) if absent else None,
                "n_present": len(present),
                "lesion_dice_present": (sum(r["lesion_dice"] for r in present) / len(present)) if present else None,
                "lesion_dice_all": sum(r["lesion_dice"] for r in mine) / len(mine) if mine else None,
            }
        result["variants"][name] = per
    if len(names) == 2:
        a, b = names
        for region in SUBREGIONS:
            cases = [k for k in sorted(keys) if k[1] == region and is_absent(variants[a][k])]
            only_a = sum(1 for k in cases if variants[a][k]["lesion_dice"] == 1.0 > variants[b][k]["lesion_dice"])
            only_b = sum(1 for k in cases if variants[b][k]["lesion_dice"] == 1.0 > variants[a][k]["lesion_dice"])
            result["paired"][region] = {f"clean_only_{a}": only_a, f"clean_only_{b}": only_b,
                                        "sign_test_p": sign_test_p(only_a, only_a + only_b)}
    return result


def markdown(result: dict) -> str:
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    lines = ["| variant | region | absent cases | clean | FP lesions there | lesion Dice absent | present cases | "
             "lesion Dice present | lesion Dice all |", "|---|---|---|---|---|---|---|---|---|"]
    for name, per in result["variants"].items():
        for region, s in per.items():
            lines.append(f"| {name} | {region} | {s['n_absent']} | {s['n_absent_clean']} | {s['fp_lesions_absent']} "
                         f"| {f(s['lesion_dice_absent'])} | {s['n_present']} | {f(s['lesion_dice_present'])} "
                         f"| {f(s['lesion_dice_all'])} |")
    if result["paired"]:
        lines += ["", "| region | " + " | ".join(next(iter(result["paired"].values()))) + " |",
                  "|---|---|---|---|"]
        for region, p in result["paired"].items():
            lines.append(f"| {region} | " + " | ".join(f"{v:.3g}" if isinstance(v, float) else str(v)
                                                       for v in p.values()) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("variants", nargs="+", metavar="NAME=CSV")
    ap.add_argument("--out", help="write the summary as JSON here")
    a = ap.parse_args(argv)
    variants = {}
    for item in a.variants:
        name, sep, path = item.partition("=")
        if not sep:
            ap.error(f"expected NAME=CSV, got {item!r}")
        variants[name] = read_eval(path)
    result = summarize(variants)
    print(markdown(result))
    if a.out:
        with open(a.out, "w", encoding="utf-8") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
