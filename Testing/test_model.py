"""Tests of PedTumorSegNet, its blocks, the small-scale init and the presets (issue #3)."""

from __future__ import annotations

import io
import json
import time

import pytest
import torch
from torch import nn

from pedtumorseg.model import PRESETS, PedTumorSegNet, build_network, network_kwargs, small_scale_init_
from pedtumorseg.model.blocks import ConvUnit, DropPath, ResidualSEBlock, SqueezeExcite
from pedtumorseg.model.init import DEFAULT_ALPHA, conv_fan_in, init_std
from pedtumorseg.model.presets import NETWORK_CLASS

torch.set_num_threads(2)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def paper_net():
    torch.manual_seed(0)
    return build_network(NETWORK_CLASS, network_kwargs("paper"), 4, 5).eval()


# --- SE ----------------------------------------------------------------------------------------------------
def test_se_hidden_width_is_channels_over_16():
    assert SqueezeExcite(64).hidden == 4
    assert SqueezeExcite(640).hidden == 40
    assert SqueezeExcite(64).fc1.out_channels == 4
    assert SqueezeExcite(8).hidden == 1  # 8 // 16 = 0 -> at least 1


@pytest.mark.parametrize("axis", [2, 3, 4])
def test_se_squeeze_is_global_over_all_three_axes(axis):
    """Changing slice 0 along any one spatial axis changes the gate applied at slice 3 of that axis.
    A squeeze that pools over only two axes keeps one gate per slice of the third and fails for that axis."""
    torch.manual_seed(1)
    se = SqueezeExcite(32).eval()
    x = torch.rand(1, 32, 4, 4, 4) + 0.5
    x2 = x.clone()
    x2.select(axis, 0).add_(3.0)  # only slice 0 changes
    with torch.no_grad():
        ratio = se(x) / x
        ratio2 = se(x2) / x2
    far = ratio.select(axis, 3)
    far2 = ratio2.select(axis, 3)
    assert torch.equal(x.select(axis, 3), x2.select(axis, 3))
    assert (far - far2).abs().max() > 1e-4
    # gate is one value per channel (same on every voxel) and equals sigmoid(fc2(relu(fc1(mean))))
    assert torch.allclose(ratio, ratio[..., :1, :1, :1].expand_as(ratio), atol=1e-6)
    with torch.no_grad():
        m = x.mean(dim=(2, 3, 4), keepdim=True)
        expected = torch.sigmoid(se.fc2(torch.relu(se.fc1(m))))
    assert torch.allclose(ratio[..., :1, :1, :1], expected, atol=1e-6)


# --- DropPath ------------------------------------------------------------------------------------------------
def test_droppath_identity_in_eval():
    dp = DropPath(0.05).eval()
    x = torch.randn(16, 3, 2, 2, 2)
    assert torch.equal(dp(x), x)


def test_droppath_drops_whole_samples_at_rate_p_and_rescales():
    torch.manual_seed(2)
    p, n = 0.05, 40000
    dp = DropPath(p).train()
    x = torch.ones(n, 2, 1, 1, 3)
    y = dp(x)
    per_sample = y.reshape(n, -1)
    # whole samples: every element of a sample is the same
    assert torch.equal(per_sample.min(1).values, per_sample.max(1).values)
    vals = per_sample[:, 0]
    dropped = (vals == 0).float().mean().item()
    # binomial std sqrt(0.05*0.95/40000) = 0.00109; tolerance 0.005 is > 4.5 sigma
    assert abs(dropped - p) < 0.005
    survivors = vals[vals != 0]
    assert torch.equal(survivors, torch.full_like(survivors, 1.0 / (1.0 - p)))  # exactly 1/0.95


# --- conv units --------------------------------------------------------------------------------------------
def test_separable_unit_parameter_count_and_order():
    u = ConvUnit(8, 16, 3, separable=True)
    # depthwise k^3*C_in = 27*8 = 216, pointwise C_in*C_out = 8*16 = 128, no conv biases,
    # InstanceNorm affine: 2*8 (after depthwise) + 2*16 (after pointwise) = 48  -> 392
    assert n_params(u) == 216 + 128 + 48 == 392
    kinds = [type(m) for m in u]
    assert kinds == [nn.Conv3d, nn.InstanceNorm3d, nn.LeakyReLU, nn.Conv3d, nn.InstanceNorm3d, nn.LeakyReLU]
    assert u[0].groups == 8 and u[0].kernel_size == (3, 3, 3)
    assert u[3].kernel_size == (1, 1, 1) and u[3].groups == 1
    assert u[2].negative_slope == 0.01 and u[1].affine
    dense = ConvUnit(8, 16, 3, separable=False)
    assert n_params(dense) == 27 * 8 * 16 + 2 * 16 == 3488


def test_separable_unit_has_activation_between_the_convs():
    torch.manual_seed(3)
    u = ConvUnit(4, 6, 3, separable=True, final_act=False).eval()
    x = torch.randn(1, 4, 5, 5, 5)
    with torch.no_grad():
        out = u(x)
        h = nn.functional.conv3d(x, u[0].weight, None, 1, 1, 1, 4)
        h = nn.functional.instance_norm(h, weight=u[1].weight, bias=u[1].bias, eps=1e-5)
        h = nn.functional.leaky_relu(h, 0.01)
        h = nn.functional.conv3d(h, u[3].weight)
        manual = nn.functional.instance_norm(h, weight=u[4].weight, bias=u[4].bias, eps=1e-5)
        assert torch.allclose(out, manual, atol=1e-5)
        u[2] = nn.Identity()  # remove the middle activation: the output must change
        assert (u(x) - out).abs().max() > 1e-3


def test_residual_block_formula():
    torch.manual_seed(4)
    blk = ResidualSEBlock(32, separable=True).eval()
    x = torch.randn(2, 32, 4, 4, 4)
    with torch.no_grad():
        f = blk.branch(x)
        expected = nn.functional.leaky_relu(x + blk.se(f), 0.01)
        assert torch.allclose(blk(x), expected, atol=1e-6)
    # second unit of F has no final activation before the add
    assert not isinstance(blk.branch[1][-1], nn.LeakyReLU)
    assert isinstance(blk.branch[0][-1], nn.LeakyReLU)


# --- network structure -----------------------------------------------------------------------------------
def test_tiny_network_parameter_count_by_hand():
    net = PedTumorSegNet(2, 3, decoder_widths=[2, 4], strides=[1, 2], blocks_per_stage=[1, 1],
                         decoder_convs_per_stage=1)
    # encoder widths 4, 8.  stem dense Conv3d(2,4,3) 27*2*4=216 + IN 8                          = 224
    # stage-0 block C=4: 2 separable units (dw 108 + IN 8 + pw 16 + IN 8 = 140) = 280
    #                    + SE hidden 1: fc1 4+1, fc2 4+4 = 13                                       = 293
    # stage-1 down: dw 27*4=108 + IN 8 + pw 4*8=32 + IN 16                                          = 164
    # stage-1 block C=8: 2 units (dw 216 + IN 16 + pw 64 + IN 16 = 312) = 624 + SE fc1 8+1, fc2 8+8 = 649
    # decoder: ConvTranspose3d(8,2,k=s=2) 8*2*8 = 128; unit (2+4=6 -> 2): dw 162 + IN 12 + pw 12 + IN 4 = 190;
    #          head Conv3d(2,3,1) 6 + bias 3 = 9
    assert n_params(net) == 224 + 293 + 164 + 649 + 128 + 190 + 9 == 1657


def test_paper_preset_structure(paper_net):
    net = paper_net
    assert net.encoder_widths == [64, 128, 256, 512, 640, 640]
    assert net.decoder_widths == [32, 64, 128, 256, 320, 320]
    for s, stage in enumerate(net.encoder.stages):
        blocks = [m for m in stage if isinstance(m, ResidualSEBlock)]
        assert len(blocks) == (1, 3, 4, 6, 6, 6)[s]
        first_conv = stage[0][0]
        assert first_conv.stride == ((1, 1, 1) if s == 0 else (2, 2, 2))
        enc_width = blocks[-1].branch[1][3].out_channels
        assert enc_width == net.encoder_widths[s]
    # decoder stage s (decoder.stages are deepest first) has exactly half the encoder width of stage s
    n = len(net.decoder_widths)
    for i, dstage in enumerate(net.decoder.stages):
        s = n - 2 - i
        dec_width = dstage[-1][3].out_channels
        assert net.encoder_widths[s] == 2 * dec_width == 2 * net.decoder_widths[s]
        assert len(dstage) == 2 and all(isinstance(u, ConvUnit) for u in dstage)
        assert dstage[0][0].in_channels == dec_width + net.encoder_widths[s]  # upsampled + skip
        up = net.decoder.upsample[i]
        assert isinstance(up, nn.ConvTranspose3d) and up.out_channels == dec_width
        assert up.in_channels == (net.encoder_widths[-1] if i == 0 else net.decoder_widths[s + 1])
    assert not any(isinstance(m, (ResidualSEBlock, SqueezeExcite, DropPath)) for m in net.decoder.modules())
    # drop path p and SE everywhere in the encoder
    assert {m.p for m in net.encoder.modules() if isinstance(m, DropPath)} == {0.05}


def test_paper_preset_parameter_count(paper_net):
    total = n_params(paper_net)
    assert 19_000_000 < total < 21_000_000  # measured 19,690,933 (benchmarks/model_report.py)


def test_anisotropic_strides_and_deep_supervision_shapes():
    net = PedTumorSegNet(4, 5, True, decoder_widths=[4, 8, 8], strides=[1, [1, 2, 2], [2, 2, 2]],
                         kernel_sizes=[[1, 3, 3], 3, 3], blocks_per_stage=1).eval()
    assert net.encoder.stages[1][0][0].stride == (1, 2, 2)
    assert net.encoder.stages[0][0][0].kernel_size == (1, 3, 3)
    with torch.no_grad():
        out = net(torch.randn(2, 4, 8, 16, 16))
    assert [tuple(o.shape) for o in out] == [(2, 5, 8, 16, 16), (2, 5, 8, 8, 8)]
    net.decoder.deep_supervision = False
    with torch.no_grad():
        assert net(torch.randn(1, 4, 8, 16, 16)).shape == (1, 5, 8, 16, 16)


def test_demo_preset_shapes_and_size():
    torch.manual_seed(5)
    net = build_network(NETWORK_CLASS, network_kwargs("demo"), 4, 5, deep_supervision=True).eval()
    with torch.no_grad():
        out = net(torch.randn(1, 4, 64, 64, 64))
        assert [tuple(o.shape) for o in out] == [(1, 5, 64 // f, 64 // f, 64 // f) for f in (1, 2, 4, 8)]
        net.decoder.deep_supervision = False
        assert net(torch.randn(1, 4, 96, 96, 64)).shape == (1, 5, 96, 96, 64)
    from safetensors.torch import save
    size = len(save({k: v.contiguous() for k, v in net.state_dict().items()}))
    assert size < 2_000_000, size  # well under 10 MB (measured ~1.5 MB)


def test_dense_variant_switch():
    kw = network_kwargs("demo")
    kw.update(depthwise_separable=False, decoder_separable=False)
    net = PedTumorSegNet(4, 5, **kw)
    assert not any(m.groups > 1 for m in net.modules() if isinstance(m, nn.Conv3d))
    sep = PedTumorSegNet(4, 5, **network_kwargs("demo"))
    assert n_params(net) > 5 * n_params(sep)


# --- init ------------------------------------------------------------------------------------------------
def test_fan_in_definitions():
    assert conv_fan_in(nn.Conv3d(64, 64, 3, groups=64)) == 27  # depthwise: k^3
    assert conv_fan_in(nn.Conv3d(4, 64, 3)) == 108
    assert conv_fan_in(nn.Conv3d(64, 128, 1)) == 64
    assert conv_fan_in(nn.ConvTranspose3d(640, 320, 2, 2)) == 640  # kernel == stride: C_in
    assert conv_fan_in(nn.ConvTranspose3d(8, 4, 4, 2)) == 8 * 8  # (4/2)^3 taps per input channel
    assert conv_fan_in(nn.Conv3d(8, 4, (1, 3, 3))) == 72


def test_init_std_formula():
    # (2/27)^(1.2/2): ln(2/27) = 0.693147 - 3.295837 = -2.602690; *0.6 = -1.561614;
    # exp(-1.561614) = e^-1.5 * e^-0.061614 = 0.223130 * 0.940246 = 0.209797
    assert init_std(27, 1.2) == pytest.approx(0.209797, rel=1e-5)
    # alpha = 1 is He: sqrt(2/128) = 0.125
    assert init_std(128, 1.0) == pytest.approx(0.125)
    assert DEFAULT_ALPHA == 1.2


def test_small_scale_init_empirical_std(paper_net):
    """Every conv layer with >= 4096 weights: empirical std within 5% of (2/fan_in)^(alpha/2).
    (relative standard error of a std estimate ~ 1/sqrt(2n) = 1.1% at n = 4096)."""
    checked = set()
    for m in paper_net.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            if m.bias is not None:
                assert torch.count_nonzero(m.bias) == 0
            if m.weight.numel() >= 4096:
                std = m.weight.std().item()
                expected = (2.0 / conv_fan_in(m)) ** (DEFAULT_ALPHA / 2)
                assert abs(std / expected - 1) < 0.05, (m, std, expected)
                checked.add(type(m).__name__ + ("_dw" if m.groups > 1 else ""))
    assert checked == {"Conv3d", "Conv3d_dw", "ConvTranspose3d"}


def test_initialize_uses_init_alpha_kwarg():
    torch.manual_seed(6)
    net = PedTumorSegNet(4, 5, decoder_widths=[16, 32], blocks_per_stage=1, init_alpha=2.0)
    pw = net.encoder.stages[1][1].branch[0][3]  # pointwise 64 -> 64, fan_in 64
    assert pw.weight.std().item() == pytest.approx(2.0 / 64, rel=0.05)  # (2/64)^(2/2)
    net.init_alpha = 1.0
    net.apply(net.initialize)
    assert pw.weight.std().item() == pytest.approx((2.0 / 64) ** 0.5, rel=0.05)
    conv = nn.Conv3d(32, 32, 3, bias=True)
    small_scale_init_(conv, 1.0)
    assert torch.count_nonzero(conv.bias) == 0
    assert conv.weight.std().item() == pytest.approx((2 / 864) ** 0.5, rel=0.05)


# --- presets --------------------------------------------------------------------------------------------------
def test_presets_are_json_and_overridable():
    for name in PRESETS:
        kw = network_kwargs(name)
        assert json.loads(json.dumps(kw)) == kw
    kw = network_kwargs("paper", strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [1, 2, 2], [2, 2, 2]],
                        kernel_sizes=[[3, 3, 3]] * 5)
    assert kw["decoder_widths"] == [32, 64, 128, 256, 320]
    assert kw["blocks_per_stage"] == [1, 3, 4, 6, 6]
    json.dumps(kw)
    kw7 = network_kwargs("demo", strides=[1, 2, 2, 2, 2, 2, 2])
    assert kw7["decoder_widths"] == [8, 16, 32, 64, 64, 64, 64]
    with pytest.raises(KeyError):
        network_kwargs("nope")
    with pytest.raises(ValueError):
        network_kwargs("demo", strides=[1, 2], kernel_sizes=[3])


def test_build_network_refuses_unknown_classes():
    with pytest.raises(ValueError, match="not allowed"):
        build_network("torch.nn.Linear", {}, 4, 5)
    with pytest.raises(ValueError, match="not allowed"):
        build_network("os.system", {}, 4, 5)


def test_state_dict_roundtrip_between_builds():
    a = build_network(NETWORK_CLASS, network_kwargs("demo"), 4, 5)
    b = build_network(NETWORK_CLASS, network_kwargs("demo"), 4, 5, deep_supervision=True)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf))  # deep supervision does not change the parameter set
    b.decoder.deep_supervision = False
    x = torch.randn(1, 4, 32, 32, 32)
    with torch.no_grad():
        assert torch.allclose(a.eval()(x), b.eval()(x), atol=1e-5)


# --- nnU-Net compatibility -----------------------------------------------------------------------------------
def test_nnunet_builds_our_network():
    from nnunetv2.utilities.get_network_from_plans import get_network_from_plans

    kwargs = network_kwargs("demo", strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2], [2, 2, 2]],
                            kernel_sizes=[[3, 3, 3]] * 4)
    net = get_network_from_plans(NETWORK_CLASS, kwargs, [], 4, 5, deep_supervision=True)
    assert isinstance(net, PedTumorSegNet)
    with torch.no_grad():
        out = net(torch.randn(2, 4, 32, 32, 32))
    assert isinstance(out, list) and [tuple(o.shape) for o in out] == [(2, 5, 32, 32, 32), (2, 5, 16, 16, 16),
                                                                        (2, 5, 8, 8, 8)]
    net.decoder.deep_supervision = False
    with torch.no_grad():
        assert net(torch.randn(1, 4, 32, 32, 32)).shape == (1, 5, 32, 32, 32)


def test_core_does_not_import_nnunet():
    import pathlib

    import pedtumorseg
    root = pathlib.Path(pedtumorseg.__file__).parent
    for f in list((root / "model").glob("*.py")):
        text = f.read_text()
        for banned in ("import nnunetv2", "from nnunetv2", "import dynamic_network_architectures",
                       "from dynamic_network_architectures"):
            assert banned not in text, (f, banned)


# --- the paper preset forward -------------------------------------------------------------------------------
@pytest.mark.slow
def test_paper_preset_forward_128(paper_net):
    x = torch.randn(1, 4, 128, 128, 128)
    t = time.time()
    with torch.no_grad():
        y = paper_net(x)
    assert y.shape == (1, 5, 128, 128, 128)
    assert torch.isfinite(y).all()
    print(f"paper preset 1x4x128^3 forward: {time.time() - t:.1f} s")


# --- benchmark script ------------------------------------------------------------------------------------------
def test_model_report_counts_agree():
    import importlib.util
    import pathlib

    path = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "model_report.py"
    spec = importlib.util.spec_from_file_location("model_report", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    row = mod.report("demo", network_kwargs("demo"), (32, 32, 32))
    assert row["flops"] == 2 * row["conv_macs_hooks"] > 0
    assert row["params_total"] == row["params_encoder"] + row["params_decoder"] == 363_159
    assert row["output_shape"] == [1, 5, 32, 32, 32]
    # hand check of the hook formula on one layer: Conv3d(4,8,3) on 1x4x8^3 -> 8^3*8 outputs * 4*27 taps
    conv = nn.Conv3d(4, 8, 3, padding=1)
    assert mod.hook_macs(conv, torch.zeros(1, 4, 8, 8, 8)) == 512 * 8 * 108
    up = nn.ConvTranspose3d(8, 4, 2, 2)
    assert mod.hook_macs(up, torch.zeros(1, 8, 4, 4, 4)) == 64 * 8 * 4 * 8
