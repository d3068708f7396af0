"""`pedtumorseg cohort` without a scheduler: the manifest (every problem at once), the job script, one array task
run as a real process (and stopped by SIGTERM), the status decision table and the cohort report. The job array on
a real SLURM is Testing/test_cohort_slurm.py."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import write_tiny_bundle
from pedtumorseg import cli
from pedtumorseg.cohort import slurm
from pedtumorseg.cohort.manifest import manifest_from_folder, read_manifest, write_manifest
from pedtumorseg.cohort.report import cohort_rows
from pedtumorseg.cohort.state import CohortFolder, Resources, RunSettings, settings_dict
from pedtumorseg.cohort.status import case_state, cohort_states
from pedtumorseg.files import write_json
from pedtumorseg.geometry import Geometry
from pedtumorseg.outputs.paths import CaseOutputs
from pedtumorseg.outputs.stats import stats_dict
from pedtumorseg.phantoms.clean import write_phantoms

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def cases(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cases")
    write_phantoms(root, 3, size="small", seed=31)
    return root


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny.zip")


def _run(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


# --- manifest ------------------------------------------------------------------------------------------------

def test_manifest_of_a_folder_reads_back(tmp_path, cases, capsys):
    code, out, err = _run(["cohort", "manifest", "--input-dir", cases, "--out", tmp_path / "m.csv"], capsys)
    assert code == 0, err
    manifest = read_manifest(tmp_path / "m.csv")
    assert manifest.problems == []
    assert [r.case_id for r in manifest.rows] == sorted(p.name for p in cases.iterdir())
    assert manifest.rows[0].images["t1ce"].name.endswith("-t1c.nii.gz")


def test_every_problem_of_a_manifest_is_reported_at_once(tmp_path, cases, capsys):
    rows, _ = manifest_from_folder(cases)
    a, b = rows[0].images, rows[1].images
    lines = [["case_id", "t1", "t1ce", "t2", "flair", "register", "set"],
             ["A", a["t1"], a["t1ce"], a["t2"], a["flair"], "", ""],  # fine
             ["a", b["t1"], b["t1ce"], b["t2"], b["flair"], "", ""],  # id of line 2, other case
             ["C", a["t1"], tmp_path / "gone.nii.gz", "", b["flair"], "maybe", "ratio_high=x"],
             ["D/x", b["t1"], b["t1"], b["t2"], b["flair"], "", ""]]
    with open(tmp_path / "bad.csv", "w", newline="") as fh:
        csv.writer(fh).writerows(lines)
    code, out, err = _run(["cohort", "submit", "--manifest", tmp_path / "bad.csv", "--output-dir", tmp_path / "out",
                           "--dry-run"], capsys)
    assert code == 1 and out == ""
    problems = [line for line in err.splitlines() if "line " in line]
    expected = ["line 3: case id a is used twice (also line 2)", "line 4: missing t2",
                "line 4: register must be one of auto, yes, no", "line 4: set: ratio_high='x': expected a number",
                "line 5: case id 'D/x' cannot be used", "line 5: t1ce and t1 are the same file",
                f"line 4: t1ce: {tmp_path / 'gone.nii.gz'}: file not found",
                "line 4: t1 ", "is also an image of case A (line 2)"]
    for text in expected:
        assert any(text in p for p in problems), (text, problems)
    assert all(p.startswith(f"pedtumorseg: error: {tmp_path / 'bad.csv'}: line ") for p in problems)
    assert err.splitlines()[-1].endswith("problem(s) in the manifest; nothing was submitted")
    assert not (tmp_path / "out").exists()


def test_manifest_paths_relative_to_its_folder_and_a_missing_file_named(tmp_path, cases, capsys):
    case = sorted(cases.iterdir())[0]
    shutil.copytree(case, tmp_path / "data" / case.name)
    names = {ch: f"data/{case.name}/{case.name}-{sfx}.nii.gz" for ch, sfx in
             (("t1", "t1n"), ("t1ce", "t1c"), ("t2", "t2w"), ("flair", "t2f"))}
    (tmp_path / "m.csv").write_text("case_id,t1,t1ce,t2,flair\nX," + ",".join(names.values()) + "\n")
    assert _run(["cohort", "check", "--manifest", tmp_path / "m.csv"], capsys)[0] == 0
    (tmp_path / names["t2"]).unlink()
    code, _, err = _run(["cohort", "check", "--manifest", tmp_path / "m.csv"], capsys)
    assert code == 1 and f"line 2: t2: {tmp_path / names['t2']}: file not found" in err


# --- the job script ------------------------------------------------------------------------------------------

def test_dry_run_prints_the_array_script_and_writes_nothing(tmp_path, cases, capsys):
    rows, _ = manifest_from_folder(cases)
    write_manifest(rows, tmp_path / "m.csv")
    code, script, err = _run(["cohort", "submit", "--manifest", tmp_path / "m.csv", "--output-dir", tmp_path / "out",
                              "--cases-per-task", 2, "--partition", "gpu", "--gpus", 1, "--cpus-per-task", 8,
                              "--time", "1-00:00:00", "--mem", "32G", "--max-parallel", 5, "--account", "lab",
                              "--sbatch-arg=--constraint=a100", "--dry-run"], capsys)
    assert code == 0, err
    for line in ("#SBATCH --array=0-1%5", "#SBATCH --cpus-per-task=8", "#SBATCH --gres=gpu:1",
                 "#SBATCH --partition=gpu", "#SBATCH --time=1-00:00:00", "#SBATCH --mem=32G",
                 "#SBATCH --account=lab", "#SBATCH --constraint=a100", "#SBATCH --requeue",
                 f"#SBATCH --output={tmp_path / 'out' / 'cohort' / 'logs' / '%A_%a.log'}"):
        assert line in script.splitlines(), line
    assert script.splitlines()[-1].startswith("exec ") and "cohort run-task --settings" in script
    assert subprocess.run(["bash", "-n"], input=script, text=True).returncode == 0
    assert "3 case(s) would be submitted" in err and not (tmp_path / "out").exists()


def test_container_script_and_bad_resources(tmp_path):
    res = Resources(cases_per_task=4, gpus=1, container="/images/pedtumorseg.sif", binds=["/data"])
    script = slurm.job_script(res, 9, tmp_path / "s.json", tmp_path)
    assert "#SBATCH --array=0-2" in script  # 9 cases, 4 per task: 3 tasks
    assert f"exec apptainer exec --nv --bind /data /images/pedtumorseg.sif pedtumorseg cohort run-task --settings " \
           f"{tmp_path / 's.json'}" in script
    for bad in (Resources(cases_per_task=0), Resources(time="4 hours"), Resources(mem="lots"),
                Resources(partition="a b")):
        with pytest.raises(Exception, match="--"):
            slurm.check_resources(bad)


# --- one array task, as a real process -----------------------------------------------------------------------

def _submission(tmp_path, cases, bundle, per_task=2) -> Path:
    rows, _ = manifest_from_folder(cases)
    out = tmp_path / "out"
    folder = CohortFolder(out)
    write_manifest(rows, folder.submission_path(1, ".csv"))
    run = RunSettings(model=str(bundle), device="cpu", tta=False)
    path = write_json(settings_dict(out, folder.submission_path(1, ".csv"), run, Resources(cases_per_task=per_task)),
                      folder.submission_path(1, ".json"))
    folder.write_record({"manifest": str(tmp_path / "m.csv"), "cases": [r.case_id for r in rows],
                         "submissions": [{"number": 1, "job_id": "77", "cases": [r.case_id for r in rows],
                                          "cases_per_task": per_task, "settings": str(path)}]})
    return path


def _task(settings, task, cpus="1") -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "PedTumorSeg"), "SLURM_ARRAY_JOB_ID": "77",
           "SLURM_ARRAY_TASK_ID": str(task), "SLURM_CPUS_PER_TASK": cpus, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", "pedtumorseg", "cohort", "run-task", "--settings", str(settings)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_task_runs_its_slice_and_sigterm_ends_a_case_cleanly(tmp_path, cases, tiny_bundle):
    settings = _submission(tmp_path, cases, tiny_bundle)
    out = tmp_path / "out"
    ids = sorted(p.name for p in cases.iterdir())
    proc = _task(settings, 1)  # the third case alone
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert "on 1 CPU(s)" in proc.stdout.read()
    assert [s.state for s in cohort_states(out, live={})] == ["not-started", "not-started", "done"]
    proc = _task(settings, 0)
    status = out / "cohort" / "status" / f"{ids[0]}.json"
    deadline = time.monotonic() + 300  # generous: a loaded CI machine starts python and torch slowly
    while not (status.exists() and json.loads(status.read_text())["state"] == "running"):
        assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 130
    assert "interrupted" in proc.stderr.read()
    states = cohort_states(out, live={})
    assert [s.state for s in states] == ["interrupted", "not-started", "done"]
    assert states[0].task == "77_0" and "SIGTERM" in states[0].detail
    assert not [p for p in out.iterdir() if p.name.startswith((ids[0], f".{ids[0]}"))]  # nothing half-written
    done = CaseOutputs.of(ids[2], out).seg.stat()
    proc = _task(settings, 0)  # the task requeued: the interrupted case again, then the next
    assert proc.wait(timeout=300) == 0, proc.stderr.read()
    assert [s.state for s in cohort_states(out, live={}, verify=True)] == ["done"] * 3
    assert CaseOutputs.of(ids[2], out).seg.stat().st_mtime_ns == done.st_mtime_ns


def test_a_file_gone_after_submission_fails_its_case_only(tmp_path, cases, tiny_bundle):
    from pedtumorseg.cohort.worker import run_task

    data = tmp_path / "cases"
    shutil.copytree(cases, data)
    settings = _submission(tmp_path, data, tiny_bundle)
    ids = sorted(p.name for p in data.iterdir())
    (data / ids[0] / f"{ids[0]}-t2w.nii.gz").unlink()
    assert run_task(settings, 0, log=lambda *a, **k: None) == 1  # its slice is still ids[0], ids[1]
    states = cohort_states(tmp_path / "out", live={})
    assert [s.state for s in states] == ["failed", "done", "not-started"]
    assert f"{ids[0]}-t2w.nii.gz: file not found" in states[0].detail


# --- status --------------------------------------------------------------------------------------------------

def test_status_decision_table(tmp_path):
    folder = CohortFolder(tmp_path)
    os.environ.pop("SLURM_ARRAY_JOB_ID", None)

    def status(case_id, state, job="5", task="0", **info):
        write_json({"case_id": case_id, "state": state, "job_id": job, "task_id": task, **info},
                   folder.status_path(case_id))

    status("r", "running", started="t0")
    status("f", "failed", message="x.nii.gz: file not found")
    status("i", "interrupted", message="interrupted (SIGTERM)")
    status("q", "interrupted")  # in task 5_0; a newer task holding it is queued
    status("d", "done")  # recorded done, outputs gone
    live = {"5_0": "RUNNING", "6_1": "PENDING", "5_2": "REQUEUED"}
    got = {c: case_state(c, folder, task, live).state for c, task in
           [("r", "5_0"), ("f", "5_0"), ("i", "5_3"), ("q", "5_2"), ("d", "5_0"), ("new", "6_1"), ("gone", "5_9"),
            ("never", None)]}
    assert got == {"r": "running", "f": "failed", "i": "interrupted", "q": "pending", "d": "failed",
                   "new": "pending", "gone": "not-started", "never": "not-submitted"}
    status("q", "interrupted", task="2")
    assert case_state("q", folder, "5_2", live).state == "pending"
    assert case_state("r", folder, "5_0", {}).state == "interrupted"  # its job ended while it ran
    assert case_state("gone", folder, "5_9", None).state == "pending"  # no scheduler to ask


def test_engine_threads_capped_by_the_slurm_allocation(monkeypatch):
    from pedtumorseg.inference import engine

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "2")
    assert engine._cpu_threads() == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "16")
    assert engine._cpu_threads() == 4
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert engine._cpu_threads() == 4


# --- report --------------------------------------------------------------------------------------------------

def _labels(counts: dict[int, int]) -> np.ndarray:
    flat = np.concatenate([np.full(n, label, np.uint8) for label, n in counts.items()] + [np.zeros(1000, np.uint8)])
    return np.pad(flat, (0, 2000 - flat.size)).reshape(20, 10, 10)


def _fake_case(out: Path, case_id: str, counts: dict[int, int], seconds: float) -> None:
    from pedtumorseg.outputs.images import write_labels

    geometry = Geometry(size=(10, 10, 20), spacing=(2.0, 1.0, 0.5), origin=(0, 0, 0),
                        direction=(1, 0, 0, 0, 1, 0, 0, 0, 1))  # 1 mm^3 voxels
    labels = _labels(counts)
    outputs = CaseOutputs.of(case_id, out)
    write_labels(labels, geometry, outputs.seg)
    stats = stats_dict(case_id, labels, geometry, model={"name": "m", "version": "1"}, postprocessing={})
    stats["inference"] = {"seconds": seconds, "network_seconds": seconds / 2, "device": "cpu", "backend": "torch"}
    write_json(stats, outputs.stats)


def test_report_csv_values_by_hand_and_a_self_contained_page(tmp_path, capsys):
    out = tmp_path / "out"
    # A: ET 200, NET 100, ED 100 voxels of 1 mm^3: ET 0.2 mL, TC 0.3, WT 0.4; ET/WT 0.5, NET+CC+ED 0.5 of WT
    _fake_case(out, "A", {1: 200, 2: 100, 4: 100}, 12.0)
    _fake_case(out, "B", {3: 50, 4: 150}, 30.0)  # CC 0.05, ED 0.15, WT 0.2 mL; CC 0.25, TC 0.25 of WT
    _fake_case(out, "E", {}, 5.0)  # empty: fractions undefined
    folder = CohortFolder(out)
    folder.write_record({"manifest": "m.csv", "cases": ["A", "B", "E", "F"],
                         "submissions": [{"job_id": "3", "cases": ["A", "B", "E", "F"], "cases_per_task": 4}]})
    write_json({"case_id": "F", "state": "failed", "job_id": "3", "task_id": "0", "message": "F-t1c.nii.gz: bad"},
               folder.status_path("F"))
    code, stdout, err = _run(["cohort", "report", "--output-dir", out], capsys)
    assert code == 0, err
    with open(folder.root / "report.csv", newline="") as fh:
        rows = {r["case_id"]: r for r in csv.DictReader(fh)}
    a, b, e, f = rows["A"], rows["B"], rows["E"], rows["F"]
    assert [float(a[k]) for k in ("ET_ml", "NET_ml", "CC_ml", "ED_ml", "TC_ml", "WT_ml", "NET+CC+ED_ml")] == \
        pytest.approx([0.2, 0.1, 0.0, 0.1, 0.3, 0.4, 0.2])
    assert [float(a[k]) for k in ("ET_fraction", "NET_fraction", "ED_fraction", "TC_fraction",
                                  "NET+CC+ED_fraction")] == pytest.approx([0.5, 0.25, 0.25, 0.75, 0.5])
    assert float(b["CC_fraction"]) == pytest.approx(0.25) and float(b["TC_fraction"]) == pytest.approx(0.25)
    assert e["WT_ml"] == "0.0" and e["ET_fraction"] == "" and float(a["seconds"]) == 12.0
    assert f["state"] == "failed" and f["WT_ml"] == "" and "bad" in f["detail"]
    page = (folder.root / "report.html").read_text()
    assert "data:image/png;base64," in page and "http" not in page.replace("http-equiv", "") and "<script" not in page
    for sid in ("cohort-volumes", "cohort-proportions", "cohort-slowest", "cohort-unfinished"):
        assert f'id="{sid}"' in page
    slowest = page.split('data-section="slowest"')[1]
    assert slowest.index(">B<") < slowest.index(">A<") < slowest.index(">E<")  # 30 s, 12 s, 5 s
    assert "F-t1c.nii.gz: bad" in page and "4 case(s): 3 done, 1 failed" in page


def test_report_with_ground_truth_embeds_the_evaluation(tmp_path, capsys):
    out, gt = tmp_path / "out", tmp_path / "gt"
    gt.mkdir()
    for case_id, counts in (("A", {1: 200, 2: 100, 4: 100}), ("B", {3: 50, 4: 150}), ("C", {1: 30, 4: 300})):
        _fake_case(out, case_id, counts, 1.0)
        shutil.copy(CaseOutputs.of(case_id, out).seg, gt / f"{case_id}-seg.nii.gz")
    code, stdout, err = _run(["cohort", "report", "--output-dir", out, "--gt", gt, "--html", tmp_path / "r.html",
                              "--csv", tmp_path / "r.csv"], capsys)
    assert code == 0, err
    page = (tmp_path / "r.html").read_text()
    assert 'id="cohort-evaluation"' in page and 'data-section="scores"' in page
    assert (tmp_path / "r-evaluation.csv").exists() and "evaluated 3 case(s)" in stdout
    assert len(cohort_rows(out)) == 3
    rows = list(csv.DictReader(open(tmp_path / "r-evaluation.csv")))
    assert {float(r["lesion_dice"]) for r in rows if r["region"] == "WT"} == {1.0}  # the prediction is the truth
