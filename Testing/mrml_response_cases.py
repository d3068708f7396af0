"""The module's response section on a real MRML scene (slicer-core); run by ``test_response_slicer.py`` in a
process of its own (importing ``slicer`` loads Slicer's C++ libraries)."""

from __future__ import annotations

import itertools

import pytest

slicer = pytest.importorskip("slicer")

from slicer_harness import SlicerScene  # noqa: E402

from pedtumorseg.phantoms.series import make_series, write_series  # noqa: E402
from PedTumorSegLib.response_logic import ResponseLogic  # noqa: E402


def test_calipers_are_line_nodes_and_moving_one_updates_the_table(tmp_path):
    harness = SlicerScene()
    folders = write_series(make_series(scales=(1.0, 0.6), new_lesion_at=None), tmp_path / "series")
    pairs = []
    for f in folders:
        labels = harness.volumes.AddArchetypeVolume(str(f / f"{f.name}-seg.nii.gz"), f.name + "-seg", 1)
        image = harness.loadVolume(f / f"{f.name}-t1c.nii.gz")
        pairs.append((f.name.split("-")[-1], labels, image))
    counter = itertools.count()

    def temp():
        path = tmp_path / f"tmp{next(counter)}"
        path.mkdir()
        return path

    logic = ResponseLogic(harness.scene, temp)
    result = logic.assess(pairs, "rapno-lgg")
    assert result["timepoints"][1]["category_2d"]["category"] == "PR"
    lines = {v: harness.scene.GetNodeByID(k) for k, v in logic.lines.items()}
    assert set(lines) == {("tp0", 1, "LD"), ("tp0", 1, "PD"), ("tp1", 1, "LD"), ("tp1", 1, "PD")}
    tp1_ld = next(r for r in result["lesions"] if r["timepoint"] == "tp1" and r["kind"] == "T2FLAIR")["longest_mm"]
    assert logic._length(lines[("tp1", 1, "LD")]) == pytest.approx(tp1_ld, abs=1e-3)  # RAS from LPS, same length
    assert logic.table.GetCellText(1, 2) == "PR"
    # the reader drags the tp1 LD line's end outwards: the lesion now measures as large as at baseline -> SD
    base = next(r for r in result["lesions"] if r["timepoint"] == "tp0" and r["kind"] == "T2FLAIR")
    node = lines[("tp1", 1, "LD")]
    a, b = [0.0] * 3, [0.0] * 3
    node.GetNthControlPointPosition(0, a)
    node.GetNthControlPointPosition(1, b)
    scale = base["product_mm2"] / (tp1_ld * logic._length(lines[("tp1", 1, "PD")]))
    node.SetNthControlPointPosition(1, *[p + (q - p) * scale for p, q in zip(a, b)])
    logic.lineMoved(node.GetID())
    assert logic.table.GetCellText(1, 2) == "SD"
    assert next(r for r in result["lesions"] if r["timepoint"] == "tp1" and r["kind"] == "T2FLAIR")["edited"]
