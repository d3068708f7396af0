"""Inference engine: nnU-Net v2 compatible preprocessing, batched Gaussian sliding window with
mirroring TTA and fold ensembling, and the exact inverse mapping onto the input grid.

Differences from nnU-Net's ``nnUNetPredictor`` (on purpose): tiles *and* mirrored copies go through the network in
batches; the accumulators (logit sum and Gaussian weight sum) are float32 on the device (nnU-Net 2.8 keeps them
in float16); everything for one case stays on the device until the final logits are copied back once; the mirrored
outputs of a tile are summed in one reused tile buffer and weighted and added into the case accumulator once per
tile and fold. The predictions agree with nnU-Net's to float rounding (see Testing/test_conformance.py).

Backends (``PredictOptions.backend``, see ``backends``): ``torch`` runs the bundle's PyTorch network on any
device; ``onnxruntime`` / ``openvino`` run its ONNX export on the CPU; ``auto`` picks the fastest installed one
for the device. Every fold's network stays resident (on CUDA: on the GPU, optionally ``torch.compile``d).

predictions agree with nnU-Net's to float rounding (see Testing/test_conformance.py).

A 2D bundle (a slice-wise network class, ``pedtumorseg.model.presets.spatial_dims`` = 2; its patch size is
``[1, y, x]``) is predicted slice by slice as nnU-Net's 2d configuration: every axial slice once, a 2D Gaussian
sliding window within it.
"""

from __future__ import annotations

import itertools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
import torch
from scipy.ndimage import gaussian_filter

from pedtumorseg.inference import backends
from pedtumorseg.inference.bundle import load_fold_weights
from pedtumorseg.conventions import CHANNELS, NUM_CLASSES
from pedtumorseg.errors import Cancelled, PredictionError
from pedtumorseg.inference.export import logits_to_input_grid
from pedtumorseg.inference.preprocessing import preprocess


@dataclass
class PredictOptions:
    device: str = "auto"  # "auto" (cuda, then mps, then cpu), or any torch device string
    folds: list | None = None  # None: all folds of the bundle
    tta: bool = True  # mirroring test-time augmentation over the bundle's mirror axes
    step_size: float = 0.5  # sliding-window step as a fraction of the patch
    batch_size: int | None = None  # network batch (tiles x mirrors); None: from patch size and device
    precision: str = "auto"  # "auto" (fp16 autocast on CUDA, fp32 elsewhere), "fp32", "fp16", "bf16"
    backend: str = "torch"  # "auto", "torch", "onnxruntime", "openvino" (see pedtumorseg.inference.backends)
    probabilities: bool = False  # also return the full-grid probability map (5 x float32 per voxel)
    compile: bool = False  # torch.compile the networks (CUDA, torch backend)


@dataclass
class Prediction:
    probabilities: np.ndarray | None  # (5, z, y, x) float32 on the input grid; None unless requested
    labels: np.ndarray  # (z, y, x) uint8
    info: dict = field(default_factory=dict)  # network_shape, bbox, backend, device, seconds


# --- sliding-window geometry ----------------------------------------------------------------------------

def compute_steps(image_size, tile_size, step_size: float) -> list[list[int]]:
    """Tile start positions per axis: the fewest steps of at most ``step_size * tile`` voxels, spread evenly
    from 0 to ``image - tile`` (nnU-Net's rule); an axis with a tile of 1 (the slice axis of a 2D network) gets
    every position once, as nnU-Net's slice loop. Requires image >= tile on every axis."""
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    steps = []
    for n, t in zip(image_size, tile_size):
        if n < t:
            raise ValueError(f"image size {tuple(image_size)} is smaller than the tile {tuple(tile_size)}")
        count = int(np.ceil((n - t) / (t * step_size))) + 1
        if t == 1:
            steps.append(list(range(n)))
        elif count == 1:
            steps.append([0])
        else:
            width = (n - t) / (count - 1)
            steps.append([int(np.round(width * i)) for i in range(count)])
    return steps


@lru_cache(maxsize=4)
def _gaussian_np(tile_size: tuple[int, ...], sigma_scale: float, value_scaling: float) -> np.ndarray:
    impulse = np.zeros(tile_size)
    impulse[tuple(t // 2 for t in tile_size)] = 1
    g = gaussian_filter(impulse, [t * sigma_scale for t in tile_size], 0, mode="constant", cval=0)
    g /= g.max() / value_scaling
    g = g.astype(np.float32)
    zero = g == 0
    if zero.any():
        g[zero] = g[~zero].min()
    return g


def gaussian_map(tile_size, sigma_scale: float = 1.0 / 8, value_scaling: float = 10.0) -> np.ndarray:
    """Importance map of a tile: Gaussian centred at ``tile // 2`` with sigma = tile * sigma_scale, max =
    value_scaling, no zeros."""
    return _gaussian_np(tuple(int(t) for t in tile_size), float(sigma_scale), float(value_scaling)).copy()


def pad_amounts(shape, min_shape) -> list[tuple[int, int]]:
    """Constant padding (below, above) so that shape >= min_shape, content centred (extra voxel above)."""
    out = []
    for n, m in zip(shape, min_shape):
        d = max(0, m - n)
        out.append((d // 2, d - d // 2))
    return out


def mirror_combinations(axes) -> list[tuple[int, ...]]:
    """() first, then every non-empty combination of the spatial axes (nnU-Net's order)."""
    axes = list(axes)
    return [()] + [c for k in range(1, len(axes) + 1) for c in itertools.combinations(axes, k)]


# --- device ---------------------------------------------------------------------------------------------

def resolve_device(name: str = "auto") -> torch.device:
    if name in (None, "", "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise PredictionError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise PredictionError(f"device {name!r} requested but CUDA is not available here (use --device cpu)")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise PredictionError(f"device {name!r} requested but only {torch.cuda.device_count()} CUDA device(s)")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise PredictionError(f"device {name!r} requested but MPS is not available here (use --device cpu)")
    return dev


def _autocast_dtype(device: torch.device, precision: str):
    if precision not in ("auto", "fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be auto, fp32, fp16 or bf16, got {precision!r}")
    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    return torch.float16


def _cpu_threads() -> int:
    """The CPUs this process may use: its affinity mask, capped by a SLURM allocation (``SLURM_CPUS_PER_TASK``:
    a cluster without CPU binding leaves the whole node in the mask, shared with the node's other jobs)."""
    try:
        available = max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        available = max(1, os.cpu_count() or 1)
    allocated = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return min(available, int(allocated)) if allocated.isdigit() and int(allocated) > 0 else available


# --- the engine -----------------------------------------------------------------------------------------

class Engine:
    """Runs a bundle's folds on one device. One network; the folds' weights are swapped into it."""

    def __init__(self, bundle, options: PredictOptions | None = None):
        self.bundle = bundle
        self.options = options or PredictOptions()
        self.device = resolve_device(self.options.device)
        self.backend = backends.resolve_backend(self.options.backend, self.device)
        self.autocast_dtype = _autocast_dtype(self.device, self.options.precision)
        folds = self.options.folds if self.options.folds is not None else bundle.folds
        if not folds:
            raise ValueError("no folds selected")
        self.folds = list(folds)
        for f in self.folds:  # validates the folds exist (and reads their weights once)
            bundle.state_dict(f)
        self._nets: dict = {}  # fold -> resident PyTorch network
        self._runners: dict = {}  # fold -> ONNX runner (onnxruntime / openvino backends)
        self.spatial_dims = int(getattr(bundle, "spatial_dims", 3))
        if self.spatial_dims == 2 and bundle.patch_size[0] != 1:
            raise PredictionError(f"2D bundle {bundle.path} has patch size {list(bundle.patch_size)}; expected "
                                  "[1, y, x]")
        if self.spatial_dims == 2 and self.backend != "torch":  # the ONNX export is of 3D tiles
            if self.options.backend != "auto":
                raise ValueError(f"backend {self.backend} runs 3D bundles only; use --backend torch for the 2D "
                                 f"bundle {bundle.path}")
            self.backend = "torch"
        self._check_weights()  # weights that do not fit the manifest's network: refused before any case

    # network ------------------------------------------------------------------------------------------
    def _load_weights(self, net, fold) -> None:
        load_fold_weights(self.bundle, net, fold)

    def _check_weights(self) -> None:
        if self.backend == "torch":
            for fold in self.folds:
                self._net_for(fold)
            return
        net = self.bundle.build_network()  # the ONNX backends export from it: check once on the host
        for fold in self.folds:
            self._load_weights(net, fold)

    def _net_for(self, fold):
        """The fold's PyTorch network on the device (built once, kept)."""
        if fold not in self._nets:
            net = self.bundle.build_network()
            self._load_weights(net, fold)
            net = net.to(self.device).eval()
            if self.options.compile and self.device.type == "cuda":
                net = torch.compile(net, dynamic=False)
            self._nets[fold] = net
        return self._nets[fold]

    def _runner_for(self, fold, report=None):
        """A callable (B, C, *patch) tensor -> logits tensor for the fold, on the engine's backend."""
        if self.backend == "torch":
            net = self._net_for(fold)

            def run(inp):
                if self.autocast_dtype is not None:
                    with torch.autocast(self.device.type, dtype=self.autocast_dtype):
                        out = net(inp)
                else:
                    out = net(inp)
                return out[0] if isinstance(out, (list, tuple)) else out
            return run
        if fold not in self._runners:
            if report is not None and not backends.onnx_path(self.bundle, fold, self.patch_size).is_file():
                report(f"fold {fold}: exporting the network for {self.backend} (once per bundle)")
            runner = backends.make_runner(self.backend, self.bundle, fold, self.patch_size, _cpu_threads())
            self._runners[fold] = lambda inp, runner=runner: backends.run_batch(runner, inp)
        return self._runners[fold]

    @property
    def patch_size(self) -> tuple[int, int, int]:
        return tuple(self.bundle.patch_size)

    def mirror_sets(self) -> list[tuple[int, ...]]:
        return mirror_combinations(self.bundle.mirror_axes) if self.options.tta else [()]

    def auto_batch_size(self) -> int:
        if self.options.batch_size is not None:
            if self.options.batch_size < 1:
                raise ValueError("batch_size must be >= 1")
            return int(self.options.batch_size)
        voxels = math.prod(self.patch_size)
        if self.backend != "torch":
            return 1  # the ONNX export has a fixed batch of 1
        cap = 8 if self.spatial_dims == 2 else 1  # one 2D slice tile is small: batch more of them
        if self.device.type == "cuda":
            # input voxels per batch: 2 paper-net tiles of 128^3 in fp16, aiming at <= 4 GB peak (unmeasured;
            # benchmarks/gpu_check.sh prints the peak)
            budget = 2 * 128 ** 3
            try:
                free, _ = torch.cuda.mem_get_info(self.device)
                budget = min(budget, int(free / (6 * 1024 ** 3) * 4 * 128 ** 3))
            except Exception:
                pass
            return int(max(1, min(16 * cap, budget // voxels)))
        if self.device.type == "mps":
            return int(max(1, min(4 * cap, (2 * 128 ** 3) // voxels)))
        return int(max(1, min(4 * cap, (128 ** 3) // voxels)))

    # prediction ---------------------------------------------------------------------------------------
    def predict(self, images: np.ndarray, spacing_zyx, progress: Callable[[float, str], None] | None = None,
                cancel: Callable[[], bool] | None = None, probabilities: bool | None = None) -> Prediction:
        """``probabilities`` (default ``options.probabilities``): also return the full-grid probability map."""
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[0] != len(CHANNELS):
            raise ValueError(f"images must be ({len(CHANNELS)}, z, y, x), got shape {images.shape}")
        report = progress or (lambda fraction, message: None)
        if cancel is not None and cancel():
            raise Cancelled("cancelled")
        start = time.perf_counter()
        report(0.0, "preprocessing")
        io = getattr(self.bundle, "io", None)
        images, spacing_zyx, target = self._network_order(images, spacing_zyx, io)
        if self.spatial_dims == 2:  # nnU-Net's 2d configuration keeps each case's slice spacing
            target = (float(spacing_zyx[0]), *target[1:])
        norm = self.bundle.normalization if io is not None else None
        pre = preprocess(images, tuple(float(s) for s in spacing_zyx), target, self.bundle.use_mask_for_norm, norm)
        logits = self.predict_logits(pre.data, progress=lambda f, m: report(0.02 + 0.93 * f, m), cancel=cancel)
        report(0.96, "resampling to the input grid")
        full = self.options.probabilities if probabilities is None else probabilities
        probs, labels = logits_to_input_grid(logits, pre, full_probabilities=full, io=io)
        if io is not None and io.transposed:  # back to the image's axis order
            back = io.transpose_backward
            labels = np.ascontiguousarray(labels.transpose(back))
            probs = None if probs is None else np.ascontiguousarray(probs.transpose(0, *[a + 1 for a in back]))
        report(1.0, "done")
        return Prediction(probs, labels, {"network_shape": tuple(pre.data.shape[1:]), "bbox": pre.bbox,
                                          "backend": self.backend, "device": str(self.device),
                                          "seconds": round(time.perf_counter() - start, 3)})

    def _network_order(self, images, spacing_zyx, io):
        """The network's input channels (``io.inputs``) of a CHANNELS-ordered stack, its axes and spacing permuted by
        ``io.transpose_forward``, and the bundle's target spacing in that order (``io`` None: unchanged)."""
        target = tuple(self.bundle.spacing_zyx)
        if io is None:
            return images, spacing_zyx, target
        if io.inputs != tuple(range(len(CHANNELS))):
            images = images[list(io.inputs)]
        if io.transposed:
            tf = io.transpose_forward
            images = images.transpose(0, *[a + 1 for a in tf])
            spacing_zyx, target = tuple(spacing_zyx[a] for a in tf), tuple(target[a] for a in tf)
        return images, spacing_zyx, target

    def predict_logits(self, data: np.ndarray, progress=None, cancel=None) -> np.ndarray:
        """Fold-averaged, mirror-averaged, Gaussian-weighted sliding-window logits (C, z, y, x) float32 for a
        preprocessed (C, z, y, x) array."""
        report = progress or (lambda fraction, message: None)
        restore_threads = None
        restore_benchmark = torch.backends.cudnn.benchmark
        if self.device.type == "cpu":
            restore_threads = torch.get_num_threads()
            torch.set_num_threads(_cpu_threads())
        elif self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # one tile shape for the whole case: pick the fastest kernels
        try:
            with torch.inference_mode():
                return self._predict_logits(data, report, cancel)
        finally:
            if restore_threads is not None:
                torch.set_num_threads(restore_threads)
            torch.backends.cudnn.benchmark = restore_benchmark

    def _predict_logits(self, data: np.ndarray, report, cancel) -> np.ndarray:
        dev = self.device
        x, pads = self._padded_input(data)
        padded = tuple(x.shape[1:])
        steps = compute_steps(padded, self.patch_size, self.options.step_size)
        tiles = [tuple(slice(s, s + t) for s, t in zip(start, self.patch_size)) for start in itertools.product(*steps)]
        mirrors = self.mirror_sets()
        work = [(ti, m) for ti in range(len(tiles)) for m in mirrors]  # tile-major: a tile's mirrors adjacent
        bs = max(1, min(self.auto_batch_size(), len(work)))
        batches = [work[i:i + bs] for i in range(0, len(work), bs)]
        total = len(batches) * len(self.folds)
        gauss = torch.from_numpy(gaussian_map(self.patch_size)).to(dev)
        weight = torch.zeros(padded, dtype=torch.float32, device=dev)
        for tile in tiles:
            weight[tile] += gauss
        n_out = self.bundle.io.num_outputs if hasattr(self.bundle, "io") else NUM_CLASSES
        logits_sum = torch.zeros((n_out, *padded), dtype=torch.float32, device=dev)
        fold_logits = torch.empty_like(logits_sum) if len(self.folds) > 1 else logits_sum
        for fi, fold in enumerate(self.folds):
            done = fi * len(batches)
            acc = logits_sum if fi == 0 else fold_logits.zero_()
            for b, _ in enumerate(self._fold_batches(fold, x, tiles, batches, mirrors, gauss / len(mirrors), acc,
                                                     lambda m, d=done: report(d / total, m), cancel), start=1):
                report((done + b) / total, f"fold {fold}: batch {b}/{len(batches)}")
            if fi > 0:
                logits_sum += fold_logits
        logits_sum /= weight
        if len(self.folds) > 1:
            logits_sum /= len(self.folds)
        unpad = tuple(slice(lo, n - hi) for (lo, hi), n in zip(pads, padded))
        result = logits_sum[(slice(None), *unpad)]
        if not torch.isfinite(result).all():
            raise PredictionError("the network produced non-finite values (NaN/Inf); try --device cpu or precision fp32")
        return result.cpu().numpy()

    def _padded_input(self, data: np.ndarray):
        """``(x, pads)``: the case on the device, padded with zeros to at least one patch (nnU-Net's rule)."""
        pads = pad_amounts(tuple(data.shape[1:]), self.patch_size)
        x = torch.from_numpy(np.ascontiguousarray(data, dtype=np.float32))
        x = x.pin_memory().to(self.device, non_blocking=True) if self.device.type == "cuda" else x.to(self.device)
        if any(p != (0, 0) for p in pads):
            flat = [v for p in reversed(pads) for v in p]  # F.pad order: last axis first
            x = torch.nn.functional.pad(x, flat, mode="constant", value=0.0)
        return x, pads

    def _fold_batches(self, fold, x, tiles, batches, mirrors, scale, acc, report_message, cancel):
        """Run one fold over every batch of (tile, mirror) pairs, adding each tile's mirror-averaged,
        Gaussian-weighted logits into ``acc``; yields after each batch (the caller reports progress). The mirrored
        outputs of a tile are summed in one reused tile buffer and added into ``acc`` once per tile."""
        run = self._runner_for(fold, report=report_message)
        patch = self.patch_size
        tile_sum = torch.empty((acc.shape[0], *patch), dtype=torch.float32, device=self.device)
        inp = None
        seen = 0  # mirrors of the current tile summed into tile_sum
        for batch in batches:
            if cancel is not None and cancel():
                raise Cancelled("cancelled")
            if inp is None or inp.shape[0] != len(batch):
                inp = torch.empty((len(batch), x.shape[0], *patch), dtype=x.dtype, device=self.device)
            for i, (ti, m) in enumerate(batch):
                src = x[(slice(None), *tiles[ti])]
                inp[i] = torch.flip(src, [a + 1 for a in m]) if m else src
            if self.spatial_dims == 2:  # (B, C, 1, y, x) -> (B, C, y, x) and back
                out = run(inp[:, :, 0]).float()[:, :, None]
            else:
                out = run(inp).float()
            for i, (ti, m) in enumerate(batch):
                o = torch.flip(out[i], [a + 1 for a in m]) if m else out[i]
                if seen == 0:
                    tile_sum.copy_(o)
                else:
                    tile_sum += o
                seen += 1
                if seen == len(mirrors):
                    acc[(slice(None), *tiles[ti])] += tile_sum * scale
                    seen = 0
            yield
