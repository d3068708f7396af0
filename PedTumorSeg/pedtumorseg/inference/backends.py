"""CPU inference backends for a bundle's networks: PyTorch itself, or the fold network exported to ONNX and run by
ONNX Runtime or OpenVINO (optional extra ``pedtumorseg[cpu-fast]``).

The safetensors weights stay the source of truth: each fold is exported once, in its export form
(``model.export.export_form``: the same weights, reductions that ONNX runtimes compute as accurately as PyTorch)
for the bundle's patch shape with batch 1, to ``<bundle cache>/onnx/<bundle sha256>/``, and reused from there.
OpenVINO runs in float32 (``INFERENCE_PRECISION_HINT=f32``): on CPUs with AMX or AVX512-FP16 its default is
bf16/fp16 inference, which changes the labels.

``auto`` on a CPU device picks the first installed of ``AUTO_ORDER`` (fastest first, as measured by
``benchmarks/bench_backends.py``), else PyTorch; on CUDA/MPS it is PyTorch.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from pedtumorseg.errors import PredictionError

log = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "openvino")
AUTO_ORDER = ("openvino", "onnxruntime")
#: bump when the export form or the export call changes: cached files of other versions are not reused
EXPORT_VERSION = 1
_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}


def is_available(backend: str) -> bool:
    """Whether ``backend`` can run here (PyTorch always can; the others also need the ONNX exporter's
    ``onnxscript``)."""
    if backend == "torch":
        return True
    return all(importlib.util.find_spec(m) is not None for m in (_MODULES[backend], "onnxscript"))


def resolve_backend(name: str | None, device: torch.device) -> str:
    """The backend that runs: ``auto`` resolved for ``device``; an explicit ONNX backend needs a CPU device and
    its package."""
    name = name or "auto"
    if name not in BACKENDS:
        raise PredictionError(f"unknown backend {name!r}: use {', '.join(BACKENDS)}")
    if name == "auto":
        if device.type != "cpu":
            return "torch"
        return next((b for b in AUTO_ORDER if is_available(b)), "torch")
    if name != "torch":
        if device.type != "cpu":
            raise PredictionError(f"backend {name} runs on the CPU only (got device {device}); use --device cpu")
        if not is_available(name):
            raise PredictionError(f"backend {name} is not installed: pip install 'pedtumorseg[cpu-fast]'")
    return name


# --- export -------------------------------------------------------------------------------------------------

def onnx_path(bundle, fold, patch_size) -> Path:
    """Where fold ``fold`` of ``bundle`` is cached as ONNX for ``patch_size``."""
    from pedtumorseg.inference.bundle import cache_dir

    patch = "x".join(str(int(p)) for p in patch_size)
    return cache_dir() / "onnx" / bundle.sha256 / f"fold_{fold}-{patch}-v{EXPORT_VERSION}.onnx"


def export_onnx(bundle, fold, patch_size, path: Path) -> Path:
    """Export the export form of the fold's network (batch 1, ``patch_size``) to ``path`` atomically."""
    from pedtumorseg.model.export import export_form

    net = bundle.build_network()
    net.load_state_dict(bundle.state_dict(fold))
    net = export_form(net)
    x = torch.zeros((1, bundle.io.num_inputs, *[int(p) for p in patch_size]))
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}-", suffix=".onnx", dir=path.parent)
    os.close(fd)
    try:
        # the dynamo exporter (the TorchScript one drops initializers of the export form); its progress lines
        # would land on stdout, where `predict --progress json` speaks
        with torch.no_grad(), contextlib.redirect_stdout(io.StringIO()):
            torch.onnx.export(net, (x,), tmp, input_names=["images"], output_names=["logits"], dynamo=True,
                              external_data=False, verbose=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def cached_onnx(bundle, fold, patch_size) -> Path:
    """The cached ONNX file of a fold, exported first if missing. A cached file is derived from the weights and
    trusted no further than they are: every weight tensor it holds must be one of the fold's verified weights
    (``weights_match``); one that is not (the cache was modified) is exported again, with one warning line."""
    path = onnx_path(bundle, fold, patch_size)
    if path.is_file() and not weights_match(path, bundle.state_dict(fold)):
        log.warning("warning: %s: the cached ONNX export of fold %s (%s) no longer holds the bundle's weights; "
                    "exported again", bundle.path, fold, path)
        path.unlink()
    if not path.is_file():
        export_onnx(bundle, fold, patch_size, path)
    return path


#: initializers of at most this many values are constants of the export form (epsilons, shapes), not weights
_CONSTANT_SIZE = 16


def weights_match(path: Path, state_dict: dict) -> bool:
    """Whether every initializer of the ONNX file at ``path`` larger than a constant holds exactly the values of
    one tensor of ``state_dict`` (the export form may reshape a tensor, never change its values; training-only
    tensors such as deep-supervision heads are not exported). Reads the file once; a file that is not a readable
    ONNX model, or holds no weights at all, fails."""
    import onnx
    from onnx import numpy_helper

    def digest(array) -> bytes:
        a = np.ascontiguousarray(array)
        return hashlib.blake2b(a.dtype.str.encode() + a.tobytes(), digest_size=16).digest()

    try:
        model = onnx.load(str(path))
    except Exception:
        return False
    found = {digest(numpy_helper.to_array(init)) for init in model.graph.initializer
             if int(np.prod(init.dims)) > _CONSTANT_SIZE}
    weights = {digest(t.detach().cpu().numpy()) for t in state_dict.values()
               if t.is_floating_point() and t.numel() > _CONSTANT_SIZE}
    return bool(found) and found <= weights


# --- runners ------------------------------------------------------------------------------------------------

class OnnxRuntimeRunner:
    """One fold's ONNX network in an ONNX Runtime CPU session; call with a (B, C, *patch) float32 tensor."""

    def __init__(self, path: Path, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = int(threads)
        so.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])

    def run_one(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {"images": x})[0]


class OpenVinoRunner:
    """One fold's ONNX network compiled by OpenVINO for the CPU in float32."""

    def __init__(self, path: Path, threads: int):
        import openvino as ov

        core = ov.Core()
        # no CACHE_DIR: a compiled blob in a cache could not be checked against the weights (compiling the
        # verified ONNX costs ~1 s for the demo bundle)
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": int(threads),
                  "PERFORMANCE_HINT": "LATENCY"}
        self._compiled = core.compile_model(str(path), "CPU", config)
        self._request = self._compiled.create_infer_request()

    def run_one(self, x: np.ndarray) -> np.ndarray:
        return self._request.infer({0: x})[0].copy()


def make_runner(backend: str, bundle, fold, patch_size, threads: int):
    path = cached_onnx(bundle, fold, patch_size)
    cls = {"onnxruntime": OnnxRuntimeRunner, "openvino": OpenVinoRunner}[backend]
    return cls(path, threads)


def run_batch(runner, batch: torch.Tensor) -> torch.Tensor:
    """Run a (B, C, *patch) CPU tensor through a batch-1 runner, one sample at a time."""
    outs = [runner.run_one(np.ascontiguousarray(batch[i:i + 1].numpy())) for i in range(batch.shape[0])]
    return torch.from_numpy(np.concatenate(outs) if len(outs) > 1 else outs[0])
