"""nnU-Net reference harness shared by Testing/test_conformance.py, Testing/test_backends.py and the benchmarks:
a bundle manifest and nnU-Net v2 plans for the same network, nnU-Net's own ``nnUNetPredictor`` initialised manually
with our network and weights (no trainer lookup), nnU-Net with float32 accumulators, spread random weights, a
phantom stack; for the tests that plan and train with nnU-Net: its fingerprint with a test-sized sample of
foreground voxels, its planning pools on threads, and its progress plot at a low resolution. nnunetv2 is imported
only by the functions that run it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pedtumorseg.conventions import CHANNELS, LABEL_NAMES, NUM_CLASSES
from pedtumorseg.model.presets import NETWORK_CLASS, network_kwargs


def spread_init_(net: torch.nn.Module, seed: int = 0, gain: float = 1.0) -> torch.nn.Module:
    """Re-initialise weights at a scale that makes the outputs vary spatially (the small-scale init of a fresh
    net gives near-constant predictions)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim >= 2:
                fan_in = p[0].numel() if not name.endswith("upsample") else p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) * gain / np.sqrt(max(1, fan_in)) * np.sqrt(2))
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    return net


def make_manifest(spacing_zyx, patch_size, kwargs=None, mirror_axes=(0, 1, 2), name="bench") -> dict:
    return {
        "format": "pedtumorseg-bundle", "format_version": 1, "name": name, "version": "0",
        "labels": {str(k): v for k, v in LABEL_NAMES.items()}, "channels": list(CHANNELS),
        "spacing_zyx": [float(s) for s in spacing_zyx], "patch_size": [int(p) for p in patch_size],
        "normalization": {"scheme": "zscore", "use_mask_for_norm": [True] * 4},
        "network": {"class": NETWORK_CLASS, "kwargs": kwargs if kwargs is not None else network_kwargs("demo")},
        "mirror_axes": list(mirror_axes), "postprocessing": {},
    }


def plans_dict(manifest: dict) -> dict:
    """nnU-Net v2 plans with the bundle's values and the default planner's resampling functions."""
    sp = manifest["spacing_zyx"]
    return {
        "dataset_name": "Dataset999_Bench", "plans_name": "nnUNetPlans",
        "original_median_spacing_after_transp": sp, "original_median_shape_after_transp": [96, 96, 62],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {
            str(c): {"max": 1.0, "mean": 0.0, "median": 0.0, "min": 0.0, "percentile_00_5": 0.0,
                     "percentile_99_5": 1.0, "std": 1.0} for c in range(4)},
        "configurations": {"3d_fullres": {
            "data_identifier": "nnUNetPlans_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": manifest["patch_size"], "median_image_size_in_voxels": [96, 96, 62],
            "spacing": sp, "normalization_schemes": ["ZScoreNormalization"] * 4,
            "use_mask_for_norm": manifest["normalization"]["use_mask_for_norm"],
            "resampling_fn_data": "resample_data_or_seg_to_shape",
            "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {"is_seg": False, "order": 3, "order_z": 0, "force_separate_z": None},
            "resampling_fn_seg_kwargs": {"is_seg": True, "order": 1, "order_z": 0, "force_separate_z": None},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape",
            "resampling_fn_probabilities_kwargs": {"is_seg": False, "order": 1, "order_z": 0,
                                                   "force_separate_z": None},
            "architecture": {"network_class_name": manifest["network"]["class"],
                             "arch_kwargs": manifest["network"]["kwargs"], "_kw_requires_import": []},
            "batch_dice": False,
        }},
    }


def dataset_json() -> dict:
    return {"channel_names": {str(i): c for i, c in enumerate(CHANNELS)},
            "labels": {"background": 0, **{n: v for v, n in LABEL_NAMES.items()}},
            "numTraining": 1, "file_ending": ".nii.gz"}


def reference_setup(manifest: dict, state, device: str = "cpu", tta: bool = True, step_size: float = 0.5):
    """nnU-Net's own predictor, initialised manually with our network and weights (no trainer lookup); ``state``
    one fold's state dict or a list of them (nnU-Net ensembles the list)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    from pedtumorseg.model.presets import build_network

    pm = PlansManager(plans_dict(manifest))
    cm = pm.get_configuration("3d_fullres")
    net = build_network(manifest["network"]["class"], manifest["network"]["kwargs"], len(CHANNELS), NUM_CLASSES)
    states = list(state) if isinstance(state, (list, tuple)) else [state]
    net.load_state_dict(states[0])
    net.eval()
    predictor = nnUNetPredictor(tile_step_size=step_size, use_gaussian=True, use_mirroring=tta,
                                perform_everything_on_device=device != "cpu", device=torch.device(device),
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    predictor.manual_initialization(net, pm, cm, states, dataset_json(), "PedTumorSegTrainer",
                                    tuple(manifest["mirror_axes"]))
    return predictor


class _Float32Torch:
    """Stands in for the ``torch`` module inside nnU-Net's predictor module: identical, except that
    ``torch.zeros(..., dtype=torch.half)`` gives float32 (the logit and weight accumulators)."""

    def __init__(self):
        import torch as _t
        self._t = _t

    def __getattr__(self, name):
        return getattr(self._t, name)

    def zeros(self, *args, **kwargs):
        if kwargs.get("dtype") in (self._t.half, self._t.float16):
            kwargs["dtype"] = self._t.float32
        return self._t.zeros(*args, **kwargs)


class fp32_accumulation:
    """Context manager: nnU-Net's sliding window with float32 accumulators and a float32 Gaussian (stock nnU-Net
    2.8 keeps both in float16, which costs up to ~1e-2 relative precision of the logits)."""

    def __enter__(self):
        import functools

        from nnunetv2.inference import predict_from_raw_data as mod
        from nnunetv2.inference.sliding_window_prediction import compute_gaussian
        self._mod, self._saved = mod, (mod.torch, mod.compute_gaussian)
        mod.torch = _Float32Torch()
        mod.compute_gaussian = functools.partial(compute_gaussian, dtype=torch.float32)
        return self

    def __exit__(self, *exc):
        self._mod.torch, self._mod.compute_gaussian = self._saved
        return False


def nnunet_predict(predictor, images: np.ndarray, spacing_zyx) -> tuple[np.ndarray, np.ndarray]:
    """(labels, probabilities) from nnU-Net for a (4, z, y, x) stack."""
    seg, probs = predictor.predict_single_npy_array(np.asarray(images, dtype=np.float32),
                                                    {"spacing": [float(s) for s in spacing_zyx]}, None, None, True)
    return np.asarray(seg), np.asarray(probs, dtype=np.float32)


def phantom_stack(seed: int = 3, size: str = "small"):
    from pedtumorseg.phantoms.clean import make_phantom
    ph = make_phantom(seed, size)
    images = np.stack([ph.images[c] for c in CHANNELS]).astype(np.float32)
    return images, tuple(float(s) for s in ph.geometry.spacing_zyx)


def build_bundle(folder: Path, manifest: dict, state: dict):
    from pedtumorseg.inference.bundle import load_bundle, write_bundle
    return load_bundle(write_bundle(Path(folder) / "bench", manifest, {0: state}, zip=False))


#: foreground voxels nnU-Net's fingerprint draws in all for its intensity statistics in tests (its default: 1e8)
FINGERPRINT_SAMPLES = 100_000


def fewer_fingerprint_samples(monkeypatch, total: int = FINGERPRINT_SAMPLES) -> None:
    """nnU-Net's own ``DatasetFingerprintExtractor``, drawing ``total`` foreground voxels (with replacement, spread
    over the cases) instead of its default 1e8. A phantom has a few thousand tumor voxels, so 1e8 draws are ~10^4
    copies of each; with 1e5 draws the 5 phantoms of test_import_nnunet_trained.py get the same min and max, mean,
    median, std and 99.5th percentile within 0.6 %, 0.5th percentile within 2.5 % (these statistics are used only
    by nnU-Net's CT normalization; these datasets are z-scored). The 1e8 floats (1.6 GB for 4 channels) cost about
    15 s per fingerprint on 2 cores, mostly in sending them back from the workers and in ``np.percentile``."""
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import DatasetFingerprintExtractor

    init = DatasetFingerprintExtractor.__init__

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        self.num_foreground_voxels_for_intensitystats = total

    monkeypatch.setattr(DatasetFingerprintExtractor, "__init__", __init__)


def thread_pools(monkeypatch) -> None:
    """nnU-Net's ``multiprocessing.get_context("spawn").Pool`` of the dataset integrity check, the fingerprint
    extractor and the preprocessor as a ``multiprocessing.pool.ThreadPool`` (same ``starmap_async`` and ``_pool``
    workers, nnU-Net's own per-case code): nothing is spawned inside pytest, and no worker re-imports torch and
    nnU-Net (seconds per pool on 2 cores). Testing/test_training_chain.py plans with the real spawn pools."""
    import types
    from multiprocessing.pool import ThreadPool

    from nnunetv2.experiment_planning import verify_dataset_integrity as verify
    from nnunetv2.experiment_planning.dataset_fingerprint import fingerprint_extractor as fingerprint
    from nnunetv2.preprocessing.preprocessors import default_preprocessor as preprocessor

    fake = types.SimpleNamespace(get_context=lambda *_: types.SimpleNamespace(Pool=ThreadPool))
    for mod in (verify, fingerprint, preprocessor):
        monkeypatch.setattr(mod, "multiprocessing", fake)


def small_progress_plots(monkeypatch, dpi: int = 10) -> None:
    """nnU-Net's own ``progress.png`` (written after every epoch by its ``LocalLogger``), saved at ``dpi`` instead of
    matplotlib's 100: the same figure, 300 x 540 pixels instead of 3000 x 5400; about 1 s less per epoch on 2 cores.
    The tests only check that the file is written."""
    import matplotlib
    from nnunetv2.training.logging.nnunet_logger import LocalLogger

    plot = LocalLogger.plot_progress_png

    def plot_progress_png(self, output_folder):
        with matplotlib.rc_context({"savefig.dpi": dpi}):
            return plot(self, output_folder)

    monkeypatch.setattr(LocalLogger, "plot_progress_png", plot_progress_png)
