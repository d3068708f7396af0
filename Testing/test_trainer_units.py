"""Unit tests of the training subproject: cosine schedule, optimizer, loss wiring, network and init, plans."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

pytest.importorskip("nnunetv2")

from pedtumorseg.model.loss import DeepSupervisionLoss, PedTumorSegLoss  # noqa: E402
from pedtumorseg.model.init import conv_fan_in, init_std  # noqa: E402
from pedtumorseg.model.network import PedTumorSegNet  # noqa: E402
from pedtumorseg.model.presets import NETWORK_CLASS, network_kwargs  # noqa: E402
from pedtumorseg_train.schedule import CosineLRScheduler, cosine_lr  # noqa: E402


# --- schedule -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("t, expected", [
    (0, 1e-2),
    (500, 5e-3),
    (1000, 0.0),
    (250, 1e-2 * (1 + math.cos(math.pi / 4)) / 2),   # 0.0085355...
    (750, 1e-2 * (1 - math.cos(math.pi / 4)) / 2),   # 0.0014644...
])
def test_cosine_lr_hand_computed(t, expected):
    assert cosine_lr(1e-2, t, 1000) == pytest.approx(expected, abs=1e-15)
    assert cosine_lr(1e-2, 250, 1000) == pytest.approx(0.008535533905932738, rel=1e-12)


def test_cosine_lr_clips_outside_the_run():
    assert cosine_lr(1e-2, -5, 10) == pytest.approx(1e-2)
    assert cosine_lr(1e-2, 15, 10) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        cosine_lr(1e-2, 0, 0)


def test_scheduler_sets_lr_per_epoch_like_nnunet():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = CosineLRScheduler(opt, 1e-2, 4)
    seen = []
    for epoch in (0, 1, 2, 3):  # nnU-Net calls step(current_epoch) at every epoch start
        sched.step(epoch)
        seen.append(opt.param_groups[0]["lr"])
    assert seen == pytest.approx([1e-2, 1e-2 * (1 + math.cos(math.pi / 4)) / 2, 5e-3,
                                  1e-2 * (1 + math.cos(3 * math.pi / 4)) / 2])
    sched.step(2)  # resuming at epoch 2 needs no scheduler state
    assert opt.param_groups[0]["lr"] == pytest.approx(5e-3)


# --- trainer -----------------------------------------------------------------------------------------------
def _plans(patch=(32, 32, 32), preset="demo"):
    from pedtumorseg_train.planning import topology_for_patch
    strides, kernels, patch = topology_for_patch([2.5, 2.5, 2.5], list(patch))
    zscore = ["ZScoreNormalization"] * 4
    return {
        "dataset_name": "Dataset999_Unit", "plans_name": "PedTumorSegPlans_demo",
        "original_median_spacing_after_transp": [2.5, 2.5, 2.5], "original_median_shape_after_transp": [60, 70, 56],
        "image_reader_writer": "SimpleITKIO", "transpose_forward": [0, 1, 2], "transpose_backward": [0, 1, 2],
        "experiment_planner_used": "ExperimentPlanner", "label_manager": "LabelManager",
        "foreground_intensity_properties_per_channel": {},
        "configurations": {"3d_fullres": {
            "data_identifier": "PedTumorSegPlans_demo_3d_fullres", "preprocessor_name": "DefaultPreprocessor",
            "batch_size": 2, "patch_size": patch, "median_image_size_in_voxels": [60, 70, 56],
            "spacing": [2.5, 2.5, 2.5], "normalization_schemes": zscore, "use_mask_for_norm": [True] * 4,
            "resampling_fn_data": "resample_data_or_seg_to_shape", "resampling_fn_seg": "resample_data_or_seg_to_shape",
            "resampling_fn_data_kwargs": {}, "resampling_fn_seg_kwargs": {},
            "resampling_fn_probabilities": "resample_data_or_seg_to_shape", "resampling_fn_probabilities_kwargs": {},
            "architecture": {"network_class_name": NETWORK_CLASS,
                             "arch_kwargs": network_kwargs(preset, strides=strides, kernel_sizes=kernels),
                             "_kw_requires_import": []},
            "batch_dice": False}},
        "continue_training": False,
    }


DATASET_JSON = {"channel_names": {"0": "T1", "1": "T1CE", "2": "T2", "3": "FLAIR"},
                "labels": {"background": 0, "ET": 1, "NET": 2, "CC": 3, "ED": 4}, "numTraining": 0,
                "file_ending": ".nii.gz"}


@pytest.fixture()
def trainer(tmp_path, monkeypatch):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    from pedtumorseg_train.trainer import PedTumorSegTrainer
    t = PedTumorSegTrainer(_plans(), "3d_fullres", 0, DATASET_JSON, device=torch.device("cpu"))
    t.network = t.build_network_architecture(t.plans_manager, t.configuration_manager, 4,
                                             t.label_manager.num_segmentation_heads, t.enable_deep_supervision)
    return t


def test_optimizer_settings(trainer):
    opt, sched = trainer.configure_optimizers()
    assert type(opt) is torch.optim.SGD
    g = opt.param_groups[0]
    assert g["lr"] == pytest.approx(1e-2)
    assert g["momentum"] == pytest.approx(0.99)
    assert g["weight_decay"] == pytest.approx(3e-5)
    assert g["nesterov"] is True
    assert isinstance(sched, CosineLRScheduler) and sched.max_epochs == 1000
    assert sum(p.numel() for p in g["params"]) == sum(p.numel() for p in trainer.network.parameters())


def test_configure_changes_settings_and_rejects_unknown(trainer):
    trainer.configure(num_epochs=10, initial_lr=0.02, momentum=0.9, nesterov=False, weight_decay=1e-4,
                      loss_kwargs={"theta": 0.5})
    opt, sched = trainer.configure_optimizers()
    g = opt.param_groups[0]
    assert (g["lr"], g["momentum"], g["weight_decay"], g["nesterov"]) == (0.02, 0.9, 1e-4, False)
    assert sched.max_epochs == 10
    sched.step(5)
    assert g["lr"] == pytest.approx(0.01)
    assert trainer.loss_kwargs["theta"] == 0.5 and trainer.loss_kwargs["w_dice"] == 1.0
    with pytest.raises(KeyError):
        trainer.configure(learning_rate=1.0)


def test_defaults_are_the_paper_schedule(trainer):
    assert (trainer.num_epochs, trainer.num_iterations_per_epoch) == (1000, 250)
    assert trainer.configuration_manager.batch_size == 2


def test_loss_is_ours_with_nnunet_deep_supervision_weights(trainer):
    loss = trainer._build_loss()
    assert isinstance(loss, DeepSupervisionLoss)
    assert isinstance(loss.loss, PedTumorSegLoss)
    assert loss.loss.theta == pytest.approx(0.1) and loss.loss.w_dice == 1.0 and loss.loss.w_ce == 1.0
    # nnU-Net: 1/2^i per output, lowest resolution 0, normalized (here 4 stages -> 3 outputs: 1, .5, 0)
    n = len(trainer._get_deep_supervision_scales())
    raw = np.array([1 / 2 ** i for i in range(n)])
    raw[-1] = 0
    assert loss.weights == pytest.approx(list(raw / raw.sum()))
    # and it runs on the network's deep-supervision outputs
    x = torch.randn(2, 4, 32, 32, 32)
    outs = trainer.network(x)
    assert isinstance(outs, (list, tuple)) and len(outs) == n
    targets = [torch.randint(0, 5, (2, 1) + tuple(o.shape[2:])).float() for o in outs]
    value = loss(outs, targets)
    assert torch.isfinite(value)
    value.backward()


def _spatial_transforms(pipeline):
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    found, stack = [], [pipeline]
    while stack:
        t = stack.pop()
        if isinstance(t, SpatialTransform):
            found.append(t)
        stack.extend(getattr(t, "transforms", []) or [])
        if getattr(t, "transform", None) is not None:
            stack.append(t.transform)
    return found


def test_training_transforms_include_elastic_deformation(trainer):
    import pickle
    from pedtumorseg_train.schedule import DEFAULTS
    from pedtumorseg_train.trainer import ELASTIC_SCALE, elastic_magnitude
    args = ((32, 32, 32), (-0.5, 0.5), None, (0, 1, 2), False)
    pipeline = trainer.get_training_transforms(*args, use_mask_for_norm=[True] * 4)
    (spatial,) = _spatial_transforms(pipeline)
    assert DEFAULTS["p_elastic_deform"] == 0.2 and spatial.p_elastic_deform == 0.2
    assert spatial.elastic_deform_scale == ELASTIC_SCALE and spatial.elastic_deform_magnitude is elastic_magnitude
    # nnU-Net's own pipeline has it off: this is what the trainer changes
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    (plain,) = _spatial_transforms(nnUNetTrainer.get_training_transforms(*args, use_mask_for_norm=[True] * 4))
    assert plain.p_elastic_deform == 0
    # configurable (0 = nnU-Net's pipeline) and picklable into nnU-Net's augmentation worker processes
    trainer.configure(p_elastic_deform=0.0)
    (off,) = _spatial_transforms(trainer.get_training_transforms(*args))
    assert off.p_elastic_deform == 0.0
    pickle.loads(pickle.dumps(pipeline))
    # elastic displacement bound: U(0, 0.25) x sigma (voxels), sigma = scale x patch edge
    np.random.seed(0)
    mags = [elastic_magnitude(patch_size=(32, 48, 64), dim=2, deformation_scale=0.2) for _ in range(200)]
    assert 0 <= min(mags) and max(mags) <= 0.25 * 0.2 * 64 and max(mags) > 0.8 * 0.25 * 0.2 * 64


def test_elastic_deformation_runs_and_moves_labels(trainer):
    torch.manual_seed(0)
    np.random.seed(0)
    from pedtumorseg_train.trainer import enable_elastic_deformation
    from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
    t = enable_elastic_deformation(SpatialTransform((24, 24, 24), 0, False), 1.0)
    seg = torch.zeros(1, 24, 24, 24)
    seg[:, 8:16, 8:16, 8:16] = 1
    img = seg.clone().repeat(4, 1, 1, 1)
    out = t(image=img, segmentation=seg)
    assert out["image"].shape == (4, 24, 24, 24) and out["segmentation"].shape == (1, 24, 24, 24)
    assert not torch.equal(out["segmentation"], seg)  # deformed
    assert set(torch.unique(out["segmentation"]).tolist()) <= {0.0, 1.0}


def test_network_is_ours_with_small_scale_init(trainer):
    net = trainer.network
    assert isinstance(net, PedTumorSegNet)
    alpha = trainer.configuration_manager.network_arch_init_kwargs["init_alpha"]
    assert alpha == net.init_alpha
    # the largest conv's empirical weight std matches (2/fan_in)^(alpha/2)
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv3d)]
    big = max(convs, key=lambda m: m.weight.numel())
    assert big.weight.numel() > 2000
    expected = init_std(conv_fan_in(big), alpha)
    assert float(big.weight.detach().std()) == pytest.approx(expected, rel=0.1)
    assert float(big.weight.detach().mean()) == pytest.approx(0.0, abs=expected * 0.1)
    # a He-initialized (alpha = 1) conv would be visibly larger
    assert expected < init_std(conv_fan_in(big), 1.0) * 0.95


def test_init_alpha_from_plans_changes_the_network(monkeypatch, tmp_path):
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    from pedtumorseg_train.trainer import PedTumorSegTrainer
    plans = _plans()
    plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]["init_alpha"] = 2.0
    t = PedTumorSegTrainer(plans, "3d_fullres", 0, DATASET_JSON, device=torch.device("cpu"))
    net = t.build_network_architecture(t.plans_manager, t.configuration_manager, 4, 5, True)
    assert net.init_alpha == 2.0


def test_plans_customization_uses_nnunet_topology_for_the_patch():
    from pedtumorseg_train.planning import customize_configuration
    config = _plans((64, 80, 56))["configurations"]["3d_fullres"]
    ours = customize_configuration(config, "demo", patch_size=[40, 48, 48])
    arch = ours["architecture"]
    assert arch["network_class_name"] == NETWORK_CLASS and arch["_kw_requires_import"] == []
    assert ours["batch_size"] == 2
    strides = arch["arch_kwargs"]["strides"]
    total = np.prod(np.array(strides), axis=0)
    assert all(p % s == 0 for p, s in zip(ours["patch_size"], total))
    assert ours["patch_size"] == [40, 48, 48]  # 40 = 5 * 8 is already divisible by the 3 z pools
    assert len(arch["arch_kwargs"]["decoder_widths"]) == len(strides)
    net = PedTumorSegNet(4, 5, **arch["arch_kwargs"])
    out = net(torch.zeros(1, 4, *ours["patch_size"]))
    assert tuple(out.shape) == (1, 5, *ours["patch_size"])


def test_cli_parser_defaults_match_the_paper():
    from pedtumorseg_train.cli import build_parser
    a = build_parser().parse_args(["train", "--dataset-id", "1", "--fold", "all"])
    assert (a.epochs, a.iterations, a.lr, a.momentum, a.weight_decay, a.theta) == (1000, 250, 1e-2, 0.99, 3e-5, 0.1)
    assert a.fold == "all" and a.device == "cpu"
    assert a.w_hd == 1.0 and a.p_elastic_deform == 0.2
    assert (a.encoder_width_factor, a.se, a.separable, a.init_alpha, a.tag) == (None, None, None, None, None)
    a = build_parser().parse_args(["train", "--dataset-id", "1", "--fold", "3"])
    assert a.fold == 3


def test_setup_environment_sets_nnunet_variables(tmp_path, monkeypatch):
    from pedtumorseg_train.cli import setup_environment
    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results", "nnUNet_n_proc_DA"):
        monkeypatch.delenv(var, raising=False)
    env = setup_environment(str(tmp_path / "w"), num_workers=0)
    assert env["nnUNet_raw"] == str((tmp_path / "w" / "nnUNet_raw").resolve())
    assert os.path.isdir(env["nnUNet_results"]) and env["nnUNet_n_proc_DA"] == "0"
    from nnunetv2.paths import nnUNet_preprocessed
    assert str(nnUNet_preprocessed) == env["nnUNet_preprocessed"]


def test_cpu_training_uses_channels_last_with_the_same_outputs(tmp_path, monkeypatch):
    """On the CPU the trainer keeps the weights channels-last (oneDNN's fast layout for the depthwise convs); the
    network computes the same function, and the optimizer still holds the very same parameters."""
    import copy

    for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"):
        monkeypatch.setenv(var, str(tmp_path / var))
    data = tmp_path / "nnUNet_preprocessed" / "Dataset999_Unit" / "PedTumorSegPlans_demo_3d_fullres"
    data.mkdir(parents=True)
    (data / "case.b2nd").touch()  # nnU-Net infers its dataset class from the file ending
    from pedtumorseg_train.trainer import PedTumorSegTrainer
    t = PedTumorSegTrainer(_plans(), "3d_fullres", 0, DATASET_JSON, device=torch.device("cpu"))
    t.initialize()
    depthwise = [m for m in t.network.modules() if isinstance(m, torch.nn.Conv3d) and m.groups > 1]
    assert depthwise and all(m.weight.is_contiguous(memory_format=torch.channels_last_3d) for m in depthwise)
    assert {id(p) for g in t.optimizer.param_groups for p in g["params"]} == {id(p) for p in t.network.parameters()}
    reference = copy.deepcopy(t.network).to(memory_format=torch.contiguous_format).eval()
    t.network.eval()
    x = torch.randn(1, 4, *t.configuration_manager.patch_size)
    with torch.no_grad():
        for a, b in zip(t.network(x), reference(x)):
            assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
