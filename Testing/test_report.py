"""The evaluation report: statistics of ``pedtumorseg.evaluation.analysis`` checked by hand, and the HTML of
``pedtumorseg evaluate --report`` parsed back (every section present, table numbers equal to the CSVs).

The cases are small label maps (20^3 voxels) written with SimpleITK: concentric spheres (ED shell, NET core,
an ET half and a CC ball) of radii that differ per case, predicted by shifting the ground truth one (A) or two
(B) voxels.
"""

from __future__ import annotations

import csv
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from pedtumorseg.evaluation import analysis as an
from pedtumorseg.cli import main

# --- statistics by hand -----------------------------------------------------------------------------------------


def test_describe_quartiles_and_nan():
    s = an.describe([1.0, 2.0, 3.0, 4.0, math.nan])
    # linear percentiles of 1..4: Q1 = 1 + 0.75 = 1.75, median 2.5, Q3 = 3.25; sample SD sqrt(5/3)
    assert (s["n"], s["n_nan"]) == (4, 1)
    assert s["mean"] == pytest.approx(2.5) and s["median"] == pytest.approx(2.5)
    assert (s["q1"], s["q3"], s["iqr"]) == pytest.approx((1.75, 3.25, 1.5))
    assert s["sd"] == pytest.approx(math.sqrt(5 / 3))
    empty = an.describe([math.nan])
    assert empty["n"] == 0 and math.isnan(empty["mean"]) and math.isnan(empty["iqr"])
    assert math.isnan(an.describe([0.5])["sd"])


def test_correlation_is_pearson_for_normal_data_and_spearman_otherwise():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    y = 2 * x + np.array([0.1, -0.1, 0.05, 0.0, -0.05, 0.1, -0.1, 0.0])
    res = an.correlation(x, y)
    # evenly spaced values: Shapiro-Wilk does not reject normality for either series -> Pearson
    assert res["normality_x"]["normal"] and res["normality_y"]["normal"]
    assert res["method"] == "pearson"
    assert res["coefficient"] == pytest.approx(np.corrcoef(x, y)[0, 1])
    # one extreme value makes x non-normal (Shapiro-Wilk p < 0.05) -> Spearman; the ranks still agree -> rho 1
    x2 = np.array([1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 100.0])
    y2 = np.arange(8.0)
    res2 = an.correlation(x2, y2)
    assert res2["normality_x"]["p_value"] < 0.05 and res2["normality_x"]["normal"] is False
    assert res2["method"] == "spearman" and res2["coefficient"] == pytest.approx(1.0)


def test_correlation_small_n_constant_and_nan():
    assert an.correlation([0.1, 0.2], [0.1, 0.3])["note"] == an.NOT_ENOUGH
    # NaN pairs are dropped: 3 values but only 2 complete pairs
    res = an.correlation([0.1, 0.2, math.nan], [0.1, 0.3, 0.5])
    assert res["n"] == 2 and res["note"] == an.NOT_ENOUGH and math.isnan(res["coefficient"])
    const = an.correlation([0.5, 0.5, 0.5, 0.5], [0.1, 0.2, 0.3, 0.4])
    assert const["note"] == an.CONSTANT and const["method"] == "" and math.isnan(const["p_value"])
    assert an.normality([1.0, 1.0, 1.0])["note"] == an.CONSTANT


def test_bland_altman_by_hand():
    ba = an.bland_altman([2.0, 4.0, 6.0], [1.0, 4.0, 5.0])
    # d = 1, 0, 1: bias 2/3, SD sqrt(((1/3)^2 * 2 + (2/3)^2) / 2) = sqrt(1/3)
    assert ba["n"] == 3 and ba["bias"] == pytest.approx(2 / 3)
    assert ba["sd"] == pytest.approx(math.sqrt(1 / 3))
    assert ba["loa_upper"] == pytest.approx(2 / 3 + 1.96 * math.sqrt(1 / 3))
    assert ba["means"] == pytest.approx([1.5, 4.0, 5.5])
    one = an.bland_altman([1.0], [0.5])
    assert one["bias"] == pytest.approx(0.5) and math.isnan(one["sd"]) and math.isnan(one["loa_lower"])


def test_paired_wilcoxon_by_hand():
    a = {"c1": 1.0, "c2": 2.0, "c3": 3.0, "c4": 4.0, "c5": 0.0, "c6": 7.0, "only_a": 9.0}
    b = {"c1": 0.0, "c2": 0.0, "c3": 0.0, "c4": 0.0, "c5": 5.0, "c6": 7.0, "only_b": 1.0}
    res = an.paired_comparison(a, b)
    # pairs c1..c6; d = 1, 2, 3, 4, -5, 0. The zero is dropped: ranks 1..5, R+ = 1+2+3+4 = 10, R- = 5, W = 5.
    # Exact null distribution of R- over 2^5 sign patterns: subsets of {1..5} with sum <= 5 are {}, {1}, {2},
    # {3}, {4}, {5}, {1,2}, {1,3}, {1,4}, {2,3} = 10 -> one-sided 10/32, two-sided p = 20/32 = 0.625.
    assert (res["n"], res["n_zero"]) == (6, 1)
    assert res["statistic"] == pytest.approx(5.0)
    assert res["p_value"] == pytest.approx(0.625)
    assert res["rank_biserial"] == pytest.approx((10 - 5) / 15)
    assert res["median_difference"] == pytest.approx(1.5)  # median of 1, 2, 3, 4, -5, 0
    assert (res["median_a"], res["median_b"]) == pytest.approx((2.5, 0.0))


def test_paired_comparison_small_n_and_no_difference():
    assert an.paired_comparison({"a": 1.0, "b": 0.5}, {"a": 0.0, "b": 0.5})["note"] == an.NOT_ENOUGH
    same = an.paired_comparison({c: 0.8 for c in "abcd"}, {c: 0.8 for c in "abcd"})
    assert same["note"] == "no difference" and math.isnan(same["p_value"]) and same["n_zero"] == 4
    nan = an.paired_comparison({"a": math.nan, "b": 1.0, "c": 0.2, "d": 0.3}, {"a": 1.0, "b": 0.0, "c": 0.1,
                                                                                 "d": 0.1})
    assert nan["n"] == 3 and nan["note"] == ""
    assert an.rank_biserial([0.0, 0.0]) != an.rank_biserial([0.0, 0.0])  # NaN without a non-zero difference
    assert an.rank_biserial([1.0, 1.0, -2.0]) == pytest.approx((1.5 + 1.5 - 3) / 6)  # tied ranks 1.5, 1.5, 3


def test_size_strata_median_and_fixed_cutoff():
    vols = {"a": 1.0, "b": 5.0, "c": 3.0, "d": 8.0, "e": math.nan}
    s = an.size_strata(vols)
    assert s["cutoff_ml"] == pytest.approx(4.0)  # median of 1, 3, 5, 8
    assert (s["small"], s["large"]) == (["a", "c"], ["b", "d"])
    fixed = an.size_strata(vols, cutoff_ml=5.0)
    assert (fixed["small"], fixed["large"]) == (["a", "c"], ["b", "d"])  # 5.0 is not below the cut-off
    assert an.compare_groups([1.0, 2.0], [3.0, 4.0, 5.0])["note"] == an.NOT_ENOUGH
    mw = an.compare_groups([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    # complete separation, n = 3 + 3: exact two-sided p = 2 / C(6, 3) = 0.1; U of the first group 0
    assert mw["statistic"] == 0.0 and mw["p_value"] == pytest.approx(0.1)


def test_combined_region_volumes_and_fractions():
    labels = np.array([[[1, 2, 3, 4, 4, 0]]], np.uint8)
    from pedtumorseg.arrays import volumes

    vol = an.with_combined(volumes(labels, (2.0, 1.0, 1.0))["volumes_ml"])
    assert vol[an.COMBINED_REGION] == pytest.approx(4 * 2.0 / 1000)
    fr = an.fractions_of_wt(vol)
    assert fr[an.COMBINED_REGION] == pytest.approx(0.8) and fr["ET"] == pytest.approx(0.2)
    assert an.combined_labels(labels).tolist() == [[[0, 4, 4, 4, 4, 0]]]
    assert all(math.isnan(v) for v in an.fractions_of_wt({**vol, "WT": 0.0}).values())


# --- the report end to end --------------------------------------------------------------------------------------

def _sphere(shape, center, radius):
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    return (z - center[0]) ** 2 + (y - center[1]) ** 2 + (x - center[2]) ** 2 <= radius ** 2


def _gt(k: int) -> np.ndarray:
    shape = (20, 20, 20)
    r = 4 + k  # WT radius 4..9 voxels: sizes spread for the strata
    c = (10, 10, 10)
    seg = np.zeros(shape, np.uint8)
    seg[_sphere(shape, c, r)] = 4  # ED shell
    core = _sphere(shape, c, r - 2)
    seg[core] = 2  # NET
    et = core.copy()
    et[:, :, : c[2] + (k % 3) - 1] = False  # an ET part of the core that varies per case
    seg[et] = 1
    seg[_sphere(shape, (c[0] - 1, c[1] - 1, c[2] - 2), max(1, r // 3))] = 3  # CC
    return seg


def _write(array, path: Path):
    img = sitk.GetImageFromArray(np.asarray(array, np.uint8))
    img.SetSpacing((1.0, 1.0, 1.2))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(img, str(path))


@pytest.fixture(scope="module")
def report_run(tmp_path_factory):
    pytest.importorskip("matplotlib")
    root = tmp_path_factory.mktemp("report")
    for k in range(6):
        gt = _gt(k)
        _write(gt, root / "gt" / f"P_{k}-seg.nii.gz")
        _write(np.roll(gt, 1, axis=2), root / "a" / f"P_{k}.nii.gz")
        b = np.roll(gt, 2, axis=1)
        if k == 0:
            b[b == 3] = 2  # B misses the cyst of one case
        _write(b, root / "b" / f"P_{k}.nii.gz")
    out = root / "out" / "metrics.csv"
    report = root / "out" / "report.html"
    rc = main(["evaluate", "--pred", str(root / "a"), "--pred-b", str(root / "b"), "--gt", str(root / "gt"),
               "--out", str(out), "--report", str(report)])
    assert rc == 0
    return root, out, report


class _Tables(HTMLParser):
    """Sections (id), tables (data attributes) -> {region: {stat: value}}, images, external references."""

    def __init__(self):
        super().__init__()
        self.sections: list[str] = []
        self.tables: dict[tuple[str, str, str], dict[str, dict[str, tuple[float, str]]]] = {}
        self.images: list[str] = []
        self.external: list[str] = []
        self.paragraph_values: dict[tuple[str, str], float] = {}
        self._table = self._row = self._cell = None
        self._text = ""

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        for key in ("src", "href"):
            if key in a and not (a[key].startswith("data:image/png;base64,") or a[key].startswith("#")):
                self.external.append(a[key])
        if tag in ("script", "link", "iframe"):
            self.external.append(tag)
        if tag == "section":
            self.sections.append(a["id"])
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "table" and "data-section" in a:
            self._table = self.tables.setdefault((a["data-section"], a["data-set"], a["data-metric"]), {})
        elif tag == "tr" and self._table is not None and "data-region" in a:
            self._row = self._table.setdefault(a["data-region"], {})
        elif tag == "td" and self._row is not None:
            self._cell = (a["data-stat"], a.get("data-value"))
            self._text = ""
        elif tag == "p" and "data-stat" in a:
            self.paragraph_values[a["data-set"], a["data-stat"]] = float(a["data-value"])

    def handle_data(self, data):
        if self._cell is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            stat, value = self._cell
            self._row[stat] = (float(value) if value is not None else None, self._text)
            self._cell = None
        elif tag == "table":
            self._table = self._row = None


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return [{k: (v if k in ("case", "region") else float(v)) for k, v in r.items()} for r in csv.DictReader(f)]


def _check(cell, expected, rel=1e-9):
    """The cell's full-precision value equals ``expected`` and its text shows it rounded."""
    value, text = cell
    if expected is None or (isinstance(expected, float) and math.isnan(expected)):
        assert math.isnan(value) and text == "n/a"
        return
    assert value == pytest.approx(expected, rel=rel, abs=1e-12)
    if not text.startswith("<"):  # p values below 1e-4 show as "<0.0001"
        assert float(text) == pytest.approx(expected, abs=0.6 * 10 ** -len(text.split(".")[-1]))


def test_report_has_every_section_and_no_external_resource(report_run):
    from pedtumorseg.evaluation.report import SECTIONS

    _, _, report = report_run
    p = _Tables()
    p.feed(report.read_text(encoding="utf-8"))
    assert p.sections == [sid for sid, _ in SECTIONS]
    assert p.external == []
    assert len(p.images) >= 5  # Dice distribution, volumes A/B, fractions A/B
    for src in p.images:
        import base64

        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_score_tables_equal_the_csv(report_run):
    _, out, report = report_run
    p = _Tables()
    p.feed(report.read_text(encoding="utf-8"))
    for dataset, csv_path in (("A", out), ("B", out.with_name("metrics-b.csv"))):
        rows = _csv_rows(csv_path)
        regions = {r["region"] for r in rows}
        assert regions == set(an.REPORT_REGIONS)  # the combined region NET+CC+ED is in the CSV
        for metric in ("lesion_dice", "lesion_hd95", "lesion_nsd_0.5", "lesion_nsd_1.0", "dice", "hd95"):
            table = p.tables["scores", dataset, metric]
            assert list(table) == list(an.REPORT_REGIONS)
            for region in an.REPORT_REGIONS:
                v = np.array([r[metric] for r in rows if r["region"] == region])
                v = v[np.isfinite(v)]
                _check(table[region]["mean"], float(np.mean(v)))
                _check(table[region]["median"], float(np.median(v)))
                q1, q3 = np.percentile(v, [25, 75])
                _check(table[region]["iqr"], float(q3 - q1))
                assert table[region]["n"][0] == v.size == 6


def test_combined_region_rows_score_the_union_of_net_cc_ed(report_run):
    _, out, _ = report_run
    rows = {(r["case"], r["region"]): r for r in _csv_rows(out)}
    for k in range(6):
        g = np.isin(_gt(k), (2, 3, 4))
        p = np.roll(g, 1, axis=2)  # prediction A is the ground truth shifted one voxel along x
        dice = 2 * np.count_nonzero(p & g) / (np.count_nonzero(p) + np.count_nonzero(g))
        assert rows[f"P_{k}", an.COMBINED_REGION]["dice"] == pytest.approx(dice)
        assert rows[f"P_{k}", an.COMBINED_REGION]["lesion_dice"] == pytest.approx(dice)  # one lesion each side


def test_report_volume_agreement_equals_the_volumes_csv(report_run):
    _, out, report = report_run
    p = _Tables()
    p.feed(report.read_text(encoding="utf-8"))
    with open(out.with_name("metrics-volumes.csv"), newline="") as f:
        vols = list(csv.DictReader(f))
    table = p.tables["volumes", "A", "agreement"]
    for region in an.REPORT_REGIONS:
        gt = np.array([float(r["ground_truth_ml"]) for r in vols if r["region"] == region])
        pred = np.array([float(r["prediction_ml"]) for r in vols if r["region"] == region])
        assert gt.size == 6
        _check(table[region]["median_gt"], float(np.median(gt)))
        _check(table[region]["bias"], float(np.mean(pred - gt)))
        from scipy.stats import mannwhitneyu

        _check(table[region]["mann_whitney_p"], float(mannwhitneyu(pred, gt).pvalue))
        assert table[region]["method"][1] in ("pearson", "spearman", "\u2014")
    # a shift keeps every volume: bias 0 and the combined region's volume is NET + CC + ED
    _check(table["WT"]["bias"], 0.0)
    by = {(r["case"], r["region"]): float(r["ground_truth_ml"]) for r in vols}
    for k in range(6):
        c = f"P_{k}"
        assert by[c, an.COMBINED_REGION] == pytest.approx(by[c, "NET"] + by[c, "CC"] + by[c, "ED"])
        assert by[c, "WT"] == pytest.approx(np.count_nonzero(_gt(k)) * 1.2 / 1000)
    assert set(p.tables["fractions", "A", "agreement"]) == set(an.FRACTION_REGIONS)


def test_report_size_strata_and_paired_comparison_equal_the_csvs(report_run):
    _, out, report = report_run
    p = _Tables()
    p.feed(report.read_text(encoding="utf-8"))
    rows_a, rows_b = _csv_rows(out), _csv_rows(out.with_name("metrics-b.csv"))
    # WT radius grows with k: the median split puts P_0..P_2 in small, P_3..P_5 in large
    with open(out.with_name("metrics-volumes.csv"), newline="") as f:
        wt = sorted(float(r["ground_truth_ml"]) for r in csv.DictReader(f) if r["region"] == "WT")
    assert p.paragraph_values["A", "cutoff_ml"] == pytest.approx(float(np.median(wt)))
    size = p.tables["size", "A", "lesion_dice"]
    small = [r["lesion_dice"] for r in rows_a if r["region"] == "WT" and r["case"] in ("P_0", "P_1", "P_2")]
    _check(size["WT"]["small_mean"], float(np.mean(small)))
    assert size["WT"]["small_n"][0] == 3 and size["WT"]["large_n"][0] == 3

    paired = p.tables["paired", "A-B", "lesion_dice"]
    for region in an.REPORT_REGIONS:
        a = {r["case"]: r["lesion_dice"] for r in rows_a if r["region"] == region}
        b = {r["case"]: r["lesion_dice"] for r in rows_b if r["region"] == region}
        d = np.array([a[c] - b[c] for c in sorted(a)])
        _check(paired[region]["median_difference"], float(np.median(d)))
        _check(paired[region]["median_a"], float(np.median(list(a.values()))))
        assert paired[region]["n"][0] == 6
    # B shifts twice as far: A's WT Dice is higher in every case -> r = +1, and the table says A is favoured
    # only if p < 0.05 (6 pairs, all one sign: exact two-sided p = 2 / 64 = 0.03125)
    wt = paired["WT"]
    assert wt["rank_biserial"][0] == pytest.approx(1.0)
    assert wt["p_value"][0] == pytest.approx(2 / 64)
    assert wt["favours"][1] == "A"
    assert p.tables["paired", "A-B", "lesion_hd95"]["WT"]["favours"][1] == "A"  # lower HD95 for A


def test_report_with_two_cases_says_not_enough_cases(tmp_path):
    pytest.importorskip("matplotlib")
    for k in (1, 4):
        gt = _gt(k)
        _write(gt, tmp_path / "gt" / f"P_{k}.nii.gz")
        # P_4's prediction is empty: it has no WT fractions and scores as a miss
        _write(np.roll(gt, 1, axis=0) if k == 1 else np.zeros_like(gt), tmp_path / "pred" / f"P_{k}.nii.gz")
    report = tmp_path / "r.html"
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
                 "--out", str(tmp_path / "m.csv"), "--report", str(report), "--size-cutoff-ml", "0.2"]) == 0
    text = report.read_text(encoding="utf-8")
    p = _Tables()
    p.feed(text)
    assert p.tables["volumes", "A", "agreement"]["WT"]["note"][1] == an.NOT_ENOUGH
    assert p.tables["volumes", "A", "agreement"]["WT"]["n"][0] == 2
    assert p.tables["fractions", "A", "agreement"]["ET"]["n"][0] == 1  # P_4 left out
    assert "left out (empty WT): P_4" in text
    assert p.tables["size", "A", "lesion_dice"]["WT"]["note"][1] == an.NOT_ENOUGH
    assert p.paragraph_values["A", "cutoff_ml"] == 0.2
    _check(p.tables["scores", "A", "lesion_dice"]["WT"]["median"],
           float(np.median([r["lesion_dice"] for r in _csv_rows(tmp_path / "m.csv") if r["region"] == "WT"])))
    assert "paired" in p.sections and not any(k[0] == "paired" for k in p.tables)


def test_report_of_nan_and_constant_scores(tmp_path):
    """Rows with NaN values and a region where every case scores 1 render as n/a and 'constant data'."""
    pytest.importorskip("matplotlib")
    from pedtumorseg.evaluation.folder import METRICS, EvaluationResult
    from pedtumorseg.evaluation.report import render

    rows, volumes = [], {}
    for i, case in enumerate(("c1", "c2", "c3", "c4")):
        for region in an.REPORT_REGIONS:
            row = {"case": case, "region": region, **{m: 0.2 * i for m in METRICS}}
            if region == "ET":
                row.update(lesion_dice=1.0, lesion_hd95=0.0)
            if region == "CC":
                row["lesion_hd95"] = math.nan
            rows.append(row)
        vol = {r: 1.0 + i for r in an.REPORT_REGIONS}
        volumes[case] = {"prediction": vol, "ground_truth": dict(vol, ET=2.0)}  # constant GT ET volume
    res = EvaluationResult(rows, {"n_cases": 4}, [], Path("m.csv"), Path("s.json"), None, [], volumes, None)
    p = _Tables()
    p.feed(render([("A", res)], labels={"A": "pred"}, gt_label="gt"))
    cc = p.tables["scores", "A", "lesion_hd95"]["CC"]
    assert cc["n"][0] == 0 and cc["n_nan"][0] == 4 and cc["mean"][1] == "n/a"
    assert p.tables["size", "A", "lesion_dice"]["ET"]["note"][1] == an.NOT_ENOUGH  # 2 + 2 cases
    assert p.tables["volumes", "A", "agreement"]["ET"]["note"][1] == an.CONSTANT
    assert p.tables["volumes", "A", "agreement"]["WT"]["method"][1] == "pearson"  # 1..4 on both sides


@pytest.mark.parametrize("args", [["--pred-b", "y"], ["--size-cutoff-ml", "5"]])
def test_report_options_without_report_are_usage_errors(tmp_path, capsys, args):
    assert main(["evaluate", "--pred", "x", "--gt", "z", "--out", str(tmp_path / "m.csv"), *args]) == 2
    assert "--report" in capsys.readouterr().err


def test_unusable_pred_b_fails_before_anything_is_written(tmp_path, capsys):
    gt = _gt(1)
    _write(gt, tmp_path / "gt" / "P.nii.gz")
    _write(gt, tmp_path / "pred" / "P.nii.gz")
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--pred-b", str(tmp_path / "nope"), "--gt",
               str(tmp_path / "gt"), "--out", str(tmp_path / "out" / "m.csv"), "--report", str(tmp_path / "r.html")])
    assert rc == 1 and "nope: folder not found" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_size_cutoff_must_be_positive(tmp_path, capsys):
    assert main(["evaluate", "--pred", "x", "--gt", "z", "--out", str(tmp_path / "m.csv"), "--report",
                 str(tmp_path / "r.html"), "--size-cutoff-ml", "0"]) == 2
    assert "--size-cutoff-ml" in capsys.readouterr().err


def test_report_without_matplotlib_fails_up_front(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "matplotlib" else real(name, *a))
    gt = _gt(1)
    _write(gt, tmp_path / "gt" / "P.nii.gz")
    _write(gt, tmp_path / "pred" / "P.nii.gz")
    rc = main(["evaluate", "--pred", str(tmp_path / "pred"), "--gt", str(tmp_path / "gt"),
               "--out", str(tmp_path / "out" / "m.csv"), "--report", str(tmp_path / "out" / "r.html")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 1 and len(err) == 1 and "pip install 'pedtumorseg[report]'" in err[0]
    assert not (tmp_path / "out").exists()  # nothing evaluated, nothing written
