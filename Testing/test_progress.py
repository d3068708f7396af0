"""The one progress vocabulary: what `predict --progress json` writes is what the panel's runner reads and shows."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from pedtumorseg import progress
from pedtumorseg.ui.background import BackgroundPrediction, build_predict_command, child_environment

REPO = Path(__file__).resolve().parents[1]


def test_every_event_round_trips_through_one_line():
    for event in (progress.Progress(0.25, "fold 0: batch 1/8"),
                  progress.Done("C", {"seg": "/o/C-seg.nii.gz"}, "torch", "cpu", 3.5, 2.0, ("a warning",)),
                  progress.Failed("t1.nii.gz: truncated"), progress.Failed("cancelled", cancelled=True)):
        line = progress.to_line(event)
        assert "\n" not in line
        assert progress.parse_line(line) == event


def test_status_text():
    done = progress.Done("C", {}, "openvino", "cpu", 12.34, 10.0)
    assert progress.status_text(done) == "Done (openvino on cpu, 12.3 s)."
    assert progress.status_text(progress.Done("C", {}, device="cuda:0")) == "Done (cuda:0)."
    assert progress.status_text(None) == "Done."


def test_scaled_progress_covers_its_part():
    seen = []
    report = progress.scaled(lambda f, m: seen.append((round(f, 6), m)), 0.1, 0.92)
    report(0.0, "a")
    report(1.0, "b")
    assert seen == [(0.1, "a"), (0.92, "b")]


@pytest.mark.slow
def test_the_real_cli_json_output_read_by_the_panel_runner_shows_the_run_time(tmp_path, small_phantom_dir):
    """The CLI's own `--progress json` lines, read by the runner the Slicer module uses, give the status line the
    module shows, with the run time the stats file records."""
    case_id = small_phantom_dir.name
    inputs = {ch: str(small_phantom_dir / f"{case_id}-{suffix}.nii.gz")
              for ch, suffix in (("t1", "t1n"), ("t1ce", "t1c"), ("t2", "t2w"), ("flair", "t2f"))}
    command = build_predict_command(sys.executable, inputs, tmp_path / "out", device="cpu", tta=False,
                                    case_id=case_id, raw=False, raw_only=True, extra=["--backend", "torch"])
    run = BackgroundPrediction(command, tmp_path / "work", env=child_environment([REPO / "PedTumorSeg"]))
    run.start()
    try:
        events = run.wait(timeout=600)
    finally:
        run.cleanup()
    assert run.returncode == 0, run.failure_message()
    fractions = [e.fraction for e in events if isinstance(e, progress.Progress)]
    assert fractions and fractions == sorted(fractions) and fractions[-1] == 1.0
    done = run.result
    assert isinstance(done, progress.Done) and done.case_id == case_id
    assert done.backend == "torch" and done.device == "cpu"
    assert done.seconds is not None and done.seconds >= done.network_seconds > 0
    import json

    stats = json.loads(Path(done.outputs["stats"]).read_text())
    assert stats["inference"]["seconds"] == done.seconds
    assert progress.status_text(done) == f"Done (torch on cpu, {done.seconds:.1f} s)."
