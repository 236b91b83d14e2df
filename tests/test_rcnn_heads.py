"""The R-CNN heads (hrnet_jax/models/rcnn_heads.py) against torchvision's and mmdet's layouts."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax.detection import anchors as anchors_lib

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")
pytestmark = pytest.mark.parity


def test_rpn_head_lays_out_anchors_as_mmdets_rpn_head():
    """The same weights in a PyTorch RPN head written as mmdet's (rpn_conv, rpn_cls, rpn_reg;
    outputs permuted to (H, W, A) and (H, W, A, 4)): equal outputs, in grid_anchors' order."""
    from hrnet_jax.models.rcnn_heads import RPN

    head = RPN(num_anchors=3, channels=16)
    shapes = [(8, 12), (4, 6)]
    levels = [np.random.default_rng(k).normal(size=(2, h, w, 8)).astype(np.float32)
              for k, (h, w) in enumerate(shapes)]
    sizes = np.array([[32, 48], [32, 48]], np.float32)
    variables = head.init(jax.random.key(0), levels, sizes, 10, 10)
    out = head.apply(variables, levels, sizes, 10, 10)
    splits = np.cumsum([h * w * 3 for h, w in shapes])[:-1]
    objectness = np.split(np.asarray(out["objectness"]), splits, 1)
    deltas = np.split(np.asarray(out["deltas"]), splits, 1)
    params = jax.tree.map(np.asarray, variables["params"])
    conv = lambda p: (torch.from_numpy(p["kernel"].transpose(3, 2, 0, 1).copy()),
                      torch.from_numpy(p["bias"].copy()))
    for level, x in enumerate(levels):
        features = torch.relu(torch.nn.functional.conv2d(
            torch.from_numpy(x.transpose(0, 3, 1, 2).copy()), *conv(params["shared"]), padding=1))
        cls = torch.nn.functional.conv2d(features, *conv(params["objectness"]))
        reg = torch.nn.functional.conv2d(features, *conv(params["deltas"]))
        expected_cls = cls.permute(0, 2, 3, 1).reshape(2, -1).numpy()
        expected_reg = reg.permute(0, 2, 3, 1).reshape(2, -1, 4).numpy()
        np.testing.assert_allclose(np.asarray(objectness[level]), expected_cls, atol=1e-5)
        np.testing.assert_allclose(np.asarray(deltas[level]), expected_reg, atol=1e-5)
        assert objectness[level].shape[1] == len(anchors_lib.grid_anchors(x.shape[1:3], 4))


def test_box_head_equals_torchvisions_two_mlp_head_and_predictor():
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead

    from hrnet_jax.models.rcnn_heads import BoxHead

    torch.manual_seed(0)
    mlp, predictor = TwoMLPHead(8 * 7 * 7, 32), FastRCNNPredictor(32, 5 + 1)
    head = BoxHead(num_classes=5, hidden=32)
    rois = np.random.default_rng(0).normal(size=(2, 3, 7, 7, 8)).astype(np.float32)
    dense = lambda layer: {"kernel": layer.weight.detach().numpy().T,
                           "bias": layer.bias.detach().numpy()}
    # torchvision's background is class 0, mmdet's (ours) the last: the rows move.
    order = list(range(1, 6)) + [0]
    classifier = dense(predictor.cls_score)
    classifier = {"kernel": classifier["kernel"][:, order], "bias": classifier["bias"][order]}
    deltas = dense(predictor.bbox_pred)  # 6 x 4 outputs: drop torchvision's background boxes
    deltas = {"kernel": deltas["kernel"][:, 4:], "bias": deltas["bias"][4:]}
    params = {"fc1": dense(mlp.fc6), "fc2": dense(mlp.fc7), "classifier": classifier,
              "deltas": deltas}
    logits, box_deltas = head.apply({"params": params}, rois)
    with torch.no_grad():
        flat = torch.from_numpy(rois.reshape(6, 7, 7, 8).transpose(0, 3, 1, 2).copy())
        scores, boxes = predictor(mlp(flat))
    np.testing.assert_allclose(np.asarray(logits).reshape(6, 6), scores.numpy()[:, order],
                               atol=1e-5)
    np.testing.assert_allclose(np.asarray(box_deltas).reshape(6, 5, 4),
                               boxes.numpy().reshape(6, 6, 4)[:, 1:], atol=1e-5)


def test_mask_head_equals_torchvisions_mask_heads_and_predictor():
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor

    from hrnet_jax.models.rcnn_heads import MaskHead

    torch.manual_seed(1)
    convs, predictor = MaskRCNNHeads(8, (16, 16, 16, 16), 1), MaskRCNNPredictor(16, 16, 5)
    head = MaskHead(num_classes=5, channels=16)
    rois = np.random.default_rng(1).normal(size=(2, 3, 14, 14, 8)).astype(np.float32)
    conv = lambda layer: {"kernel": layer.weight.detach().numpy().transpose(2, 3, 1, 0),
                          "bias": layer.bias.detach().numpy()}
    params = {f"conv{k}": conv(convs[k][0]) for k in range(4)}
    # ConvTranspose2d's (in, out, 2, 2) weight converts as a conv's (weights.from_torch's rule)
    params["upsample"] = conv(predictor.conv5_mask)
    params["classifier"] = conv(predictor.mask_fcn_logits)
    masks = np.asarray(head.apply({"params": params}, rois))
    with torch.no_grad():
        expected = predictor(convs(torch.from_numpy(rois.reshape(6, 14, 14, 8)
                                                    .transpose(0, 3, 1, 2).copy())))
    assert masks.shape == (2, 3, 28, 28, 5)
    np.testing.assert_allclose(masks.reshape(6, 28, 28, 5), expected.numpy().transpose(0, 2, 3, 1),
                               atol=1e-5)


@pytest.mark.parity
def test_semantic_head_equals_mmdets_fused_semantic_head():
    """HTC's semantic branch against a PyTorch module written from mmdet's FusedSemanticHead
    (lateral 1x1 conv + ReLU a level after bilinear resizing with aligned corners to the
    fusion level, summed; 4 x 3x3 conv + ReLU; conv_logits; conv_embedding + ReLU), with the
    same weights."""
    torch = pytest.importorskip("torch")
    from hrnet_jax.models.rcnn_heads import SemanticHead

    rng = np.random.default_rng(5)
    levels = [rng.normal(size=(1, 32 // 2 ** k, 48 // 2 ** k, 8)).astype(np.float32)
              for k in range(5)]
    head = SemanticHead(num_classes=7, channels=16)
    variables = head.init(jax.random.key(1), levels)
    params = jax.tree.map(lambda x: np.asarray(x) + 0.01, variables["params"])  # nonzero biases
    logits, embedding = head.apply({"params": params}, levels)

    def conv(name, x, padding=0):
        weight = torch.from_numpy(params[name]["kernel"].transpose(3, 2, 0, 1).copy())
        return torch.nn.functional.conv2d(x, weight, torch.from_numpy(params[name]["bias"]),
                                          padding=padding)

    feats = [torch.from_numpy(x.transpose(0, 3, 1, 2).copy()) for x in levels]
    size = feats[1].shape[-2:]
    x = torch.relu(conv("lateral1", feats[1]))
    for index, feat in enumerate(feats):
        if index != 1:
            feat = torch.nn.functional.interpolate(feat, size=size, mode="bilinear",
                                                   align_corners=True)
            x = x + torch.relu(conv(f"lateral{index}", feat))
    for index in range(4):
        x = torch.relu(conv(f"conv{index}", x, padding=1))
    expected_logits = conv("classifier", x).numpy().transpose(0, 2, 3, 1)
    expected_embedding = torch.relu(conv("embedding", x)).numpy().transpose(0, 2, 3, 1)
    np.testing.assert_allclose(logits, expected_logits, atol=1e-4)
    np.testing.assert_allclose(embedding, expected_embedding, atol=1e-4)
