"""The model family: exact parameter counts, shapes of every head, options, and errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from hrnet_jax.models import ArchSpec, StageSpec, create_model, tiny_arch
from hrnet_jax.models.layers import resize_bilinear, upsample_nearest
from hrnet_jax.models.summary import count_params, main as summary_main, summarize

from conftest import relative_error

# shared/DESIGN.md, checked against the reference code.
PARAM_COUNTS = [
    ("hrnet_w18_small", "classification", None, 13_187_464),
    ("hrnet_w18_small_v2", "classification", None, 15_597_464),
    ("hrnet_w18", "classification", None, 21_299_004),
    ("hrnet_w30", "classification", None, 37_712_220),
    ("hrnet_w32", "classification", None, 41_232_680),
    ("hrnet_w40", "classification", None, 57_557_160),
    ("hrnet_w44", "classification", None, 67_064_984),
    ("hrnet_w48", "classification", None, 77_469_864),
    ("hrnet_w64", "classification", None, 128_059_944),
    ("hrnet_w18", None, None, 9_562_260),
    ("hrnet_w32", None, None, 29_305_536),
    ("hrnet_w48", None, None, 65_325_120),
    ("hrnet_w18_small", "segmentation", 19, 1_540_819),
    ("hrnet_w18_small_v2", "segmentation", 19, 3_939_579),
    ("hrnet_w18", "segmentation", 19, 9_641_119),
    ("hrnet_w32", "segmentation", 19, 29_546_515),
    ("hrnet_w48", "segmentation", 19, 65_859_379),
    ("hrnet_w32", "pose", 17, 28_536_113),
    ("hrnet_w48", "pose", 17, 63_595_745),
]


def abstract_init(model, size=(64, 64)):
    return jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3)),
                                             train=False))


@pytest.mark.parametrize("arch,head,classes,expected", PARAM_COUNTS)
def test_parameter_count_is_exact(arch, head, classes, expected):
    assert count_params(abstract_init(create_model(arch, head, classes))) == expected


def test_landmark_and_pyramid_heads_count_what_the_papers_build():
    # Landmarks: the segmentation head with 98 outputs (W18: 270 -> 270 -> 98, 1x1 convs, bias).
    backbone = 9_562_260
    assert count_params(abstract_init(create_model("hrnet_w18", "landmarks", 98))) == (
        backbone + 270 * 270 + 270 + 2 * 270 + 270 * 98 + 98)
    # HRFPN: 1x1 conv 270 -> 256 with bias, five 3x3 convs 256 -> 256 with bias.
    assert count_params(abstract_init(create_model("hrnet_w18", "pyramid"))) == (
        backbone + 270 * 256 + 256 + 5 * (9 * 256 * 256 + 256))


# The official "GFLOPs" (multiply-adds / 2^30) of the papers' tables, to 1%.
@pytest.mark.parametrize("arch,head,size,official", [
    ("hrnet_w48", "segmentation", (1024, 2048), 696.2),
    ("hrnet_w32", "pose", (256, 192), 7.1),
    ("hrnet_w48", "pose", (384, 288), 32.9),
    ("hrnet_w18", "classification", (224, 224), 3.99),
])
def test_official_gflops(arch, head, size, official):
    info = summarize(arch, head, size)
    assert abs(info["gflops_official"] - official) / official < 0.01


def test_summary_cli_prints_params_and_gflops(capsys):
    summary_main(["hrnet_w18", "--head", "classification", "--size", "224x224"])
    out = capsys.readouterr().out
    assert "21,299,004 parameters" in out and "3.99 official GFLOPs" in out


def quick_variables(model, x) -> dict:
    """Variables of the model's shapes filled on the host as an initialiser would (He-scaled
    kernels, unit BatchNorm): compiling `model.init` costs seconds a head, this nothing."""
    rng = np.random.RandomState(0)

    def fill(path, leaf):
        name = path[-1].key
        if name == "kernel":
            return rng.randn(*leaf.shape).astype(np.float32) * np.sqrt(2 / np.prod(leaf.shape[:-1]))
        return (np.ones if name in ("scale", "var") else np.zeros)(leaf.shape, np.float32)

    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), x, train=False))
    return jax.tree_util.tree_map_with_path(fill, shapes)


@pytest.fixture(scope="module")
def tiny_outputs():
    """Every head of a tiny HRNet run at 90x110, a size no 32-multiple."""
    x = jnp.asarray(np.random.RandomState(0).rand(2, 90, 110, 3), jnp.float32)
    outs = {}
    for head, classes in [(None, None), ("classification", 10), ("segmentation", 19),
                          ("pose", 17), ("landmarks", 98), ("pyramid", None)]:
        model = create_model(tiny_arch(), head, classes, upsample="bilinear")
        variables = quick_variables(model, x[:1])
        outs[head or "features"] = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))(variables, x)
    return outs


def test_heads_take_any_size_with_bilinear_upsampling(tiny_outputs):
    # 90x110 -> stem 23x28 (ceil quarter), then 12x14, 6x7, 3x4.
    assert [f.shape for f in tiny_outputs["features"]] == [
        (2, 23, 28, 4), (2, 12, 14, 8), (2, 6, 7, 16), (2, 3, 4, 32)]
    assert tiny_outputs["classification"].shape == (2, 10)
    assert tiny_outputs["segmentation"].shape == (2, 23, 28, 19)
    assert tiny_outputs["pose"].shape == (2, 23, 28, 17)
    assert tiny_outputs["landmarks"].shape == (2, 23, 28, 98)
    # Pyramid: 256 channels, average-pooled by 1, 2, 4, 8, 16 (floor).
    assert [f.shape for f in tiny_outputs["pyramid"]] == [
        (2, 23, 28, 256), (2, 11, 14, 256), (2, 5, 7, 256), (2, 2, 3, 256), (2, 1, 1, 256)]
    for out in jax.tree.leaves(tiny_outputs):
        assert np.isfinite(np.asarray(out)).all()


def test_logits_upsample_to_the_input_size(tiny_outputs):
    logits = resize_bilinear(tiny_outputs["segmentation"], (90, 110))
    assert logits.shape == (2, 90, 110, 19)


def test_nearest_upsampling_rejects_sizes_not_divisible_by_32_naming_valid_ones():
    model = create_model("hrnet_w18", "classification")
    with pytest.raises(ValueError) as error:
        abstract_init(model, (250, 300))
    message = str(error.value)
    assert "250x300" in message
    for valid in ("224x288", "224x320", "256x288", "256x320"):
        assert valid in message
    assert "bilinear" in message


def test_head_defaults_follow_the_papers():
    assert create_model("hrnet_w18", "segmentation").layers.upsample == "bilinear"
    assert create_model("hrnet_w18", "segmentation").layers.bn_momentum == 0.99  # torch 0.01
    assert create_model("hrnet_w18", "landmarks").layers.upsample == "bilinear"
    assert create_model("hrnet_w18", "pose").layers.upsample == "nearest"
    assert create_model("hrnet_w18", "classification").layers.bn_momentum == 0.9  # torch 0.1
    assert create_model("hrnet_w18", "classification").num_classes == 1000
    assert create_model("hrnet_w18", "segmentation", align_corners=True).layers.align_corners


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="hrnet_w18_small_v2"):
        create_model("hrnet_w19")
    with pytest.raises(ValueError, match="segmentation"):
        create_model("hrnet_w18", "segmentaion")
    with pytest.raises(ValueError, match="bn_momentum"):
        create_model("hrnet_w18", "segmentation", bn_mom=0.9)
    with pytest.raises(ValueError, match="nearest"):
        create_model("hrnet_w18", upsample="bicubic")


def test_bfloat16_compute_keeps_float32_parameters_and_statistics():
    x = jnp.asarray(np.random.RandomState(1).rand(2, 64, 64, 3), jnp.float32)
    model32 = create_model(tiny_arch(8), "segmentation", 5)
    model16 = create_model(tiny_arch(8), "segmentation", 5, dtype=jnp.bfloat16)
    init = lambda model: jax.jit(model.init, static_argnames="train")(jax.random.key(0), x,
                                                                       train=False)
    train = lambda model: jax.jit(lambda v: model.apply(v, x, train=True,
                                                        mutable=["batch_stats"]))(variables)
    variables = init(model32)
    assert {v.dtype for v in jax.tree.leaves(init(model16))} == {jnp.dtype(jnp.float32)}
    out32, state32 = train(model32)
    out16, state16 = train(model16)
    assert out16.dtype == jnp.bfloat16
    assert {v.dtype for v in jax.tree.leaves(state16)} == {jnp.dtype(jnp.float32)}
    # bf16 keeps ~3 significant digits; through ~40 layers the logits stay within a few percent.
    out16, out32 = np.asarray(out16, np.float64), np.asarray(out32, np.float64)
    assert np.linalg.norm(out16 - out32) / np.linalg.norm(out32) < 0.15
    assert np.corrcoef(out16.ravel(), out32.ravel())[0, 1] > 0.99
    assert relative_error(jax.tree.leaves(state16)[0], jax.tree.leaves(state32)[0]) < 0.05


@pytest.mark.parametrize("align_corners", [False, True])
@pytest.mark.parametrize("size_in,size_out", [((4, 6), (8, 12)), ((5, 7), (13, 9)), ((3, 3), (1, 1))])
def test_bilinear_resize_matches_torch_interpolate(align_corners, size_in, size_out):
    x = np.random.RandomState(0).randn(2, *size_in, 3).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), size=size_out,
                             mode="bilinear", align_corners=align_corners).permute(0, 2, 3, 1)
    assert relative_error(resize_bilinear(jnp.asarray(x), size_out, align_corners),
                          expected.numpy()) < 1e-6


def test_nearest_upsampling_matches_torch_and_has_no_gather():
    x = np.random.RandomState(0).randn(2, 4, 3, 5).astype(np.float32)
    expected = F.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=4,
                             mode="nearest").permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(upsample_nearest(jnp.asarray(x), (16, 12)), expected)
    hlo = jax.jit(jax.grad(lambda x: upsample_nearest(x, (16, 12)).sum())).lower(x).as_text()
    assert "gather" not in hlo and "scatter" not in hlo


# Modules and blocks to scan (tiny_arch has one of each): stage 2 scans its 2 modules and
# 2 blocks a branch, stage 3 its 3 modules (2 for pose, whose last module differs).
SCANNABLE = ArchSpec(8, 1, 8, (StageSpec(2, 2, (4, 8)), StageSpec(3, 1, (4, 8, 16))))


def test_scanned_modules_are_the_same_inference_with_the_same_variables():
    plain = create_model(SCANNABLE, "segmentation", 3)
    scanned = create_model(SCANNABLE, "segmentation", 3, scan_modules=True)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 64, 64, 3).astype(np.float32))
    variables = jax.jit(lambda: plain.init(jax.random.key(0, impl="rbg"), x[:1]))()
    assert (jax.tree_util.tree_structure(jax.eval_shape(lambda: scanned.init(jax.random.key(0), x[:1])))
            == jax.tree_util.tree_structure(variables))
    eval_p = jax.jit(lambda v: plain.apply(v, x, train=False))(variables)
    eval_s = jax.jit(lambda v: scanned.apply(v, x, train=False))(variables)
    assert relative_error(eval_s, eval_p) < 1e-5


# The training step's equality (XLA:CPU compiles and runs the scanned backward slowly) with
# `-m slow`: the suite's time.
@pytest.mark.slow
@pytest.mark.parametrize("head", ["segmentation", "pose"])
def test_scanned_modules_are_the_same_function_with_the_same_variables(head):
    plain = create_model(SCANNABLE, head, 3)
    scanned = create_model(SCANNABLE, head, 3, scan_modules=True)
    x = jnp.asarray(np.random.RandomState(0).randn(2, 64, 64, 3).astype(np.float32))
    variables = jax.jit(lambda: plain.init(jax.random.key(0, impl="rbg"), x[:1]))()  # fast compile
    # Same tree (canonical module0/module1, block0/block1 names), also when scanned initialises.
    assert (jax.tree_util.tree_structure(jax.eval_shape(lambda: scanned.init(jax.random.key(0), x[:1])))
            == jax.tree_util.tree_structure(variables))

    def loss(model, params):
        out, updates = model.apply({**variables, "params": params}, x, train=True,
                                   mutable=["batch_stats"])
        return jnp.mean(out ** 2), updates["batch_stats"]

    (loss_p, stats_p), grads_p = jax.jit(jax.value_and_grad(lambda p: loss(plain, p), has_aux=True))(
        variables["params"])
    (loss_s, stats_s), grads_s = jax.jit(jax.value_and_grad(lambda p: loss(scanned, p), has_aux=True))(
        variables["params"])
    assert relative_error(loss_s, loss_p) < 1e-5
    assert jax.tree_util.tree_structure(stats_s) == jax.tree_util.tree_structure(stats_p)
    for a, b in zip(jax.tree.leaves(stats_p), jax.tree.leaves(stats_s)):
        assert relative_error(b, a) < 1e-4
    # Gradients relative to the largest one (biases before BatchNorm have ~0 gradients).
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(grads_p))
    for a, b in zip(jax.tree.leaves(grads_p), jax.tree.leaves(grads_s)):
        assert float(jnp.max(jnp.abs(a - b))) < 1e-4 * scale
    eval_p = jax.jit(lambda v: plain.apply(v, x, train=False))(variables)
    eval_s = jax.jit(lambda v: scanned.apply(v, x, train=False))(variables)
    assert relative_error(eval_s, eval_p) < 1e-5


@pytest.fixture(scope="module")
def plain_gradients():
    """The tiny segmentation net's loss, updated statistics and gradients without remat."""
    x = jnp.asarray(np.random.RandomState(1).randn(2, 64, 64, 3).astype(np.float32))
    model = create_model(tiny_arch(4), "segmentation", 3)
    variables = jax.jit(lambda: model.init(jax.random.key(0, impl="rbg"), x[:1]))()
    return x, variables, _loss_and_gradients(model, variables, x)


def _loss_and_gradients(model, variables, x):
    def loss(params):
        out, updates = model.apply({**variables, "params": params}, x, train=True,
                                   mutable=["batch_stats"])
        return jnp.mean(out ** 2), updates["batch_stats"]

    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])


@pytest.mark.parametrize("remat,saves", [("module", "nothing"), ("block", "convs")])
def test_remat_gives_the_same_gradients_with_the_same_variables(plain_gradients, remat, saves):
    """Recomputing activations in the backward pass (per module, stage 1 whole, keeping
    nothing; per block keeping the convolutions' outputs: each level and each policy once)
    changes neither the variables nor the loss, the statistics or the gradients (up to the
    float rounding of a recomputation)."""
    x, variables, ((loss, stats), gradients) = plain_gradients
    model = create_model(tiny_arch(4), "segmentation", 3, remat=remat, remat_saves=saves)
    assert (jax.tree_util.tree_structure(jax.eval_shape(lambda: model.init(jax.random.key(0), x[:1])))
            == jax.tree_util.tree_structure(variables))
    (loss_r, stats_r), gradients_r = _loss_and_gradients(model, variables, x)
    assert relative_error(loss_r, loss) < 1e-6
    for a, b in zip(jax.tree.leaves(stats), jax.tree.leaves(stats_r)):
        assert relative_error(b, a) < 1e-6
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(gradients))
    for a, b in zip(jax.tree.leaves(gradients), jax.tree.leaves(gradients_r)):
        assert float(jnp.max(jnp.abs(a - b))) <= 1e-5 * scale


def test_remat_settings_are_checked():
    with pytest.raises(ValueError, match="remat must be one of none, module, block, got 'layer'"):
        create_model(tiny_arch(4), "segmentation", 3, remat="layer")
    with pytest.raises(ValueError, match="remat_saves must be one of nothing, convs"):
        create_model(tiny_arch(4), "segmentation", 3, remat="module", remat_saves="all")
