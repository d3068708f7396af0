"""`pedtumorseg cohort` against a real SLURM (Debian's slurm-wlm and munge; `.ci/run` installs them): one node on
localhost, an array over 6 small phantom cases in 3 tasks, every output checked; then a task cancelled while it
segments a case, `cohort status` showing it, `cohort resubmit --failed` redoing only the unfinished cases, the
finished ones untouched and nothing half-written. Skipped, saying why, when SLURM cannot start here."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import write_tiny_bundle
from pedtumorseg.cohort.status import cohort_states
from pedtumorseg.inputs.cases import find_case
from pedtumorseg.inputs.images import load_case, read_labels
from pedtumorseg.outputs.paths import CaseOutputs
from pedtumorseg.phantoms.clean import write_phantoms
from slurm_cluster import ClusterUnavailable, start_cluster

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # about 3 minutes: two job arrays and a resubmission on a real SLURM


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    try:
        cluster = start_cluster(tmp_path_factory.mktemp("slurm"), cpus=2)
    except ClusterUnavailable as exc:
        pytest.skip(f"SLURM cannot start here: {exc}")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SLURM_CONF", str(cluster.conf))  # squeue asked by cohort_states in this process
        yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    root = tmp_path_factory.mktemp("cohort")
    write_phantoms(root / "cases", 6, size="small", seed=21)
    return root, write_tiny_bundle(root / "tiny.zip")


def _pedtumorseg(cluster, *argv, check=True) -> subprocess.CompletedProcess:
    env = {**cluster.env(), "PYTHONPATH": f"{REPO / 'PedTumorSeg'}", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pedtumorseg", *map(str, argv)], env=env, capture_output=True,
                            text=True, timeout=120)
    if check:
        assert result.returncode == 0, f"pedtumorseg {' '.join(map(str, argv))}: {result.stderr}"
    return result


def _wait_until_idle(cluster, timeout=150) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not cluster.run("squeue", "-h").stdout.strip():
            return
        time.sleep(1)
    raise AssertionError(f"jobs still queued after {timeout} s:\n{cluster.run('squeue').stdout}\n{cluster.logs()}")


def _submit(cluster, manifest, out, bundle, *extra) -> str:
    result = _pedtumorseg(cluster, "cohort", "submit", "--manifest", manifest, "--output-dir", out, "--model", bundle,
                          "--device", "cpu", "--no-tta", "--cases-per-task", 2, "--cpus-per-task", 1, "--mem", "700M",
                          "--time", "10", *extra)
    return result.stdout.split("submitted job ")[1].split(":")[0]


def _check_outputs(out: Path, cases_root: Path) -> None:
    """Every case finished, on its input grid, its stats naming it, no temporary file left anywhere."""
    for folder in sorted(p for p in cases_root.iterdir() if p.is_dir()):
        files = find_case(folder)
        outputs = CaseOutputs.of(files.case_id, out)
        assert outputs.is_finished(), files.case_id
        case = load_case(files)
        labels = read_labels(outputs.seg, case.geometry)
        assert labels.shape == case.images.shape[1:]
        stats = json.loads(outputs.stats.read_text())
        assert stats["case_id"] == files.case_id and stats["model"]["name"] == "tiny-test"
    assert not [p for p in out.rglob("*") if ".tmp" in p.name], "temporary files left behind"


def _identity(out: Path, case_ids) -> dict:
    return {(c, kind): (p.stat().st_ino, p.stat().st_mtime_ns) for c in case_ids
            for kind, p in CaseOutputs.of(c, out).paths().items() if p.exists()}


def test_array_over_six_cases_in_three_tasks(cluster, cohort):
    root, bundle = cohort
    _pedtumorseg(cluster, "cohort", "manifest", "--input-dir", root / "cases", "--out", root / "cohort.csv")
    out = root / "out"
    job = _submit(cluster, root / "cohort.csv", out, bundle)
    _wait_until_idle(cluster)
    _check_outputs(out, root / "cases")
    states = cohort_states(out)
    assert [s.state for s in states] == ["done"] * 6
    assert sorted({s.task for s in states}) == [f"{job}_0", f"{job}_1", f"{job}_2"]  # 2 cases in each of 3 tasks
    logs = sorted((out / "cohort" / "logs").glob("*.log"))
    assert [p.name for p in logs] == [f"{job}_{t}.log" for t in range(3)]
    assert all("on 1 CPU(s)" in p.read_text() for p in logs)  # threads from SLURM_CPUS_PER_TASK
    # submitting again submits nothing: the outputs say every case is done
    again = _pedtumorseg(cluster, "cohort", "submit", "--manifest", root / "cohort.csv", "--output-dir", out,
                         "--model", bundle, "--device", "cpu")
    assert "nothing to submit" in again.stdout


def _wait_for_running(out: Path, case_id: str, timeout=120) -> None:
    path = out / "cohort" / "status" / f"{case_id}.json"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if json.loads(path.read_text()).get("state") == "running":
                return
        except (OSError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"{case_id} never started running")


def test_cancelled_task_resubmitted_without_redoing_finished_cases(cluster, cohort):
    root, bundle = cohort
    manifest = root / "cohort.csv"
    if not manifest.exists():
        _pedtumorseg(cluster, "cohort", "manifest", "--input-dir", root / "cases", "--out", manifest)
    out = root / "out-cancel"
    job = _submit(cluster, manifest, out, bundle, "--max-parallel", 1)  # one task after the other
    ids = json.loads((out / "cohort" / "cohort.json").read_text())["cases"]
    _wait_for_running(out, ids[2])  # task 1's first case is being segmented
    cluster.run("scancel", f"{job}_1")
    _wait_until_idle(cluster)
    states = {s.case_id: s for s in cohort_states(out)}
    assert [states[c].state for c in ids] == ["done", "done", "interrupted", "not-started", "done", "done"], \
        {c: (s.state, s.detail) for c, s in states.items()}
    status = _pedtumorseg(cluster, "cohort", "status", "--output-dir", out).stdout
    assert f"{ids[2]}  interrupted" in status and "4 done, 1 interrupted, 1 not-started" in status
    # the interrupted case left nothing: no output, no temporary file
    assert not [p for p in out.iterdir() if p.name.startswith((ids[2], ids[3], f".{ids[2]}"))]
    assert "interrupted" in (out / "cohort" / "logs" / f"{job}_1.log").read_text()
    finished = _identity(out, [ids[k] for k in (0, 1, 4, 5)])
    again = _pedtumorseg(cluster, "cohort", "resubmit", "--output-dir", out, "--failed")
    assert "2 case(s)" in again.stdout
    _wait_until_idle(cluster)
    _check_outputs(out, root / "cases")
    assert _identity(out, [ids[k] for k in (0, 1, 4, 5)]) == finished  # not redone: same inode, same mtime
    assert [s.state for s in cohort_states(out)] == ["done"] * 6
    record = json.loads((out / "cohort" / "cohort.json").read_text())
    assert record["submissions"][1]["cases"] == [ids[2], ids[3]]
