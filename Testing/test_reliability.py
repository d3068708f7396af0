"""Failure paths, each written from a failure a user met: files cut short, broken headers, absurd intensities,
unusable output locations, writes that fail part-way, resumed batches, inputs that would be overwritten, case ids
that escape the output folder, tampered bundle caches, and the exit status / one-line message of every CLI."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import write_tiny_bundle, write_tiny_case
from pedtumorseg import cli
from pedtumorseg.outputs import images as output_images
from pedtumorseg.errors import BundleError, InputError, UsageError, run_command
from pedtumorseg.inputs.cases import case_from_files, find_case
from pedtumorseg.geometry import Geometry
from pedtumorseg.inputs.images import load_case, read_image, read_labels
from pedtumorseg.outputs.images import write_labels
from pedtumorseg.phantoms.clean import write_phantoms
from pedtumorseg.outputs.paths import CaseOutputs
from pedtumorseg.pipeline import Predictor, predict_case, run_batch


@pytest.fixture(scope="module")
def tiny_bundle(tmp_path_factory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("bundle") / "tiny.zip", name="tiny-test")


@pytest.fixture(scope="module")
def phantom_case(tmp_path_factory) -> Path:
    """One small phantom case folder (with its ground truth); tests copy it before changing anything."""
    return write_phantoms(tmp_path_factory.mktemp("phantom"), 1, size="small", seed=21)[0]


@pytest.fixture(scope="module")
def small_case(tmp_path_factory) -> Path:
    """A case of one 32^3 tile of the tiny bundle (2.5 mm): predictions on it take a fraction of a second."""
    return write_tiny_case(tmp_path_factory.mktemp("small") / "BraTS-PED-T0000-000", case_id="BraTS-PED-T0000-000",
                           size=(36, 34, 32), spacing=(2.5, 2.5, 2.5))


@pytest.fixture(scope="module")
def predictor(tiny_bundle):
    return Predictor.load(tiny_bundle, device="cpu", tta=False)


def _copy_case(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).write_bytes(p.read_bytes())
    return dst


def _cli(argv, capsys):
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def _one_error_line(err: str, prog: str = "pedtumorseg") -> str:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), err
    return lines[0]


def _no_model(monkeypatch):
    """Make loading a model fail loudly: a refusal that must come before the model loads cannot reach it."""
    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the refusal")
    monkeypatch.setattr(Predictor, "load", staticmethod(fail))


def _tiny_image(path: Path, array: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> Path:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), str(path).endswith(".gz"))
    return path


def _ramp(shape=(20, 24, 28), dtype=np.int16) -> np.ndarray:
    z, y, x = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    return (10 * x + 3 * y + z + 50).astype(dtype)


# --- files cut short ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_truncated_nii_gz_is_refused_not_zero_filled(tmp_path, dtype):
    path = _tiny_image(tmp_path / "a.nii.gz", _ramp(dtype=dtype))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])
    # ITK itself reads an int16 file cut short without complaint (the missing voxels become zeros)
    with pytest.raises(InputError, match=r"a\.nii\.gz: the compressed file is truncated"):
        read_image(path)


def test_truncated_nii_is_refused_with_the_byte_counts(tmp_path):
    path = _tiny_image(tmp_path / "a.nii", _ramp())
    path.write_bytes(path.read_bytes()[:-100])
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(path))).size == 20 * 24 * 28  # what ITK alone does
    with pytest.raises(InputError, match=r"a\.nii: the file is truncated: .* 26780 bytes .* promises 26880"):
        read_image(path)


def test_corrupt_gzip_stream_is_refused(tmp_path):
    path = _tiny_image(tmp_path / "a.nii.gz", _ramp())
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"a\.nii\.gz: corrupt file"):
        read_image(path)


def test_truncated_case_fails_predict_with_one_line_and_no_output(tmp_path, phantom_case, tiny_bundle, capsys):
    case = _copy_case(phantom_case, tmp_path / "case")
    t1c = next(case.glob("*-t1c.nii.gz"))
    t1c.write_bytes(t1c.read_bytes()[:50000])
    code, _, err = _cli(["predict", "--case", case, "--out", tmp_path / "out", "--model", tiny_bundle,
                         "--device", "cpu", "--no-tta", "--progress", "none"], capsys)
    assert code == 1 and t1c.name in _one_error_line(err) and "truncated" in err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_convert_rejects_a_truncated_case_and_leaves_no_dataset(tmp_path, phantom_case, monkeypatch, capsys):
    from pedtumorseg_train.cli import main as train_main

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / "env" / var))  # main() sets them; monkeypatch restores them
    killed = tmp_path / "w" / "nnUNet_raw" / ".Dataset977_PedTumorSeg.tmp-k9x2ab"  # a SIGKILLed conversion's
    (killed / "imagesTr").mkdir(parents=True)
    case = _copy_case(phantom_case, tmp_path / "brats" / phantom_case.name)
    flair = next(case.glob("*-t2f.nii.gz"))
    flair.write_bytes(flair.read_bytes()[:40000])
    code = train_main(["convert", "--brats", str(tmp_path / "brats"), "--dataset-id", "977",
                       "--work-dir", str(tmp_path / "w")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"rejected {case.name}: {flair}: the compressed file is truncated" in err
    assert err.strip().splitlines()[-1].startswith("pedtumorseg-train: error: ")
    raw = tmp_path / "w" / "nnUNet_raw"
    assert list(raw.iterdir()) == []  # no empty (or hidden staging) dataset folder


# --- header sanity -------------------------------------------------------------------------------------------

def test_zero_pixdim_is_refused_although_itk_reads_it_as_1mm(tmp_path):
    path = _tiny_image(tmp_path / "a.nii", _ramp(), spacing=(2.0, 2.0, 2.0))
    data = bytearray(path.read_bytes())
    data[80:92] = struct.pack("<3f", 0.0, 0.0, 0.0)  # pixdim[1..3]; the qform stays
    path.write_bytes(bytes(data))
    assert sitk.ReadImage(str(path)).GetSpacing() == (1.0, 1.0, 1.0)  # ITK's silent default
    with pytest.raises(InputError, match=r"a\.nii: image has voxel spacing 0 along x .*pixdim"):
        read_image(path)


def test_implausible_spacing_is_refused(tmp_path):
    folder = write_tiny_case(tmp_path / "c", size=(12, 10, 8), geometries={"t2w": ((12, 10, 8), (1.0, 1.0, 500.0),
                                                                                   (0.0, 0.0, 0.0))})
    with pytest.raises(InputError, match=r"t2w\.nii\.gz: T2 has voxel spacing .*500"):
        load_case(find_case(folder))


def test_same_file_or_same_content_for_two_modalities_is_refused(tmp_path):
    folder = write_tiny_case(tmp_path / "c")
    t1c = folder / "CASE-1-t1c.nii.gz"
    with pytest.raises(InputError, match=r"the same file is given as T1 and T1CE"):
        load_case(case_from_files(t1c, t1c, t1c, t1c))
    copy = folder / "copy-of-t1c.nii.gz"
    copy.write_bytes(t1c.read_bytes())
    with pytest.raises(InputError, match=r"copy-of-t1c\.nii\.gz: T2 has exactly the same voxels as the T1CE"):
        load_case(case_from_files(folder / "CASE-1-t1n.nii.gz", t1c, copy, folder / "CASE-1-t2f.nii.gz"))


@pytest.mark.parametrize("scale, dtype, problem", [
    (1e30, np.float32, r"intensities up to .*e\+3\d; an MR image above"),
    (1e-12, np.float32, r"an intensity range of only .*e-\d\d"),
])
def test_absurd_intensity_scale_is_refused(tmp_path, scale, dtype, problem):
    arrays = {"t2w": (_ramp((8, 10, 12)).astype(np.float64) * scale).astype(dtype)}
    folder = write_tiny_case(tmp_path / "c", arrays=arrays)
    with pytest.raises(InputError, match=r"t2w\.nii\.gz: T2 has " + problem):
        load_case(find_case(folder))


def test_float64_beyond_float32_is_bad_input_not_a_network_failure(tmp_path):
    array = _ramp((8, 10, 12)).astype(np.float64)
    array[0, 0, 0] = 1e300
    folder = write_tiny_case(tmp_path / "c", arrays={"t1n": array})
    with pytest.raises(InputError, match=r"t1n\.nii\.gz: T1 has intensities up to 1e\+300 \(beyond the float32"):
        load_case(find_case(folder))


def test_unusual_intensity_scale_is_warned_and_recorded_in_the_stats(tmp_path, predictor):
    z, y, x = np.meshgrid(np.arange(32), np.arange(34), np.arange(36), indexing="ij")
    t2 = ((10.0 * x + y + z + 300.0) * 1e4).astype(np.float32)  # up to about 7e6
    case = write_tiny_case(tmp_path / "case", size=(36, 34, 32), spacing=(2.5, 2.5, 2.5), arrays={"t2w": t2})
    with pytest.warns(UserWarning, match="unusual intensity scale"):
        result = predict_case(find_case(case), tmp_path / "out", predictor)
    stats = json.loads(result.outputs["stats"].read_text())
    assert any("CASE-1-t2w.nii.gz: T2 has an unusual intensity scale" in w for w in stats["warnings"])


# --- output locations, checked before the inference -----------------------------------------------------------

def test_unusable_output_folder_refused_before_the_model_loads(tmp_path, phantom_case, monkeypatch, capsys):
    _no_model(monkeypatch)
    afile = tmp_path / "afile"
    afile.write_text("x")
    base = ["--model", "unused.zip", "--progress", "none"]
    for out, problem in ((afile, "output folder is an existing file"),
                         (afile / "sub", "cannot create the output folder: .*afile is a file")):
        code, _, err = _cli(["predict", "--case", phantom_case, "--out", out, *base], capsys)
        assert code == 1 and str(out) in _one_error_line(err)
        assert re.search(problem, err), err
        code, _, err = _cli(["predict", "--input-dir", phantom_case.parent, "--output-dir", out, *base], capsys)
        assert code == 1 and str(out) in _one_error_line(err)
    code, _, err = _cli(["phantoms", "--out", afile / "x", "--n", 1, "--size", "small"], capsys)
    assert code == 1 and "afile is a file" in _one_error_line(err)
    code, _, err = _cli(["demo", "--out", afile / "x", "--size", "small"], capsys)
    assert code == 1 and "afile is a file" in _one_error_line(err)
    code, _, err = _cli(["evaluate", "--pred", tmp_path, "--gt", tmp_path, "--out", tmp_path], capsys)
    assert code == 1 and "output file is an existing folder" in _one_error_line(err)


def test_full_disk_refused_before_the_inference(tmp_path, phantom_case, monkeypatch, capsys):
    _no_model(monkeypatch)

    def no_space(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    code, _, err = _cli(["predict", "--case", phantom_case, "--out", tmp_path / "out", "--model", "unused.zip"],
                        capsys)
    assert code == 1 and "cannot write the output here" in _one_error_line(err) and "No space left" in err
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == []


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_refused(tmp_path, phantom_case, monkeypatch, capsys):
    _no_model(monkeypatch)
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        code, _, err = _cli(["predict", "--case", phantom_case, "--out", ro / "x", "--model", "unused.zip"], capsys)
    finally:
        ro.chmod(0o755)
    assert code == 1 and "Permission denied" in _one_error_line(err)


# --- writes verified, resume re-checks, stale temporaries ------------------------------------------------------

def test_write_cut_short_is_detected_and_leaves_nothing(tmp_path, monkeypatch):
    g = Geometry((16, 12, 10), (1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    labels = (np.arange(np.prod(g.shape_zyx)).reshape(g.shape_zyx) % 5).astype(np.uint8)
    real_write = sitk.WriteImage

    def silently_truncated(image, path, *args):  # what ITK does on a full disk: no error, a short file
        real_write(image, path, *args)
        data = Path(path).read_bytes()
        Path(path).write_bytes(data[: len(data) // 2])

    monkeypatch.setattr(output_images.sitk, "WriteImage", silently_truncated)
    with pytest.raises(OSError, match=r"/x-seg\.nii\.gz: the written file is incomplete \(the compressed file is"):
        write_labels(labels, g, tmp_path / "x-seg.nii.gz")
    assert list(tmp_path.iterdir()) == []


def test_resumed_batch_reruns_a_case_whose_output_was_cut_short(tmp_path, small_case, predictor):
    inp = tmp_path / "in"
    _copy_case(small_case, inp / small_case.name)
    out = tmp_path / "out"
    case_id = small_case.name
    assert run_batch(inp, out, predictor).done == [case_id]
    seg = CaseOutputs.of(case_id, out).seg
    good = read_labels(seg)
    seg.write_bytes(seg.read_bytes()[:-20])  # the stats file says finished; the label map is not whole
    stale = out / f".{case_id}-seg.k9x_ab12.tmp.nii.gz"  # left by a SIGKILL during a write
    stale.write_bytes(b"partial")
    summary = run_batch(inp, out, predictor)
    assert summary.done == [case_id] and summary.skipped == []
    assert np.array_equal(read_labels(seg), good) and not stale.exists()
    assert run_batch(inp, out, predictor).skipped == [case_id]


def test_sigterm_removes_the_temporary_file_and_exits_130(tmp_path):
    # in a process of its own, as a Slicer cancel sends it (a SIGTERM into the test process itself would also hit
    # the native worker threads that earlier tests left, e.g. OpenVINO's)
    target = tmp_path / "x-seg.nii.gz"
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from pedtumorseg import files\n"
        "from pedtumorseg.errors import run_command\n"
        "def killed_while_writing(args):\n"
        "    with files.atomic_output(Path(sys.argv[1])) as tmp:\n"
        "        tmp.write_bytes(b'half')\n"
        "        os.kill(os.getpid(), signal.SIGTERM)\n"
        "        raise AssertionError('not reached')\n"
        "sys.exit(run_command('pedtumorseg', killed_while_writing, None))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 130, done.stderr
    assert "pedtumorseg: error: interrupted" in done.stderr
    assert list(tmp_path.iterdir()) == []


# --- inputs never overwritten, ids confined ------------------------------------------------------------------

def test_output_folder_equal_to_the_case_folder_is_refused(tmp_path, phantom_case, monkeypatch, capsys):
    _no_model(monkeypatch)
    case = _copy_case(phantom_case, tmp_path / "case")
    gt = next(case.glob("*-seg.nii.gz"))
    before = gt.read_bytes()
    code, _, err = _cli(["predict", "--case", case, "--out", case, "--model", "unused.zip"], capsys)
    assert code == 1 and "output folder is the folder of the input files" in _one_error_line(err)
    code, _, err = _cli(["predict", "--input-dir", tmp_path, "--output-dir", case, "--model", "unused.zip"], capsys)
    assert code == 1 and "output folder is the folder of the input files" in _one_error_line(err)
    assert gt.read_bytes() == before and sorted(p.name for p in case.iterdir()) == sorted(
        p.name for p in phantom_case.iterdir())


@pytest.mark.parametrize("case_id", ["../x", "a/b", ".hidden", "", "..", "c:d", "x\n"])
def test_case_id_that_leaves_the_output_folder_is_refused(tmp_path, phantom_case, monkeypatch, capsys, case_id):
    _no_model(monkeypatch)
    files = find_case(phantom_case)
    args = ["predict", *[a for ch, opt in zip(("t1", "t1ce", "t2", "flair"), ("--t1", "--t1ce", "--t2", "--flair"))
                         for a in (opt, files.images[ch])], "--case-id", case_id, "--out", tmp_path / "out" / "sub",
            "--model", "unused.zip"]
    code, _, err = _cli(args, capsys)
    assert code == 1 and f"case id {case_id!r} cannot be used as a file name" in _one_error_line(err)
    assert not (tmp_path / "out").exists()
    with pytest.raises(InputError):
        CaseOutputs.of(case_id, tmp_path)


def test_duplicate_case_ids_in_a_batch_are_refused_up_front(tmp_path, phantom_case, monkeypatch, capsys):
    _no_model(monkeypatch)
    _copy_case(phantom_case, tmp_path / "in" / "a")
    _copy_case(phantom_case, tmp_path / "in" / "b")
    code, _, err = _cli(["predict", "--input-dir", tmp_path / "in", "--output-dir", tmp_path / "out",
                         "--model", "unused.zip"], capsys)
    assert code == 1 and f"case id {phantom_case.name} appears in two case folders" in _one_error_line(err)
    assert not (tmp_path / "out").exists()


# --- bundles -----------------------------------------------------------------------------------------------

def test_cached_extraction_replaced_wholesale_is_not_trusted(tmp_path, monkeypatch):
    import shutil

    from pedtumorseg.inference.bundle import load_bundle

    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path / "cache"))
    mine = write_tiny_bundle(tmp_path / "mine.zip", name="mine", seed=1)
    other = write_tiny_bundle(tmp_path / "other.zip", name="other", seed=2)
    cached = load_bundle(mine).root
    other_root = load_bundle(other).root
    for name in ("manifest.json", "fold_0.safetensors"):  # a consistent pair: checksums match each other
        shutil.copyfile(other_root / name, cached / name)
    bundle = load_bundle(mine)
    assert bundle.name == "mine"
    theirs = load_bundle(other).state_dict(0)
    assert any(not np.array_equal(v.numpy(), theirs[k].numpy()) for k, v in bundle.state_dict(0).items())


def test_manifest_kwargs_that_do_not_fit_the_weights_give_one_line(tmp_path, phantom_case, capsys):
    import zipfile

    good = write_tiny_bundle(tmp_path / "good.zip")
    with zipfile.ZipFile(good) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        members = {n: zf.read(n) for n in zf.namelist()}
    manifest["network"]["kwargs"]["decoder_widths"] = [8, 16, 16]
    members["manifest.json"] = json.dumps(manifest).encode()
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    code, _, err = _cli(["predict", "--case", phantom_case, "--out", tmp_path / "out", "--model", bad,
                         "--device", "cpu", "--no-tta"], capsys)
    line = _one_error_line(err)
    assert code == 1 and "fold_0.safetensors: weights do not fit the network described in manifest.json" in line
    assert "size mismatch" in line and not (tmp_path / "out").exists()
    # the file named is the bundle the user gave, not its extraction in the cache (a hash path never seen)
    assert line.startswith(f"pedtumorseg: error: {bad}: fold_0.safetensors: ")
    assert str(tmp_path / "cache") not in line


# --- command-line mistakes and exit statuses -------------------------------------------------------------------

def test_batch_command_line_mistakes(tmp_path, phantom_case, monkeypatch, capsys):
    _no_model(monkeypatch)
    (tmp_path / "empty").mkdir()
    code, _, err = _cli(["predict", "--input-dir", tmp_path / "empty", "--output-dir", tmp_path / "o"], capsys)
    assert code == 1 and "no case folders found" in _one_error_line(err)
    code, _, err = _cli(["predict", "--input-dir", phantom_case.parent, "--output-dir", tmp_path / "o",
                         "--num-parts", 0], capsys)
    assert code == 2 and "--num-parts must be at least 1" in _one_error_line(err)
    files = find_case(phantom_case)
    code, _, err = _cli(["predict", "--t1", phantom_case, "--t1ce", files.images["t1ce"], "--t2", files.images["t2"],
                         "--flair", files.images["flair"], "--out", tmp_path / "o"], capsys)
    assert code == 1 and "T1 input is a directory, expected an image file" in _one_error_line(err)
    assert not (tmp_path / "o").exists()


def test_every_cli_maps_failures_to_the_same_statuses(monkeypatch, capsys):
    import pedtumorseg_train.cli as train_cli

    def interrupted(args):
        raise KeyboardInterrupt

    def bug(args):
        raise KeyError("boom")

    def disk(args):
        raise OSError(28, "No space left on device", "/data/out/x-seg.nii.gz")

    for func, code, line in ((interrupted, 130, "interrupted"),
                             (bug, 1, "internal error KeyError: 'boom'"),
                             (disk, 1, "/data/out/x-seg.nii.gz: No space left on device"),
                             (lambda a: (_ for _ in ()).throw(InputError("f.nii", "bad")), 1, "f.nii: bad"),
                             (lambda a: (_ for _ in ()).throw(BundleError("b.zip", "bad")), 1, "b.zip: bad"),
                             (lambda a: (_ for _ in ()).throw(UsageError(None, "--x must be 1")), 2, "--x must be 1"),
                             # a library's ValueError is about the data, not the command line (highdicom's on a
                             # series without a FrameOfReferenceUID was reported as a usage error, status 2)
                             (lambda a: (_ for _ in ()).throw(ValueError("Source images have no Frame Of Reference "
                                                                         "UID")), 1, "Source images have no Frame")):
        for prog in (cli.PROG, train_cli.PROG):
            assert run_command(prog, func, None) == code
            assert _one_error_line(capsys.readouterr().err, prog).startswith(f"{prog}: error: {line}")
    monkeypatch.setattr(cli, "cmd_phantoms", interrupted)  # the real entry point goes through run_command
    assert cli.main(["phantoms", "--out", "x"]) == 130
    with pytest.raises(SystemExit) as exc:
        train_cli.main(["convert"])  # --brats missing: argparse's usage error
    assert exc.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith("pedtumorseg-train convert: error: ")


@pytest.mark.skipif(not hasattr(signal, "SIGXFSZ"), reason="POSIX file-size limits")
def test_a_file_size_limit_mid_write_leaves_nothing_and_says_the_usual_line(tmp_path, phantom_case):
    """``ulimit -f``: the kernel refuses a write part-way (and by default kills the process with SIGXFSZ, which
    left a zero-byte label map behind and no error line). Now: exit 1, the standard one line, no file of the case."""
    import resource

    bundle = write_tiny_bundle(tmp_path / "tiny.zip")  # random weights: a label map too noisy to compress small
    limit = 32 * 1024  # above the output folder's write probe and the stats file, below the label map

    def limited():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "pedtumorseg", "predict", "--case", str(phantom_case), "--out",
                           str(out), "--model", str(bundle), "--device", "cpu", "--no-tta", "--backend", "torch",
                           "--progress", "none"], capture_output=True, text=True, timeout=300, preexec_fn=limited)
    assert proc.returncode == 1, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert line.startswith(f"pedtumorseg: error: {out / (phantom_case.name + '-seg.nii.gz')}: "), line
    assert "file-size limit" in line
    assert not out.exists() or list(out.iterdir()) == []


def test_messages_name_what_the_user_gave(tmp_path, phantom_case, capsys):
    """A newcomer's run: a missing path is "folder not found" (not "not a folder"), a file is "is a file", a folder
    of cases given to --case suggests --input-dir, and a look-alike file beside the case is named with the files
    actually used (which the stats list with their full paths)."""
    missing = tmp_path / "nope"
    code, _, err = _cli(["predict", "--case", missing, "--out", tmp_path / "o"], capsys)
    assert code == 1 and _one_error_line(err) == f"pedtumorseg: error: {missing}: folder not found"
    a_file = tmp_path / "a.txt"
    a_file.write_text("x")
    with pytest.raises(InputError, match="is a file, not a folder"):
        find_case(a_file)
    batch = tmp_path / "cohort"
    shutil.copytree(phantom_case, batch / phantom_case.name)
    code, _, err = _cli(["predict", "--case", batch, "--out", tmp_path / "o"], capsys)
    line = _one_error_line(err)
    assert code == 1 and f"holds 1 case folder(s) ({phantom_case.name})" in line and "use --input-dir" in line
    case = tmp_path / "case"
    shutil.copytree(phantom_case, case)
    t1c = next(case.glob("*-t1c.nii.gz"))
    shutil.copy(t1c, case / (t1c.name.replace("-t1c.nii.gz", "-t1c (1).nii.gz")))
    files = find_case(case)
    assert files.images["t1ce"] == t1c and [p.name for p in files.ignored] == [t1c.name.replace("-t1c", "-t1c (1)")]
    code, _, err = _cli(["predict", "--case", case, "--out", tmp_path / "out", "--model", write_tiny_bundle(
        tmp_path / "b.zip"), "--device", "cpu", "--no-tta", "--backend", "torch", "--progress", "none"], capsys)
    assert code == 0 and "-t1c (1).nii.gz, which look like images of this case but were not used" in err
    stats = json.loads(next((tmp_path / "out").glob("*-stats.json")).read_text())
    assert stats["input"]["files"]["t1ce"] == str(t1c.resolve())


def test_the_training_cli_without_the_train_extra_says_how_to_install_it(tmp_path):
    script = ("import sys; sys.modules['nnunetv2'] = None\n"  # as in an install without nnU-Net
              "from pedtumorseg_train.cli import main\n"
              f"sys.exit(main(['plan', '--work-dir', {str(tmp_path)!r}, '--dataset-id', '1']))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1 and "internal error" not in line, proc.stderr
    assert line.startswith("pedtumorseg-train: error: ") and "pip install 'pedtumorseg[train]'" in line
