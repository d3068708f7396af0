"""Bundle writer/loader: round trips (zip and folder), every refusal with its message, zip-slip, cache reuse."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from pedtumorseg.inference import bundle as bmod
from pedtumorseg.inference.bundle import default_bundle_path, load_bundle, sha256_file, write_bundle
from pedtumorseg.conventions import CHANNELS, LABEL_NAMES
from pedtumorseg.errors import BundleError
from pedtumorseg.model.presets import NETWORK_CLASS, network_kwargs

TINY_KWARGS = {**network_kwargs("demo"), "decoder_widths": [4, 8, 8], "strides": [1, 2, 2],
               "blocks_per_stage": [1, 1, 1]}


def make_manifest(**over) -> dict:
    m = {
        "format": "pedtumorseg-bundle", "format_version": 1,
        "name": "test-bundle", "version": "0.1", "description": "unit test",
        "labels": {str(k): v for k, v in LABEL_NAMES.items()},
        "channels": list(CHANNELS),
        "spacing_zyx": [2.0, 2.0, 2.0],
        "patch_size": [16, 16, 16],
        "normalization": {"scheme": "zscore", "use_mask_for_norm": [True] * 4},
        "network": {"class": NETWORK_CLASS, "kwargs": TINY_KWARGS},
        "mirror_axes": [0, 1, 2],
        "postprocessing": {},
    }
    m.update(over)
    return m


def fold_states(folds=(0, 1)):
    out = {}
    for f in folds:
        torch.manual_seed(f)
        net = bmod.Bundle(Path("."), Path("."), make_manifest(folds=[0], weights={})).build_network()
        out[f] = {k: v.clone() for k, v in net.state_dict().items()}
    return out


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path / "cache"))


@pytest.mark.parametrize("as_zip", [True, False])
def test_round_trip(tmp_path, as_zip):
    states = fold_states()
    out = tmp_path / ("b.zip" if as_zip else "b")
    assert write_bundle(out, make_manifest(), states, zip=as_zip) == out
    assert out.is_file() if as_zip else out.is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no leftovers
    b = load_bundle(out)
    assert b.name == "test-bundle" and b.version == "0.1"
    assert b.folds == [0, 1]
    assert b.spacing_zyx == (2.0, 2.0, 2.0) and b.patch_size == (16, 16, 16) and b.mirror_axes == (0, 1, 2)
    assert b.use_mask_for_norm == (True,) * 4
    assert b.manifest["weights"] == {"0": "fold_0.safetensors", "1": "fold_1.safetensors"}
    assert set(b.manifest["files"]) == {"fold_0.safetensors", "fold_1.safetensors"}
    for f in (0, 1):
        sd = b.state_dict(f)
        assert sd.keys() == states[f].keys()
        for k in sd:
            assert torch.equal(sd[k], states[f][k])
    net = b.build_network()
    assert not net.training and not net.decoder.deep_supervision
    net.load_state_dict(b.state_dict(1))
    assert any(not torch.equal(b.state_dict(0)[k], b.state_dict(1)[k]) for k in states[0])


def test_zip_is_uncompressed_and_holds_manifest(tmp_path):
    out = write_bundle(tmp_path / "b.zip", make_manifest(), fold_states((0,)))
    with zipfile.ZipFile(out) as zf:
        assert sorted(zf.namelist()) == ["fold_0.safetensors", "manifest.json"]
        assert all(i.compress_type == zipfile.ZIP_STORED for i in zf.infolist())
        m = json.loads(zf.read("manifest.json"))
    assert m["files"]["fold_0.safetensors"] == bmod.hashlib.sha256(
        zipfile.ZipFile(out).read("fold_0.safetensors")).hexdigest()


def test_write_replaces_existing_folder(tmp_path):
    out = tmp_path / "b"
    write_bundle(out, make_manifest(name="first"), fold_states((0,)), zip=False)
    write_bundle(out, make_manifest(name="second"), fold_states((0,)), zip=False)
    assert load_bundle(out).name == "second"


def _flip_last_byte(path):
    with open(path, "r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 0xFF]))


def test_zip_cache_reused_and_reverified(tmp_path, caplog):
    out = write_bundle(tmp_path / "b.zip", make_manifest(), fold_states((0,)))
    b1 = load_bundle(out)
    manifest_bytes = zipfile.ZipFile(out).read("manifest.json")
    assert b1.root.parent == tmp_path / "cache" and b1.root.name == hashlib.sha256(manifest_bytes).hexdigest()
    assert b1.sha256 == b1.root.name
    mtime = (b1.root / "manifest.json").stat().st_mtime_ns
    b2 = load_bundle(out)
    assert b2.root == b1.root and (b2.root / "manifest.json").stat().st_mtime_ns == mtime
    # tamper with the cached copy: what is loaded is checked against the zip's own manifest, repaired from the zip
    weights = b1.root / "fold_0.safetensors"
    _flip_last_byte(weights)
    assert sha256_file(weights) != b1.manifest["files"]["fold_0.safetensors"]
    b3 = load_bundle(out)
    with caplog.at_level("WARNING"):
        state = b3.state_dict(0)
    assert set(state) == set(fold_states((0,))[0])
    assert sha256_file(b3.root / "fold_0.safetensors") == b1.manifest["files"]["fold_0.safetensors"]
    warnings = [r.getMessage() for r in caplog.records if "extracted again" in r.getMessage()]
    assert len(warnings) == 1 and str(out) in warnings[0] and "fold_0.safetensors" in warnings[0]


def test_cached_weights_with_the_cached_manifest_edited_to_match_are_not_trusted(tmp_path):
    """The zip is the source of truth: zeroed weights in the cache with the cached manifest's checksum edited to
    match them are not what is loaded."""
    out = write_bundle(tmp_path / "b.zip", make_manifest(), fold_states((0,)))
    good = {k: v.clone() for k, v in load_bundle(out).state_dict(0).items()}
    root = load_bundle(out).root
    save_file({k: torch.zeros_like(v) for k, v in good.items()}, str(root / "fold_0.safetensors"))
    cached = json.loads((root / "manifest.json").read_text())
    cached["files"]["fold_0.safetensors"] = sha256_file(root / "fold_0.safetensors")
    (root / "manifest.json").write_text(json.dumps(cached))
    loaded = load_bundle(out).state_dict(0)
    assert all(torch.equal(loaded[k], good[k]) for k in good)


def _folder(tmp_path, **manifest_over):
    out = write_bundle(tmp_path / "b", make_manifest(), fold_states((0, 1)), zip=False)
    if manifest_over:
        m = json.loads((out / "manifest.json").read_text())
        for k, v in manifest_over.items():
            if v is None:
                m.pop(k)
            else:
                m[k] = v
        (out / "manifest.json").write_text(json.dumps(m))
    return out


def test_refuses_checksum_mismatch(tmp_path):
    out = _folder(tmp_path)
    data = bytearray((out / "fold_1.safetensors").read_bytes())
    data[-1] ^= 0x01
    (out / "fold_1.safetensors").write_bytes(bytes(data))
    bundle = load_bundle(out)
    bundle.state_dict(0)  # the intact fold loads
    with pytest.raises(BundleError, match=r"checksum mismatch for fold_1\.safetensors") as e:
        bundle.state_dict(1)
    assert e.value.path == str(out) and "\n" not in str(e.value)


def test_refuses_missing_fold_file(tmp_path):
    out = _folder(tmp_path)
    (out / "fold_0.safetensors").unlink()
    with pytest.raises(BundleError, match=r"weights file fold_0\.safetensors of fold 0 is missing"):
        load_bundle(out)


def test_refuses_fold_without_weights(tmp_path):
    out = _folder(tmp_path, folds=[0, 1, 2])
    with pytest.raises(BundleError, match="fold 2 is listed in folds but has no weights entry"):
        load_bundle(out)


def test_refuses_unknown_network_class(tmp_path):
    out = _folder(tmp_path, network={"class": "os.system", "kwargs": {}})
    with pytest.raises(BundleError, match=r"unknown network class 'os\.system'"):
        load_bundle(out)


@pytest.mark.parametrize("over, message", [
    ({"format": "something-else"}, "not a PedTumorSeg bundle"),
    ({"format_version": 2}, "unsupported bundle format_version 2"),
    ({"patch_size": None}, "lacks required key.*patch_size"),
    ({"channels": ["t1ce", "t1", "t2", "flair"]}, "channel order"),
    ({"labels": {"1": "ET", "2": "NET", "3": "CC"}}, "labels"),
    ({"spacing_zyx": [1.0, -1.0, 1.0]}, "spacing_zyx"),
    ({"mirror_axes": [0, 3]}, "mirror_axes"),
    ({"normalization": {"scheme": "ct"}}, "unsupported normalization"),
    ({"files": {"fold_0.safetensors": "0" * 64, "fold_1.safetensors": "0" * 64, "../x": "0" * 64}},
     "not a plain relative path"),
    ({"files": {"fold_0.safetensors": "xyz", "fold_1.safetensors": "0" * 64}}, "not a 64-digit hex"),
])
def test_refuses_bad_manifest(tmp_path, over, message):
    out = _folder(tmp_path, **over)
    with pytest.raises(BundleError, match=message):
        load_bundle(out)


def test_refuses_weights_file_not_checksummed(tmp_path):
    out = _folder(tmp_path)
    m = json.loads((out / "manifest.json").read_text())
    del m["files"]["fold_1.safetensors"]
    (out / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"fold 1 weights file fold_1\.safetensors has no sha256"):
        load_bundle(out)


def test_refuses_missing_or_bad_input(tmp_path):
    with pytest.raises(BundleError, match="model bundle not found"):
        load_bundle(tmp_path / "nope.zip")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(BundleError, match="not a bundle folder or .zip"):
        load_bundle(tmp_path / "junk.zip")
    (tmp_path / "empty").mkdir()
    with pytest.raises(BundleError, match="no manifest.json"):
        load_bundle(tmp_path / "empty")
    (tmp_path / "empty" / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(tmp_path / "empty")


def _evil_zip(path: Path, member: str, symlink: bool = False) -> Path:
    good = write_bundle(path.parent / "good.zip", make_manifest(), fold_states((0,)))
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(path, "w") as zf:
        for info in src.infolist():
            zf.writestr(info, src.read(info))
        if symlink:
            info = zipfile.ZipInfo(member)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
        else:
            zf.writestr(member, b"pwned")
    return path


@pytest.mark.parametrize("member, symlink, message", [
    ("../evil", False, "would be extracted outside"),
    ("sub/../../evil", False, "would be extracted outside"),
    ("/tmp/evil", False, "would be extracted outside"),
    ("link", True, "is a symbolic link"),
])
def test_refuses_zip_slip_before_extracting(tmp_path, member, symlink, message):
    evil = _evil_zip(tmp_path / "evil.zip", member, symlink)
    with pytest.raises(BundleError, match=message):
        load_bundle(evil)
    assert not (tmp_path / "evil").exists() and not Path("/tmp/evil").exists()
    cache = tmp_path / "cache"
    assert not cache.exists() or not any(cache.iterdir())  # nothing extracted at all


def test_zip_of_folder_with_manifest_one_level_down(tmp_path):
    folder = write_bundle(tmp_path / "inner", make_manifest(), fold_states((0,)), zip=False)
    z = tmp_path / "nested.zip"
    with zipfile.ZipFile(z, "w") as zf:
        for p in folder.iterdir():
            zf.write(p, f"inner/{p.name}")
    assert load_bundle(z).folds == [0]


def test_write_validates_manifest(tmp_path):
    with pytest.raises(BundleError, match="unknown network class"):
        write_bundle(tmp_path / "b.zip", make_manifest(network={"class": "x.Y", "kwargs": {}}), fold_states((0,)))
    assert not list(tmp_path.iterdir())


def test_state_dict_unknown_fold(tmp_path):
    b = load_bundle(_folder(tmp_path))
    with pytest.raises(BundleError, match="fold 7 is not in this bundle"):
        b.state_dict(7)


def test_no_pickle_in_bundle_module():
    src = Path(bmod.__file__).read_text()
    assert "pickle" not in src.replace("unpickle", "") and "torch.load(" not in src


def test_default_bundle_path(tmp_path, monkeypatch):
    z = write_bundle(tmp_path / "demo.zip", make_manifest(), fold_states((0,)))
    monkeypatch.setenv("PEDTUMORSEG_DEMO_BUNDLE", str(z))
    assert default_bundle_path() == z
    monkeypatch.setenv("PEDTUMORSEG_DEMO_BUNDLE", str(tmp_path / "missing.zip"))
    with pytest.raises(BundleError, match="does not exist"):
        default_bundle_path()
    monkeypatch.delenv("PEDTUMORSEG_DEMO_BUNDLE")
    shipped = Path(bmod.__file__).resolve().parents[3] / "Resources" / "Models" / "pedtumorseg-demo.zip"
    if shipped.exists():
        assert default_bundle_path() == shipped
    else:
        with pytest.raises(BundleError, match="demo model bundle is not installed"):
            default_bundle_path()


def test_postprocessing_params(tmp_path):
    pp = pytest.importorskip("pedtumorseg.postprocess")
    defaults = pp.PostprocessParams().to_dict()
    b = load_bundle(write_bundle(tmp_path / "b.zip", make_manifest(postprocessing=defaults), fold_states((0,))))
    assert isinstance(b.postprocessing, pp.PostprocessParams)
    assert b.postprocessing.to_dict() == defaults


def test_bad_postprocessing_defaults_refused_naming_the_bundle(tmp_path):
    import json
    import zipfile

    from conftest import write_tiny_bundle

    with zipfile.ZipFile(write_tiny_bundle(tmp_path / "b.zip")) as zf:
        zf.extractall(tmp_path / "b")
    folder = tmp_path / "b"
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["postprocessing"]["ratio_low"] = 2.0  # above ratio_high
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="postprocessing defaults") as err:
        load_bundle(folder)
    assert str(folder) in str(err.value)
