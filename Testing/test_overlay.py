"""The overlay PNG a reader can take in on its own, and the demonstration mark wherever a demo model's result is
shown (console, stats, overlay, the Slicer panel's model line)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_tiny_bundle

from pedtumorseg import cli
from pedtumorseg.errors import BundleError
from pedtumorseg.geometry import Geometry
from pedtumorseg.inference.bundle import default_bundle_path, load_bundle
from pedtumorseg.outputs.overlay import NOTICE_RGB, PANEL_PX, write_overlay_png

PIL = pytest.importorskip("PIL.Image")


def _case(shape=(40, 48, 56), spacing=(2.0, 1.0, 1.0)):
    """A bright ellipsoid head with a label blob on the patient's LEFT (+x in LPS), in an identity-direction grid."""
    z, y, x = np.indices(shape)
    c = [(n - 1) / 2 for n in shape]
    head = ((z - c[0]) / (shape[0] / 2.2)) ** 2 + ((y - c[1]) / (shape[1] / 2.2)) ** 2 + \
        ((x - c[2]) / (shape[2] / 2.2)) ** 2 < 1
    images = np.stack([head * 100.0 + 1.0] * 4).astype(np.float32)
    labels = np.zeros(shape, np.uint8)
    labels[18:22, 20:28, 40:46] = 1  # x 40..45 of 56: the patient's left
    geometry = Geometry(tuple(reversed(shape)), tuple(reversed(spacing)), (0.0, 0.0, 0.0),
                        tuple(float(v) for v in np.eye(3).ravel()))
    return images, labels, geometry


def test_overlay_is_large_with_legend_radiological_left_right_and_banner(tmp_path):
    images, labels, geometry = _case()
    plain = np.asarray(PIL.open(write_overlay_png(images, labels, geometry, tmp_path / "a.png", case_id="C-1",
                                                  model="m 1")).convert("RGB"))
    marked = np.asarray(PIL.open(write_overlay_png(images, labels, geometry, tmp_path / "b.png", case_id="C-1",
                                                   model="m 1", notice="demonstration")).convert("RGB"))
    assert plain.shape[1] >= 900 and plain.shape[0] >= PANEL_PX
    assert marked.shape[0] > plain.shape[0]  # the banner adds a row
    assert (marked[5, 5] == NOTICE_RGB).all() and not (plain[5, 5] == NOTICE_RGB).all()
    # the legend row holds each label's swatch color
    legend = plain[-40:]
    for rgb in ((255, 0, 0), (0, 204, 0), (255, 255, 0), (0, 128, 128)):
        assert (np.abs(legend.astype(int) - rgb).sum(axis=2) < 6).any(), rgb
    # the lesion on the patient's left is drawn on the RIGHT half of the axial panel (radiological convention)
    axial = plain[:, :PANEL_PX]
    rgb = axial.astype(int)
    red = (rgb[..., 0] - rgb[..., 1] > 80) & (rgb[..., 0] - rgb[..., 2] > 80)
    ys, xs = np.nonzero(red[62:62 + PANEL_PX])  # the view row, between the titles and the legend
    assert xs.size and xs.mean() > axial.shape[1] / 2


def test_manifest_intended_use_is_checked_and_defaults_to_research(tmp_path):
    research = load_bundle(write_tiny_bundle(tmp_path / "r.zip"))
    assert research.intended_use == "research" and research.demonstration_notice == ""
    demo = load_bundle(write_tiny_bundle(tmp_path / "d.zip", extra={"intended_use": "demonstration"}))
    assert "not for patients" in demo.demonstration_notice and demo.name in demo.demonstration_notice
    with pytest.raises(BundleError, match="intended_use must be one of"):
        load_bundle(write_tiny_bundle(tmp_path / "x.zip", extra={"intended_use": "clinical"}))


def test_the_shipped_bundle_is_marked_a_demonstration():
    assert load_bundle(default_bundle_path()).intended_use == "demonstration"


@pytest.mark.slow
def test_predict_with_a_demonstration_model_says_so_on_the_console_in_stats_and_overlay(tmp_path, capsys):
    from pedtumorseg.phantoms.clean import write_phantoms

    bundle = write_tiny_bundle(tmp_path / "d.zip", name="demo-like", extra={"intended_use": "demonstration"})
    case = write_phantoms(tmp_path / "in", 1, size="small", seed=5)[0]
    code = cli.main(["predict", "--case", str(case), "--out", str(tmp_path / "out"), "--model", str(bundle),
                     "--device", "cpu", "--no-tta", "--overlay"])
    err = capsys.readouterr().err
    assert code == 0
    assert "pedtumorseg: warning: demo-like 0.0.1 is a demonstration model" in err
    stats = json.loads(next(Path(tmp_path / "out").glob("*-stats.json")).read_text())
    assert any("not for patients" in w for w in stats["warnings"])
    assert stats["model"]["intended_use"] == "demonstration"
    png = np.asarray(PIL.open(next(Path(tmp_path / "out").glob("*-overlay.png"))).convert("RGB"))
    assert (png[5, 5] == NOTICE_RGB).all()
