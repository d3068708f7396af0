"""Each criterion's categories on constructed series, with the boundaries exactly at the thresholds."""

from __future__ import annotations

import pytest

from pedtumorseg.response.criteria import CRITERIA, Clinical, categorize, change, confirmations


def _cat(key, now, baseline=1000.0, nadir=None, kind="2d", measured=None, **kw):
    crit = CRITERIA[key]
    kw.setdefault("disease_gone", now == 0)
    kw.setdefault("new_lesion", False)
    return categorize(crit.thresholds(kind, measured), baseline, baseline if nadir is None else nadir, now, **kw)


@pytest.mark.parametrize("key,now,expected", [
    # RAPNO HGG: PR at a 50 % decrease, PD at a 25 % increase, no minor response
    ("rapno-hgg", 500.0, "PR"), ("rapno-hgg", 500.01, "SD"), ("rapno-hgg", 700.0, "SD"),
    ("rapno-hgg", 1250.0, "PD"), ("rapno-hgg", 1249.99, "SD"), ("rapno-hgg", 0.0, "CR"),
    # RAPNO LGG: minor response from 25 % to 50 %
    ("rapno-lgg", 750.0, "MR"), ("rapno-lgg", 750.01, "SD"), ("rapno-lgg", 500.0, "PR"), ("rapno-lgg", 500.01, "MR"),
    ("rapno-lgg", 1250.0, "PD"),
    # RAPNO DIPG: PR at a 25 % decrease (our reading of Cooney 2020)
    ("rapno-dipg", 750.0, "PR"), ("rapno-dipg", 750.01, "SD"), ("rapno-dipg", 1250.0, "PD"),
    # RANO 2.0 enhancing: no minor response
    ("rano2", 750.0, "SD"), ("rano2", 500.0, "PR"), ("rano2", 1250.0, "PD"),
])
def test_2d_thresholds_met_at_equality(key, now, expected):
    assert _cat(key, now).category == expected


def test_rano2_minor_response_only_for_t2flair_measured_tumours():
    assert _cat("rano2", 750.0, measured="T2FLAIR").category == "MR"
    assert _cat("rano2", 750.0, measured="ET").category == "SD"


@pytest.mark.parametrize("now,expected", [(35.0, "PR"), (35.01, "SD"), (140.0, "PD"), (139.99, "SD")])
def test_volumetric_thresholds_rano2(now, expected):  # PR <= -65 %, PD >= +40 % (baseline 100 mL)
    for key in CRITERIA:
        assert _cat(key, now, baseline=100.0, kind="volume").category == expected


def test_progression_is_judged_against_the_nadir():
    # baseline 1000, nadir 400 (a PR earlier), now 500: +25 % vs nadir is PD although -50 % vs baseline
    c = _cat("rapno-hgg", 500.0, nadir=400.0)
    assert c.category == "PD"
    assert c.change_vs_nadir == pytest.approx(0.25) and c.change_vs_baseline == pytest.approx(-0.5)
    assert _cat("rapno-hgg", 499.99, nadir=400.0).category == "PR"  # +24.998 % vs nadir, -50.001 % vs baseline
    assert _cat("rapno-hgg", 520.0, nadir=400.0).category == "PD"


def test_new_lesion_clinical_worsening_and_reappearance_are_progression():
    assert _cat("rano2", 400.0, new_lesion=True).category == "PD"
    assert _cat("rano2", 400.0, clinical=Clinical(clinically_worse=True)).category == "PD"
    assert _cat("rano2", 10.0, nadir=0.0, disease_gone=False).category == "PD"


def test_steroids_limit_complete_and_partial_response():
    assert _cat("rano2", 0.0, clinical=Clinical(on_steroids=True)).category == "PR"
    assert _cat("rano2", 400.0, clinical=Clinical(steroids_increased=True)).category == "SD"
    assert _cat("rapno-lgg", 700.0, clinical=Clinical(steroids_increased=True)).category == "SD"


def test_no_measurable_disease_at_baseline_is_not_evaluable():
    assert _cat("rano2", 0.0, baseline=0.0, disease_gone=True).category == "NE"
    assert _cat("rano2", 300.0, baseline=0.0, new_lesion=True).category == "PD"


def test_change_and_confirmation():
    assert change(150.0, 100.0) == pytest.approx(0.5) and change(1.0, 0.0) is None
    assert confirmations([None, "PR", "PR", "SD", "CR", "CR", "PR"], ("CR", "PR")) == [
        None, True, False, None, True, False, None]


def test_every_criterion_cites_its_source():
    for crit in CRITERIA.values():
        d = crit.to_dict()
        assert "2020" in d["source"] or "2023" in d["source"]
        assert d["measured"] in ("ET", "T2FLAIR") and d["max_target_lesions"] >= 1


def _result(products):
    """A hand-made assessment: one target lesion with the given (LD, PD) per timepoint (None: gone)."""
    tps, lesions = [], []
    for t, dims in enumerate(products):
        name = f"t{t}"
        tps.append({"name": name, "measured_volume_ml": 0.0 if dims is None else dims[0] * dims[1] / 100.0,
                    "measurable_limit_mm": 10.0, "clinical": Clinical().to_dict()})
        ld, pd = dims or (0.0, 0.0)
        lesions.append({"kind": "ET", "track": 1, "timepoint": name, "status": "present" if dims else "disappeared",
                        "volume_ml": 0.0 if dims is None else 1.0, "longest_mm": ld, "perpendicular_mm": pd,
                        "product_mm2": ld * pd, "measurable": dims is not None, "target": True,
                        "measurement": {"slices_with_lesion": 3}})
    return {"measured": "ET", "timepoints": tps, "lesions": lesions}


def test_readout_from_lesion_rows_and_a_readers_correction():
    from pedtumorseg.errors import UsageError
    from pedtumorseg.response.readout import categorize_result, edit_diameters

    crit = CRITERIA["rano2"]
    result = categorize_result(_result([(40.0, 25.0), (30.0, 20.0), (30.0, 16.0), None]), crit)
    tps = result["timepoints"]
    assert [tp["spd_mm2"] for tp in tps] == [1000.0, 600.0, 480.0, 0.0]
    assert [tp["category_2d"] and tp["category_2d"]["category"] for tp in tps] == [None, "SD", "PR", "CR"]
    assert tps[2]["confirmed_by_next_scan"] is True  # PR followed by CR
    # the reader moves the t1 calipers to 25 x 20 mm: 500 mm^2, exactly -50 %: PR
    edit_diameters(result, crit, "t1", 1, 25.0, 20.0)
    assert tps[1]["category_2d"]["category"] == "PR" and tps[1]["spd_mm2"] == 500.0
    row = next(r for r in result["lesions"] if r["timepoint"] == "t1")
    assert row["edited"] and row["computed"]["product_mm2"] == 600.0
    # t2 measured at 9 mm perpendicular: below 10 mm, no longer measurable (the product still counts)
    edit_diameters(result, crit, "t2", 1, 30.0, 9.0)
    assert next(r for r in result["lesions"] if r["timepoint"] == "t2")["measurable"] is False
    with pytest.raises(UsageError):
        edit_diameters(result, crit, "t3", 1, 10.0, 10.0)  # the lesion is gone there
    with pytest.raises(UsageError):
        edit_diameters(result, crit, "t1", 1, 10.0, 20.0)  # perpendicular longer than the longest
