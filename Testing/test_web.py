"""``pedtumorseg serve`` without a browser: what a browser may reach under ``--data`` (path traversal refused), the
host / token rule, the checks before start, and that the command line never imports trame unless ``serve`` runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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


# --- DICOM studies: in the data folder, uploaded as one .zip, opened and exported on slicer-core ---------------------

def _tiny_series_images(size=(12, 10, 8)):
    import SimpleITK as sitk

    z, y, x = np.meshgrid(*(np.arange(n) for n in reversed(size)), indexing="ij")
    out = {}
    for i, channel in enumerate(("t1", "t1ce", "t2", "flair")):
        image = sitk.GetImageFromArray((10 * x + y + 3 * z + 100 * (i + 1)).astype(np.int16))
        image.SetSpacing((1.0, 1.0, 2.0))
        out[channel] = image
    return out


@pytest.fixture(scope="module")
def tiny_study(tmp_path_factory):
    """A four-series DICOM study of 12x10x8 voxels, one folder per series."""
    pytest.importorskip("pydicom")
    from conftest import write_dicom_study

    return write_dicom_study(tmp_path_factory.mktemp("study") / "STUDY-A", _tiny_series_images())


def _zip_of(folder, extra=(), leave_out=()):
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file() and not any(part in leave_out for part in path.parts):
                archive.write(path, path.relative_to(folder).as_posix())
        for info, data in extra:
            archive.writestr(info, data)
    return buffer.getvalue()


def test_dicom_studies_in_any_layout_are_listed_and_paths_out_of_them_refused(tiny_study, data_root):
    import shutil

    from conftest import write_dicom_study

    shutil.copytree(tiny_study, data_root / "STUDY-A" / "SUBJECT")  # the series one folder deeper
    write_dicom_study(data_root / "STUDY-FLAT", _tiny_series_images(), flat=True)  # all series in one folder
    shutil.copytree(tiny_study, data_root / "STUDY-NO-T2")
    shutil.rmtree(data_root / "STUDY-NO-T2" / "04_T2_TSE_AX")
    assert data.list_cases(data_root) == ["CASE-1", "STUDY-A", "STUDY-FLAT", "STUDY-NO-T2"]
    assert data.resolve_under(data_root, "STUDY-FLAT") == (data_root / "STUDY-FLAT").resolve()
    for bad in ("STUDY-A/../../outside", "STUDY-A/SUBJECT/../../../outside/CASE-9", "/STUDY-A"):
        with pytest.raises(InputError, match="not a case of the data folder"):
            data.resolve_under(data_root, bad)


def test_a_refusal_names_the_case_as_the_case_list_does(tmp_path):
    from pedtumorseg.inputs.cases import find_any_case

    root = tmp_path / "data"
    (root / "STUDY-B" / "notes").mkdir(parents=True)
    with pytest.raises(InputError) as refused:
        find_any_case(root / "STUDY-B")
    message = data.relative_message(str(refused.value), {root: "", tmp_path / "data" / "up": "upload:"})
    assert message.startswith("STUDY-B: ") and str(tmp_path) not in message
    assert data.relative_message(f"{root}/up/upload-2: bad", {root: "", root / "up": "upload:"}) == \
        "upload:upload-2: bad"


def test_a_dicom_study_uploaded_as_one_zip_is_unpacked_into_a_new_folder(tiny_study, tmp_path):
    from pedtumorseg.inputs.cases import find_any_case
    from pedtumorseg.web.uploads import save_upload

    content = _zip_of(tiny_study.parent, extra=[("__MACOSX/STUDY-A/._IM0001.dcm", b"\0" * 40)])
    folder = save_upload([{"name": "study.zip", "content": content}], tmp_path / "uploads")
    assert folder.name == "upload-1" and not (folder / "__MACOSX").exists()
    assert sorted(p.relative_to(folder) for p in folder.rglob("*.dcm")) == \
        sorted(p.relative_to(tiny_study.parent) for p in tiny_study.rglob("*.dcm"))
    assert find_any_case(folder).images["t1ce"].name == "03_T1_MPRAGE_AX_POST_GAD"
    assert data.list_uploads(tmp_path / "uploads") == ["upload-1"]


def _member(name, mode=0o100644):
    import zipfile

    info = zipfile.ZipInfo(name)
    info.external_attr = mode << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    return info


@pytest.mark.parametrize("extra, problem", [
    ([(_member("../evil.dcm"), b"x")], "leads outside the folder"),
    ([(_member("STUDY-A/../../evil.dcm"), b"x")], "leads outside the folder"),
    ([(_member("/etc/evil.dcm"), b"x")], "absolute path"),
    ([(_member("C:/evil.dcm"), b"x")], "absolute path or a drive"),
    ([(_member("..\\evil.dcm"), b"x")], "leads outside the folder"),
    ([(_member("STUDY-A/link", 0o120777), b"/etc/passwd")], "is a symbolic link"),
    ([(_member("bomb.bin"), b"\0" * (3 << 20))], "unpacks to 3 MiB, over the limit of 2 MiB"),
    ([(_member("STUDY-A/02_T1_MPRAGE_SAG/IM0001.dcm"), b"again")], "appears twice"),
])
def test_a_bad_zip_member_is_refused_before_anything_is_written(tiny_study, tmp_path, extra, problem):
    from pedtumorseg.web.uploads import save_upload

    content = _zip_of(tiny_study.parent, extra=extra)
    with pytest.raises(InputError) as refused:
        save_upload([{"name": "study.zip", "content": content}], tmp_path / "uploads", max_bytes=2 << 20)
    assert str(refused.value).startswith("study.zip: ") and problem in str(refused.value)
    assert str(tmp_path) not in str(refused.value)
    assert not any((tmp_path / "uploads").iterdir())  # nothing left behind
    assert not (tmp_path / "evil.dcm").exists()


@pytest.mark.parametrize("make, problem", [
    (lambda study: _zip_of(study.parent, leave_out=("04_T2_TSE_AX",)), "no T2 series recognised"),
    (lambda study: _notes_zip(), "holds no DICOM series"),
    (lambda study: _zip_of(study.parent)[:-200], "not a readable zip file"),
    (lambda study: b"PK\x03\x04 this is not a zip", "not a readable zip file"),
    (lambda study: _lying_zip(), "not a readable zip file (Bad CRC-32"),
    (lambda study: _zip_of(study.parent, extra=[(_member(f"pad/{i}.txt"), b"x") for i in range(30)]),
     "holds 62 members, more than the 50 allowed"),
])
def test_a_zip_that_is_not_a_dicom_study_is_refused_and_leaves_nothing(tiny_study, tmp_path, make, problem):
    from pedtumorseg.web.uploads import save_upload

    with pytest.raises(InputError) as refused:
        save_upload([{"name": "study.zip", "content": make(tiny_study)}], tmp_path / "uploads", max_members=50)
    assert str(refused.value).startswith("study.zip: ") and problem in str(refused.value)
    assert str(tmp_path) not in str(refused.value)
    assert not any((tmp_path / "uploads").iterdir())


def _lying_zip():
    """A zip whose directory says 10 bytes for a member of 1 MiB (zipfile stops at 10 and finds the CRC wrong)."""
    import io
    import struct
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("big.dcm", b"\0" * (1 << 20))
    data = bytearray(buffer.getvalue())
    struct.pack_into("<I", data, 22, 10)  # the local header's uncompressed size
    struct.pack_into("<I", data, data.rfind(b"PK\x01\x02") + 24, 10)  # the central directory's
    return bytes(data)


def _notes_zip():
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("notes.txt", "no images here")
    return buffer.getvalue()


def test_a_zip_goes_alone(tiny_study, tmp_path):
    from pedtumorseg.web.uploads import save_upload

    files = [{"name": "study.zip", "content": _zip_of(tiny_study.parent)}] + _case_files(
        write_tiny_case(tmp_path / "src", case_id="UP-1"))
    with pytest.raises(InputError, match="study.zip: a DICOM study is uploaded as one .zip file on its own"):
        save_upload(files, tmp_path / "uploads")
    assert not (tmp_path / "uploads").exists()


@pytest.mark.slow
def test_a_dicom_study_opens_applies_and_exports_a_dicom_seg_on_slicer_core(tmp_path):
    """``Testing/web_cases.py`` in a process of its own (the ``slicer`` module is process-wide)."""
    import importlib.util

    for module in ("slicer_core", "highdicom", "torch"):
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{module} is not installed (pip install -e '.[web,raw]')")
    from conftest import run_cases_in_own_process

    run_cases_in_own_process(REPO / "Testing" / "web_cases.py", tmp_path, timeout=600)


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_serve_says_what_rendering_lacks_and_leaves_no_worker(tmp_path, monkeypatch, capsys):
    """The offscreen-rendering check runs while the first session's worker starts: when it fails, serve exits 1
    with the packages to install, and the worker it had started is stopped."""
    import time

    from pedtumorseg import cli
    from web_server import free_port, processes

    problem = "VTK cannot render offscreen (no EGL/OSMesa): install the system packages libegl1 libegl-mesa0"
    seen = []

    def failing(timeout=60.0):
        time.sleep(0.5)
        seen.extend(processes(b"pedtumorseg.web.worker", parent=os.getpid()))  # the worker was started meanwhile
        return problem

    monkeypatch.setattr(checks, "rendering_problem", failing)
    monkeypatch.setenv("PYTHONPATH", str(REPO / "PedTumorSeg"))
    assert cli.main(["serve", "--data", str(tmp_path), "--port", str(free_port())]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"pedtumorseg: error: serve: {problem}"
    assert len(seen) == 1 and processes(b"pedtumorseg.web.worker", parent=os.getpid()) == []


def test_serve_refuses_a_bad_bundle_by_its_name_before_starting(tmp_path):
    bad = tmp_path / "models" / "broken.zip"
    bad.parent.mkdir()
    bad.write_bytes(b"PK\x03\x04 not a bundle")
    (tmp_path / "data").mkdir()
    done = _serve("--data", str(tmp_path / "data"), "--models", str(bad.parent))
    assert done.returncode == 1
    assert "broken.zip" in done.stderr.strip().splitlines()[-1]
    done = _serve("--data", str(tmp_path / "data"), "--models", str(tmp_path / "data"))  # a folder without bundles
    assert done.returncode == 2 and "holds no bundle" in done.stderr
