"""``pedtumorseg serve`` without a browser: what a browser may reach under ``--data`` (path traversal refused), the
host / token rule, the checks before start, and that the command line never imports trame unless ``serve`` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import write_tiny_case
from pedtumorseg.errors import InputError
from pedtumorseg.web import checks, data

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def data_root(tmp_path):
    root = tmp_path / "data"
    write_tiny_case(root / "CASE-1", case_id="CASE-1")
    (root / "group").mkdir()
    write_tiny_case(tmp_path / "outside" / "CASE-9", case_id="CASE-9")
    (root / "link-out").symlink_to(tmp_path / "outside")
    return root


def test_cases_are_named_relative_to_the_data_folder_and_links_out_are_left_out(data_root):
    assert data.list_cases(data_root) == ["CASE-1"]
    assert data.resolve_under(data_root, "CASE-1") == (data_root / "CASE-1").resolve()
    assert data.list_cases(data_root / "group") == []


@pytest.mark.parametrize("bad", ["..", "../outside/CASE-9", "group/../../outside", "/etc", "~", "link-out/CASE-9",
                                 "", "CASE-1\x00", "\\etc"])
def test_paths_outside_the_data_folder_are_refused_without_naming_server_folders(data_root, bad):
    with pytest.raises(InputError) as refused:
        data.resolve_under(data_root, bad)
    assert str(data_root.parent) not in str(refused.value)
    assert "not a case of the data folder" in str(refused.value)


def test_a_missing_case_is_refused(data_root):
    with pytest.raises(InputError, match="no such case"):
        data.resolve_under(data_root, "CASE-2")


def test_only_the_local_address_runs_without_a_token():
    assert checks.host_problem("127.0.0.1", None) is None
    assert checks.host_problem("localhost", None) is None
    assert "access token" in checks.host_problem("0.0.0.0", None)
    assert "16 characters" in checks.host_problem("0.0.0.0", "short")
    assert checks.host_problem("0.0.0.0", "a-long-enough-token-123") is None


def _serve(*args, env=None):
    environment = dict(os.environ, PYTHONPATH=str(REPO / "PedTumorSeg"), **(env or {}))
    environment.pop("PEDTUMORSEG_TOKEN", None)
    return subprocess.run([sys.executable, "-m", "pedtumorseg", "serve", *args], capture_output=True, text=True,
                          env=environment, timeout=120)


def test_serve_refuses_another_host_without_a_token(tmp_path):
    done = _serve("--data", str(tmp_path), "--host", "0.0.0.0")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == ("pedtumorseg: error: --host: --host 0.0.0.0 is reachable from "
                                                    "other machines: give an access token (--token or "
                                                    "PEDTUMORSEG_TOKEN)")


def test_serve_refuses_a_missing_data_folder(tmp_path):
    done = _serve("--data", str(tmp_path / "nope"))
    assert done.returncode == 2 and "the --data folder does not exist" in done.stderr


def test_the_command_line_does_not_import_trame_or_slicer():
    code = ("import sys, pedtumorseg.cli as c; c.build_parser(); "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trame', 'trame_slicer', 'slicer', 'vtk')))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=str(REPO / "PedTumorSeg")), check=True)
    assert done.stdout.strip() == "[]"


def test_missing_packages_name_the_install_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    absent = ("trame", "trame_slicer", "slicer")
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name in absent else real(name))
    assert checks.missing_packages() == ['trame, trame_slicer, slicer are not installed (pip install '
                                         '"pedtumorseg[web]")']


def test_the_module_logic_is_found_beside_the_core_package():
    assert (checks.slicer_lib_path() / "PedTumorSegLib" / "logic.py").is_file()


def test_web_parameters_hold_the_panel_controls_as_attributes():
    from pedtumorseg.web.workflow import WebParameters

    params = WebParameters()
    params.ratio_high = 1.5
    assert params.ratio_high == 1.5 and params.controls == {"ratio_high": 1.5}
    params.t1Volume = "node"
    assert params.t1Volume == "node" and "t1Volume" not in params.controls
    with pytest.raises(AttributeError):
        params.min_volume_et


def _case_files(folder):
    return [{"name": p.name, "content": p.read_bytes()} for p in sorted(Path(folder).iterdir())]


def test_an_upload_goes_into_a_new_folder_and_is_checked_as_a_case(tmp_path):
    from pedtumorseg.web.uploads import save_upload

    files = _case_files(write_tiny_case(tmp_path / "src", case_id="UP-1"))
    first = save_upload(files, tmp_path / "uploads")
    second = save_upload(files, tmp_path / "uploads")  # the same files again: a new folder, nothing overwritten
    assert (first.name, second.name) == ("upload-1", "upload-2")
    assert sorted(p.name for p in first.iterdir()) == sorted(f["name"] for f in files)
    assert data.list_uploads(tmp_path / "uploads") == ["upload-1", "upload-2"]


@pytest.mark.parametrize("change, problem", [
    (lambda fs: fs[:3], "missing"),
    (lambda fs: [dict(fs[0], name="../" + fs[0]["name"])] + fs[1:], "not a NIfTI file name"),
    (lambda fs: [dict(fs[0], name="notes.txt")] + fs[1:], "not a NIfTI file name"),
    (lambda fs: [dict(fs[0], content=fs[0]["content"][:200])] + fs[1:], ""),
    (lambda fs: fs + [fs[0]], "uploaded twice"),
])
def test_a_bad_upload_is_refused_and_leaves_nothing(tmp_path, change, problem):
    from pedtumorseg.web.uploads import save_upload

    files = change(_case_files(write_tiny_case(tmp_path / "src", case_id="UP-1")))
    with pytest.raises(InputError) as refused:
        save_upload(files, tmp_path / "uploads")
    assert problem in str(refused.value)
    assert str(tmp_path) not in str(refused.value)
    assert not (tmp_path / "uploads").exists() or not any((tmp_path / "uploads").iterdir())


def test_an_upload_over_the_limit_is_refused(tmp_path):
    from pedtumorseg.web.uploads import save_upload

    files = _case_files(write_tiny_case(tmp_path / "src", case_id="UP-1"))
    with pytest.raises(InputError, match="over the limit"):
        save_upload(files, tmp_path / "uploads", max_bytes=100)
