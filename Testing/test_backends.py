"""CPU backends: the export form of the network, backend selection, the ONNX cache, and the answers of ONNX Runtime
and OpenVINO against a float64 PyTorch reference (deviation no more than 2x PyTorch float32's own)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from pedtumorseg.inference import backends
from pedtumorseg.conventions import CHANNELS, NUM_CLASSES
from pedtumorseg.inference.engine import Engine, PredictOptions
from pedtumorseg.errors import PredictionError
from pedtumorseg.model.blocks import SqueezeExcite
from pedtumorseg.model.export import ShortReductionSqueezeExcite, TwoPassInstanceNorm, export_form, spatial_mean
from pedtumorseg.model.presets import NETWORK_CLASS, build_network, network_kwargs

from nnunet_harness import build_bundle, make_manifest, spread_init_

ONNX_BACKENDS = ["onnxruntime", "openvino"]


def _needs(backend):
    pytest.importorskip(backends._MODULES[backend])
    pytest.importorskip("onnxscript")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path / "cache"))


# --- the export form ------------------------------------------------------------------------------------------

def test_spatial_mean_by_hand():
    x = torch.arange(24, dtype=torch.float64).reshape(1, 1, 2, 3, 4)  # 0..23: mean 11.5
    assert spatial_mean(x).shape == (1, 1, 1, 1, 1)
    assert spatial_mean(x).item() == pytest.approx(11.5, abs=1e-12)
    y = torch.tensor([[1.0, 2.0, 3.0, 10.0]], dtype=torch.float64).reshape(1, 2, 1, 1, 2)  # means 1.5, 6.5
    assert spatial_mean(y).flatten().tolist() == pytest.approx([1.5, 6.5])


def test_two_pass_instance_norm_by_hand():
    norm = nn.InstanceNorm3d(1, eps=0.25, affine=True)
    with torch.no_grad():
        norm.weight.fill_(2.0)
        norm.bias.fill_(1.0)
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 1, 2, 2)  # mean 2.5, biased var 1.25; +eps = 1.5
    expected = 2.0 * (x - 2.5) / np.sqrt(1.5) + 1.0
    out = TwoPassInstanceNorm(norm)(x)
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(norm(x), expected)  # the module it replaces computes the same


def test_export_form_is_the_same_function_and_leaves_the_network_alone():
    torch.manual_seed(0)
    net = spread_init_(build_network(NETWORK_CLASS, network_kwargs("demo"), len(CHANNELS), NUM_CLASSES)).double()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    exp = export_form(net)
    assert not any(isinstance(m, (nn.InstanceNorm3d, SqueezeExcite)) for m in exp.modules())
    assert any(isinstance(m, TwoPassInstanceNorm) for m in exp.modules())
    assert any(isinstance(m, ShortReductionSqueezeExcite) for m in exp.modules())
    assert any(isinstance(m, nn.InstanceNorm3d) for m in net.modules())  # the original is untouched
    assert net.state_dict().keys() == before.keys()
    assert all(torch.equal(net.state_dict()[k], v) for k, v in before.items())
    x = torch.randn(1, 4, 32, 32, 32, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(exp(x), net.eval()(x), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_runtime_instance_norm_over_2m_voxels_is_as_accurate_as_pytorch(tmp_path, backend):
    """The operator-level cause: the runtimes' plain instance norm over 128^3 voxels loses ~1e-4 (one long float32
    sum); the export form stays within a few float32 roundings of the output, like PyTorch."""
    _needs(backend)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 128, 128, 128, generator=g) * 0.5 + 3.0
    norm = nn.Sequential(nn.InstanceNorm3d(2, affine=True)).eval()
    with torch.no_grad():
        ref = norm.double()(x.double()).numpy()
        torch32 = norm.float()(x).numpy()
    errors = {}
    for form, module in (("plain", norm), ("export form", export_form(norm))):
        path = tmp_path / f"{form}.onnx"
        with torch.no_grad():
            torch.onnx.export(module, (x,), str(path), input_names=["images"], output_names=["logits"],
                              dynamo=True, external_data=False, verbose=False)
        runner = (backends.OnnxRuntimeRunner if backend == "onnxruntime" else backends.OpenVinoRunner)(path, 2)
        errors[form] = float(np.abs(runner.run_one(x.numpy()) - ref).max())
    err_torch = float(np.abs(torch32 - ref).max())
    print(f"\n{backend} instance norm over 2 M voxels: max err plain {errors['plain']:.2e}, export form "
          f"{errors['export form']:.2e}; PyTorch fp32 {err_torch:.2e}")
    assert errors["export form"] <= 4 * err_torch  # 4 roundings of values ~5 (ulp 4.8e-7)
    assert errors["plain"] > 20 * err_torch  # the problem the export form solves


# --- selection and cache --------------------------------------------------------------------------------------

def test_resolve_backend(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    with pytest.raises(PredictionError, match="unknown backend"):
        backends.resolve_backend("tensorrt", cpu)
    with pytest.raises(PredictionError, match="CPU only"):
        backends.resolve_backend("onnxruntime", cuda)
    assert backends.resolve_backend("auto", cuda) == "torch"
    assert backends.resolve_backend("torch", cpu) == "torch"
    monkeypatch.setattr(backends, "is_available", lambda b: b in ("torch", "onnxruntime"))
    assert backends.resolve_backend("auto", cpu) == "onnxruntime"
    monkeypatch.setattr(backends, "is_available", lambda b: True)
    assert backends.resolve_backend("auto", cpu) == backends.AUTO_ORDER[0]
    monkeypatch.setattr(backends, "is_available", lambda b: b == "torch")  # neither installed: PyTorch
    assert backends.resolve_backend("auto", cpu) == "torch"
    with pytest.raises(PredictionError, match="not installed"):
        backends.resolve_backend("openvino", cpu)


def _tiny_bundle(tmp_path, seed=0):
    kwargs = {**network_kwargs("demo"), "decoder_widths": [4, 8, 8], "strides": [1, 2, 2],
              "blocks_per_stage": [1, 1, 1]}
    torch.manual_seed(seed)
    net = spread_init_(build_network(NETWORK_CLASS, kwargs, 4, NUM_CLASSES), seed=seed)
    return build_bundle(tmp_path, make_manifest((1.0, 1.0, 1.0), (16, 16, 16), kwargs), net.state_dict())


def test_onnx_export_is_cached_by_bundle_sha256(tmp_path, monkeypatch):
    _needs("onnxruntime")
    bundle = _tiny_bundle(tmp_path)
    path = backends.onnx_path(bundle, 0, bundle.patch_size)
    assert bundle.sha256 in path.parts and path.name.startswith("fold_0-16x16x16")
    calls = []
    real_export = backends.export_onnx
    monkeypatch.setattr(backends, "export_onnx", lambda *a: calls.append(a) or real_export(*a))
    images = np.random.default_rng(0).normal(size=(4, 20, 18, 17)).astype(np.float32)
    a = Engine(bundle, PredictOptions(device="cpu", backend="onnxruntime", tta=True)).predict(images, (1, 1, 1))
    b = Engine(bundle, PredictOptions(device="cpu", backend="onnxruntime", tta=True)).predict(images, (1, 1, 1))
    assert len(calls) == 1 and path.is_file()
    assert a.info["backend"] == "onnxruntime" and a.info["device"] == "cpu" and a.info["seconds"] > 0
    assert a.probabilities is None  # opt-in
    np.testing.assert_array_equal(a.labels, b.labels)
    t = Engine(bundle, PredictOptions(device="cpu", backend="torch", tta=True)).predict(images, (1, 1, 1))
    assert (t.labels == a.labels).mean() >= 0.999


def test_a_modified_onnx_export_in_the_cache_is_exported_again(tmp_path, caplog):
    """The ONNX export is derived from the verified weights and trusted no further: an export whose weights were
    changed in the cache (here halved, still a valid model) is not run but exported again, with one warning."""
    _needs("onnxruntime")
    import onnx
    from onnx import numpy_helper

    bundle = _tiny_bundle(tmp_path)
    path = backends.cached_onnx(bundle, 0, bundle.patch_size)
    assert backends.weights_match(path, bundle.state_dict(0))
    model = onnx.load(str(path))
    for i, init in enumerate(model.graph.initializer):
        array = numpy_helper.to_array(init)
        if array.size > 16 and array.dtype == np.float32:
            model.graph.initializer[i].CopyFrom(numpy_helper.from_array(array * 0.5, init.name))
    onnx.save(model, str(path))
    assert not backends.weights_match(path, bundle.state_dict(0))
    with caplog.at_level("WARNING"):
        again = backends.cached_onnx(bundle, 0, bundle.patch_size)
    assert again == path and backends.weights_match(path, bundle.state_dict(0))
    lines = [r.getMessage() for r in caplog.records if "exported again" in r.getMessage()]
    assert len(lines) == 1 and str(bundle.path) in lines[0]


def test_cli_reports_backend_device_and_seconds(tmp_path, capsys):
    from pedtumorseg import cli
    from conftest import write_tiny_case

    bundle = _tiny_bundle(tmp_path)
    rng = np.random.default_rng(1)
    case = write_tiny_case(tmp_path / "case", size=(20, 18, 16),
                           arrays={s: rng.normal(100, 20, (16, 18, 20)).astype(np.float32)
                                   for s in ("t1n", "t1c", "t2w", "t2f")})
    code = cli.main(["predict", "--case", str(case), "--out", str(tmp_path / "out"), "--model", str(bundle.path),
                     "--device", "cpu", "--backend", "torch", "--progress", "json"])
    assert code == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    done = events[-1]
    assert done["event"] == "done" and done["backend"] == "torch" and done["device"] == "cpu"
    assert done["seconds"] > 0
    stats = json.loads(next((tmp_path / "out").glob("*-stats.json")).read_text())
    assert stats["inference"]["backend"] == "torch" and stats["model"]["backend"] == "torch"


# --- the same answers -----------------------------------------------------------------------------------------

PAPER_PATCH = (64, 64, 64)


@pytest.fixture(scope="module")
def paper_case(tmp_path_factory):
    """The paper preset with spread random weights, one 64^3 tile of random input, and its float64 and float32
    PyTorch logits."""
    torch.manual_seed(0)
    net = spread_init_(build_network(NETWORK_CLASS, network_kwargs("paper"), len(CHANNELS), NUM_CLASSES)).eval()
    state = {k: v.clone() for k, v in net.state_dict().items()}
    data = np.random.default_rng(1).normal(size=(4, *PAPER_PATCH)).astype(np.float32)
    with torch.no_grad():
        y32 = net(torch.from_numpy(data)[None])[0].numpy()
        y64 = net.double()(torch.from_numpy(data).double()[None])[0].numpy()
    folder = tmp_path_factory.mktemp("paper")
    bundle = build_bundle(folder, make_manifest((1.0, 1.0, 1.0), PAPER_PATCH, network_kwargs("paper")), state)
    return bundle, data, y32, y64


def _deviation(y, y64):
    return float(np.abs(y - y64).max()), float((y.argmax(0) != y64.argmax(0)).mean())


@pytest.mark.slow
@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_paper_preset_backend_within_twice_pytorch_fp32_deviation(paper_case, backend, monkeypatch, tmp_path_factory):
    _needs(backend)
    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path_factory.getbasetemp() / "paper-cache"))  # one export
    bundle, data, y32, y64 = paper_case
    engine = Engine(bundle, PredictOptions(device="cpu", backend=backend, tta=False))
    y = engine.predict_logits(data)  # one tile covering the input: the network's logits
    torch_d, torch_a = _deviation(y32, y64)
    back_d, back_a = _deviation(y, y64)
    print(f"\npaper preset {PAPER_PATCH}, random weights: logits max |x - float64| PyTorch fp32 {torch_d:.2e} "
          f"({100 * torch_a:.3f} % argmax), {backend} {back_d:.2e} ({100 * back_a:.3f} % argmax); "
          f"max |logit| {np.abs(y64).max():.2f}")
    assert torch_d > 0
    assert back_d <= 2 * torch_d
    assert back_a <= 2 * torch_a + 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("backend", ONNX_BACKENDS)
def test_demo_bundle_backend_labels_equal_pytorch(backend, monkeypatch, tmp_path_factory):
    _needs(backend)
    from pedtumorseg.inference.bundle import default_bundle_path, load_bundle
    from pedtumorseg.phantoms.clean import make_phantom

    monkeypatch.setenv("PEDTUMORSEG_CACHE", str(tmp_path_factory.getbasetemp() / "demo-cache"))
    bundle = load_bundle(default_bundle_path())
    phantom = make_phantom(31337, "small")
    images = np.stack([phantom.images[c] for c in CHANNELS]).astype(np.float32)
    spacing = phantom.geometry.spacing_zyx
    ref = Engine(bundle, PredictOptions(device="cpu", backend="torch", tta=False)).predict(images, spacing)
    out = Engine(bundle, PredictOptions(device="cpu", backend=backend, tta=False)).predict(images, spacing)
    same = float((out.labels == ref.labels).mean())
    print(f"\ndemo bundle, phantom 31337: {backend} labels equal PyTorch's on {100 * same:.4f} % of voxels")
    assert len(np.unique(ref.labels)) >= 3
    assert same >= 0.999
