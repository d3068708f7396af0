"""`pedtumorseg response`: the response assessment of two or more timepoints of one patient (see the package
docstring and README's "Response assessment")."""

from __future__ import annotations

import argparse
import sys

from pedtumorseg.errors import UsageError
from pedtumorseg.response.criteria import CRITERIA, SLICE_RULES, Clinical


def _clinical(args: argparse.Namespace, names: list[str]) -> dict[str, Clinical]:
    given = {"on_steroids": args.on_steroids or [], "steroids_increased": args.steroids_increased or [],
             "clinically_worse": args.clinically_worse or []}
    for option, values in given.items():
        for v in values:
            if v not in names:
                raise UsageError(None, f"--{option.replace('_', '-')} {v}: no timepoint of that name "
                                       f"(the timepoints are {', '.join(names)})")
    return {n: Clinical(n in given["on_steroids"], n in given["steroids_increased"], n in given["clinically_worse"])
            for n in names}


def _pct(category: dict) -> str:
    v = category["change_vs_baseline_pct"]
    return "" if v is None else f" ({v:+.1f} % vs baseline)"


def cmd_response(args: argparse.Namespace) -> int:
    from pedtumorseg.files import check_output_folder
    from pedtumorseg.response.assess import assess
    from pedtumorseg.response.report import write_outputs
    from pedtumorseg.response.timepoints import (check_same_patient, check_specs, load_timepoint, parse_timepoint,
                                                 segment_timepoint)

    specs = [parse_timepoint(t) for t in args.timepoint or []]
    clinical = _clinical(args, [s.name for s in specs])  # command-line mistakes first, then the files
    check_specs(specs)
    out = check_output_folder(args.out)
    if not args.no_html:
        from pedtumorseg.evaluation.report import require_matplotlib
        require_matplotlib(out / "response.html")
    predictor = None
    if any(s.case is not None for s in specs):
        from pedtumorseg.pipeline import Predictor
        predictor = Predictor.load(args.model, device=args.device, tta=not args.no_tta)
    say = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)
    timepoints = []
    for s in specs:
        if s.case is not None:
            say(f"segmenting {s.name}: {s.case}")
            timepoints.append(segment_timepoint(s, out, predictor, warn=say))
        else:
            timepoints.append(load_timepoint(s))
    check_same_patient(timepoints)
    result = assess(timepoints, CRITERIA[args.criterion], measured=args.measure, slice_rule=args.slice_rule,
                    clinical=clinical, register=not args.no_register, progress=say)
    written = write_outputs(result, timepoints, out, html_report=not args.no_html)
    for tp in result["timepoints"][1:]:
        c2, cv = tp["category_2d"], tp["category_volume"]
        flag = "" if tp["categories_agree"] else "  (2D and volume disagree)"
        print(f"{tp['name']}: 2D {c2['category']}{_pct(c2)}, volume {cv['category']}{_pct(cv)}{flag}")
        for warning in tp["warnings"]:
            print(f"pedtumorseg: warning: {tp['name']}: {warning}", file=sys.stderr)
    print("suggestion for the reader, not a diagnosis")
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return 0


def add_parser(sub) -> None:
    p = sub.add_parser("response", help="RAPNO/RANO response assessment over two or more timepoints of one patient")
    p.add_argument("--timepoint", action="append", metavar="NAME=CASE | NAME=SEG,T1CE",
                   help="a timepoint, in time order (baseline first): a case folder or DICOM study (segmented with "
                        "--model), or an existing label map and its T1CE; repeat for each")
    p.add_argument("--out", required=True, help="output folder (response.json, -timepoints.csv, -lesions.csv, .html, .pdf)")
    p.add_argument("--criterion", required=True, choices=sorted(CRITERIA),
                   help="rapno-hgg, rapno-lgg, rapno-dipg (Lancet Oncol 2020) or rano2 (RANO 2.0, JCO 2023)")
    p.add_argument("--measure", choices=("ET", "T2FLAIR"),
                   help="the lesion kind measured: the enhancing part or the T2/FLAIR lesion (default: the "
                        "criterion's)")
    p.add_argument("--slice-rule", choices=SLICE_RULES, default="largest_diameter",
                   help="the axial slice measured: largest longest diameter (default) or largest product")
    p.add_argument("--no-register", action="store_true",
                   help="the timepoints are already in one space: match lesions without registration")
    clinical = p.add_argument_group("clinical facts the images cannot show (by timepoint NAME, repeatable)")
    clinical.add_argument("--on-steroids", action="append", metavar="NAME",
                          help="corticosteroids above physiological replacement (no CR)")
    clinical.add_argument("--steroids-increased", action="append", metavar="NAME",
                          help="corticosteroids increased since the previous scan (no PR or MR)")
    clinical.add_argument("--clinically-worse", action="append", metavar="NAME", help="clinical deterioration (PD)")
    p.add_argument("--model", help="bundle for timepoints given as cases (default: the shipped demo bundle)")
    p.add_argument("--device", default="auto")
    p.add_argument("--no-tta", action="store_true")
    p.add_argument("--no-html", action="store_true", help="no HTML or PDF report (JSON and CSV only)")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_response)
