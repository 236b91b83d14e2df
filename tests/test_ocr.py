"""HRNet-OCR: the head against a PyTorch module with the official names and computation, weight
import of the official key names, exact parameter count, the auxiliary loss, dropout."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hrnet_jax import weights
from hrnet_jax.models import create_model
from hrnet_jax.models.summary import summarize
from test_weights import assert_state_dicts_equal, numpy_state_dict, randomised


def bn_relu(channels: int) -> nn.Module:
    return nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU())  # the reference's BNReLU


class ObjectContextBlock(nn.Module):
    """The pixel-region relation and the contextual representation (OCR paper, Sec. 3.2)."""

    def __init__(self, channels: int, key: int):
        super().__init__()
        self.key = key
        self.f_pixel = nn.Sequential(nn.Conv2d(channels, key, 1, bias=False), bn_relu(key),
                                     nn.Conv2d(key, key, 1, bias=False), bn_relu(key))
        self.f_object = nn.Sequential(nn.Conv2d(channels, key, 1, bias=False), bn_relu(key),
                                      nn.Conv2d(key, key, 1, bias=False), bn_relu(key))
        self.f_down = nn.Sequential(nn.Conv2d(channels, key, 1, bias=False), bn_relu(key))
        self.f_up = nn.Sequential(nn.Conv2d(key, channels, 1, bias=False), bn_relu(channels))

    def forward(self, pixels, regions):
        n, _, h, w = pixels.shape
        query = self.f_pixel(pixels).flatten(2).transpose(1, 2)  # N, HW, key
        key = self.f_object(regions).flatten(2)  # N, key, K
        value = self.f_down(regions).flatten(2).transpose(1, 2)  # N, K, key
        relation = torch.softmax(query @ key * self.key ** -0.5, dim=-1)
        return self.f_up((relation @ value).transpose(1, 2).reshape(n, self.key, h, w))


class SpatialOCR(nn.Module):
    def __init__(self, channels: int, key: int):
        super().__init__()
        self.object_context_block = ObjectContextBlock(channels, key)
        self.conv_bn_dropout = nn.Sequential(nn.Conv2d(2 * channels, channels, 1, bias=False),
                                             bn_relu(channels), nn.Dropout2d(0.05))

    def forward(self, pixels, regions):
        context = self.object_context_block(pixels, regions)
        return self.conv_bn_dropout(torch.cat([context, pixels], 1))


class OfficialOCRHead(nn.Module):
    """seg_hrnet_ocr's head as its paper and key names describe it (registration order too)."""

    def __init__(self, channels: int, classes: int, mid: int = 512, key: int = 256):
        super().__init__()
        self.conv3x3_ocr = nn.Sequential(nn.Conv2d(channels, mid, 3, padding=1),
                                         nn.BatchNorm2d(mid), nn.ReLU())
        self.ocr_distri_head = SpatialOCR(mid, key)
        self.cls_head = nn.Conv2d(mid, classes, 1)
        self.aux_head = nn.Sequential(nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels),
                                      nn.ReLU(), nn.Conv2d(channels, classes, 1))

    def forward(self, branches):
        size = branches[0].shape[2:]
        features = torch.cat([branches[0]] + [F.interpolate(x, size, mode="bilinear",
                                                            align_corners=True)
                                              for x in branches[1:]], 1)
        aux = self.aux_head(features)
        pixels = self.conv3x3_ocr(features)
        # Soft object regions: each class's spatial softmax weights the pixels (SpatialGather).
        weights_ = torch.softmax(aux.flatten(2), dim=2)  # N, K, HW
        regions = (weights_ @ pixels.flatten(2).transpose(1, 2)).transpose(1, 2).unsqueeze(3)
        return self.cls_head(self.ocr_distri_head(pixels, regions)), aux


@pytest.fixture(scope="module")
def official():
    """hrnet_w18_small's backbone (timm) + the OCR head with 7 classes, as the official
    training saves them: `model.*` and the loss's class weights."""
    import timm

    torch.manual_seed(3)
    backbone = randomised(timm.create_model("hrnet_w18_small", features_only=True,
                                            feature_location=""), 3)
    head = randomised(OfficialOCRHead(240, 7), 4).eval()
    # Trained-looking BatchNorm affine parameters, so that every tensor matters.
    with torch.no_grad():
        for m in head.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model = {**numpy_state_dict(backbone), **numpy_state_dict(head)}
    saved = {**{f"model.{k}": v for k, v in model.items()},
             "loss.criterion.weight": np.ones(7, np.float32)}
    return head, model, saved


def test_official_checkpoint_loads_strictly_and_round_trips(official):
    _, model, saved = official
    variables = weights.convert("hrnet_w18_small", "segmentation_ocr", saved)
    assert variables["params"]["head"]["classifier"]["kernel"].shape == (1, 1, 512, 7)
    assert_state_dicts_equal(weights.to_torch(variables, "segmentation_ocr"), model)
    missing = {k: v for k, v in saved.items()
               if k != "model.ocr_distri_head.object_context_block.f_pixel.1.0.weight"}
    with pytest.raises(weights.WeightLoadError,
                       match=r"ocr_distri_head\.object_context_block\.f_pixel\.1\.0\.weight"):
        weights.convert("hrnet_w18_small", "segmentation_ocr", missing)


@pytest.mark.parity
def test_head_matches_the_official_computation_on_the_same_weights(official):
    head, _, saved = official
    variables = weights.convert("hrnet_w18_small", "segmentation_ocr", saved)
    model = create_model("hrnet_w18_small", "segmentation_ocr", 7)
    image = jax.random.normal(jax.random.key(0), (2, 64, 96, 3))
    logits = np.asarray(model.apply(variables, image, train=False))
    # The same backbone features (the backbone's parity with timm is tested elsewhere).
    backbone = create_model("hrnet_w18_small", None, upsample="bilinear", align_corners=True)
    branches = backbone.apply({c: {"backbone": v["backbone"]} for c, v in variables.items()},
                              image, train=False)
    with torch.no_grad():
        expected, _ = head([torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
                            for x in branches])
    expected = expected.numpy().transpose(0, 2, 3, 1)
    assert logits.shape == expected.shape == (2, 16, 24, 7)
    np.testing.assert_allclose(logits, expected, atol=2e-4 * np.abs(expected).max())


def test_w48_ocr_parameter_count_is_the_official_models():
    """70,372,678 = HRNetV2-W48's backbone (65,325,120) + the OCR head, derived layer by layer
    from the official seg_hrnet_ocr (15C = 720 concatenated channels, 19 classes):
    conv3x3_ocr 720*512*9 + 512 + BN 2*512; aux_head 720*720 + 720 + BN 2*720 + 720*19 + 19;
    f_pixel and f_object 2 x (512*256 + 2*256 + 256*256 + 2*256); f_down 512*256 + 2*256;
    f_up 256*512 + 2*512; conv_bn_dropout 1024*512 + 2*512; cls_head 512*19 + 19."""
    head = ((720 * 512 * 9 + 512 + 2 * 512)
            + (720 * 720 + 720 + 2 * 720 + 720 * 19 + 19)
            + 2 * (512 * 256 + 2 * 256 + 256 * 256 + 2 * 256)
            + (512 * 256 + 2 * 256) + (256 * 512 + 2 * 512)
            + (1024 * 512 + 2 * 512) + (512 * 19 + 19))
    info = summarize("hrnet_w48", "segmentation_ocr", (1024, 2048))
    assert head == 5_047_558
    assert info["params"] == 65_325_120 + head == 70_372_678
    # The official convention (conv and linear multiply-adds / 2^30; the relation's matrix
    # products uncounted): W48 696.18 + the OCR head's 510.19 at 1024x2048.
    assert info["gflops_official"] == pytest.approx(1206.37, abs=0.01)


def test_training_returns_the_auxiliary_logits_and_the_loss_weighs_them():
    from hrnet_jax import experiments
    from hrnet_jax.tasks import make_task
    from hrnet_jax.tasks.segmentation import pixel_cross_entropy

    config = experiments.load("seg_lip:ocr,smoke")
    task = make_task(config)
    labels = jnp.asarray(np.random.RandomState(0).randint(0, 20, (2, 16, 16)), jnp.int32)
    logits, aux = (jax.random.normal(jax.random.key(k), (2, 4, 4, 20)) for k in (1, 2))
    loss, figures = task.loss((logits, aux), {"label": labels})
    main = pixel_cross_entropy(logits, labels, align_corners=True)
    auxiliary = pixel_cross_entropy(aux, labels, align_corners=True)
    np.testing.assert_allclose(loss, main + 0.4 * auxiliary, rtol=1e-6)
    np.testing.assert_allclose(figures["aux_loss"], auxiliary, rtol=1e-6)
    assert task.loss(logits, {"label": labels})[0] == pytest.approx(float(main), rel=1e-6)


def test_channel_dropout_in_training_only():
    from hrnet_jax.models.layers import LayerConfig
    from hrnet_jax.models.ocr_head import OCRHead

    head = OCRHead(5, LayerConfig(upsample="bilinear", align_corners=True), mid_channels=16,
                   key_channels=8)
    branches = [jax.random.normal(jax.random.key(k), (2, 16 // 2 ** k, 16 // 2 ** k, 4 * 2 ** k))
                for k in range(4)]
    variables = head.init(jax.random.key(1), branches, train=False)

    @jax.jit
    def train(key):
        (logits, aux), _ = head.apply(variables, branches, train=True, mutable=["batch_stats"],
                                      rngs={"dropout": key})
        return logits, aux

    first, again, other = (np.asarray(train(jax.random.key(k))) for k in (2, 2, 3))
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.allclose(first[0], other[0])
    np.testing.assert_array_equal(first[1], other[1])  # the auxiliary output has no dropout
    infer = jax.jit(lambda: head.apply(variables, branches, train=False))
    np.testing.assert_array_equal(infer(), infer())
