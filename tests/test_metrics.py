"""One known-answer test (at least) for each evaluator of hrnet_jax.metrics: mIoU, top-k,
COCO keypoint AP, PCKh, NME (COCO box AP: test_detection.py)."""

from __future__ import annotations

import json

import jax.numpy as jnp
import numpy as np
import pytest

from hrnet_jax.data.datasets.coco import KEYPOINTS as COCO
from hrnet_jax.metrics import coco_keypoints, nme, pckh
from hrnet_jax.metrics.miou import confusion_matrix, iou_summary
from hrnet_jax.metrics.topk import top_k_correct, top_k_sums, top_k_summary


def test_confusion_matrix_and_iou_by_hand():
    labels = jnp.array([[0, 0, 1, 1, 2, 255]])
    predictions = jnp.array([[0, 1, 1, 1, 0, 2]])
    confusion = np.asarray(confusion_matrix(predictions, labels, 3, jnp.ones((1, 6))))
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 0]])
    summary = iou_summary(confusion)
    # IoU: class 0 = 1 / (2 + 2 - 1), class 1 = 2 / (2 + 3 - 2), class 2 = 0 / (1 + 0 - 0).
    assert abs(summary["miou"] - (1 / 3 + 2 / 3 + 0) / 3) < 1e-12
    assert abs(summary["miou_all_classes"] - (1 / 3 + 2 / 3 + 0) / 3) < 1e-12
    assert abs(summary["pixel_accuracy"] - 3 / 5) < 1e-12


def test_miou_over_occurring_classes_and_over_all_classes():
    """Ours averages the classes that occur; the official validate() divides by all N."""
    confusion = np.zeros((4, 4))
    confusion[0, 0], confusion[1, 1], confusion[1, 0] = 6, 2, 2  # classes 2 and 3 never occur
    summary = iou_summary(confusion)
    assert abs(summary["miou"] - (6 / 8 + 2 / 4) / 2) < 1e-12
    assert abs(summary["miou_all_classes"] - (6 / 8 + 2 / 4) / 4) < 1e-12
    assert "iou/2" not in summary and abs(summary["pixel_accuracy"] - 0.8) < 1e-12


def test_top_k_accuracy_by_hand():
    logits = jnp.array([[2.0, 1.0, 0.5, 0.1], [0.1, 0.2, 3.0, 0.0], [0.0, 0.3, 0.2, 0.1]])
    labels = jnp.array([1, 2, 3])
    np.testing.assert_array_equal(top_k_correct(logits, labels, 1), [0, 1, 0])
    np.testing.assert_array_equal(top_k_correct(logits, labels, 2), [1, 1, 0])
    sums = top_k_sums(logits, labels, jnp.array([1.0, 1.0, 0.0]), (1, 2))  # the third is padding
    assert top_k_summary(sums) == {"top1": 0.5, "top2": 1.0}


def test_rescoring_is_box_score_times_mean_confident_joint_score():
    poses = np.zeros((2, 3, 3), np.float32)
    poses[0, :, 2] = [0.5, 0.1, 0.9]
    poses[1, :, 2] = [0.1, 0.2, 0.05]  # none above 0.2: score 0, as the reference
    np.testing.assert_allclose(coco_keypoints.rescore(poses, np.array([0.8, 1.0])), [0.56, 0.0])


def test_oks_matches_the_coco_formula_and_nms_drops_duplicates():
    sigmas = np.array(COCO.sigmas) / 10
    pose = np.concatenate([np.random.default_rng(0).uniform(0, 100, (17, 2)), np.ones((17, 1))], -1)
    moved = pose.copy()
    moved[3, :2] += [3.0, 4.0]
    oks = coco_keypoints.object_keypoint_similarity(pose, moved[None], 900.0, np.array([1100.0]), sigmas)
    expected = (16 + np.exp(-25 / (2 * sigmas[3]) ** 2 / 1000.0 / 2)) / 17
    np.testing.assert_allclose(oks, [expected], rtol=1e-6)
    far = pose.copy()
    far[:, :2] += 80
    poses = np.stack([pose, moved, far])
    kept = coco_keypoints.oks_nms(poses, np.array([0.5, 0.9, 0.7]), np.full(3, 1000.0), sigmas)
    assert kept == [1, 2]  # the better-scored duplicate survives, the distant pose too


@pytest.fixture(scope="module")
def coco_truth(shared_data):
    data = json.loads((shared_data / "coco_mini/annotations/person_keypoints_val2017.json").read_text())
    annotations = data["annotations"]
    persons = {"image_id": np.array([a["image_id"] for a in annotations]),
               "bbox": np.array([a["bbox"] for a in annotations], np.float32),
               "keypoints": np.array([a["keypoints"] for a in annotations], np.float32).reshape(-1, 17, 3),
               "area": np.array([a["area"] for a in annotations], np.float32),
               "iscrowd": np.array([a["iscrowd"] for a in annotations]),
               "num_keypoints": np.array([a["num_keypoints"] for a in annotations])}
    images = [{"id": i["id"], "height": i["height"], "width": i["width"]} for i in data["images"]]
    return coco_keypoints.coco_ground_truth(images, persons, COCO), persons


def test_ground_truth_as_predictions_scores_ap_one(coco_truth):
    truth, persons = coco_truth
    labelled = persons["num_keypoints"] > 0
    results = coco_keypoints.coco_results(persons["image_id"][labelled], persons["keypoints"][labelled],
                                      np.ones(labelled.sum()), persons["area"][labelled],
                                      np.array(COCO.sigmas) / 10)
    figures = coco_keypoints.coco_keypoint_ap(truth, results)
    assert figures["ap"] == pytest.approx(1.0) and figures["ar"] == pytest.approx(1.0)
    assert figures["ap50"] == pytest.approx(1.0)


def test_pckh_counts_joints_within_half_a_head():
    truth = np.zeros((2, 16, 2))
    visible = np.ones((2, 16))
    visible[1, 0] = 0
    predicted = truth.copy()
    predicted[0, 9] = [3.0, 4.0]  # head top 5 px off: inside 0.5 x head 12
    predicted[0, 10] = [7.0, 0.0]  # a wrist 7 px off: outside 0.5 x 12 = 6
    predicted[1, 0] = [100, 100]  # unlabelled: does not count
    predicted[0, 6] = [50, 50]  # the pelvis: not in the mean
    result = pckh.pckh(predicted, truth, visible, np.array([12.0, 12.0]))
    assert result["pckh/head"] == 1.0
    assert result["pckh/wrist"] == pytest.approx(0.75)
    assert result["pckh"] == pytest.approx((27 - 1) / 27)  # 14 joints x 2 persons - 1 unlabelled


def test_nme_failure_rate_and_auc_known_answers():
    truth = np.zeros((2, 4, 2))
    predicted = truth + [3.0, 4.0]  # every point 5 px off
    errors = nme.normalised_mean_error(predicted, truth, np.array([100.0, 25.0]))
    np.testing.assert_allclose(errors, [0.05, 0.2])
    summary = nme.landmark_summary(errors)
    assert summary["nme"] == pytest.approx(0.125)
    assert summary["failure_rate"] == 0.5
    assert summary["auc"] == pytest.approx(0.25, abs=1e-3)  # half the faces from 0.05 to 0.1
    perfect = nme.landmark_summary(np.zeros(3))
    assert perfect == {"nme": 0.0, "failure_rate": 0.0, "auc": pytest.approx(1.0)}


def test_gathered_rows_carry_text_columns_between_hosts(monkeypatch):
    """Mask R-CNN's rows hold RLE strings: gather_rows sends them as zero-padded bytes. Two
    hosts simulated by two threads meeting in a fake allgather (the real collective is
    test_multihost's): each gets both hosts' rows, strings intact, in host order."""
    import threading

    from hrnet_jax.training import sharding

    meeting = threading.Barrier(2)
    slots: dict[int, np.ndarray] = {}
    host = threading.local()

    def allgather(value):
        slots[host.index] = np.asarray(value)
        meeting.wait()
        stacked = np.stack([slots[0], slots[1]])
        meeting.wait()  # both have read before the next call writes
        return stacked

    monkeypatch.setattr(sharding, "process_allgather", allgather)
    rows = [{"mask": np.array(["a1b2", "Z<~ 9", "é"], object), "score": np.array([1., 2., 3.])},
            {"mask": np.array(["longer RLE string 0"], object), "score": np.array([4.])}]
    out = [None, None]

    def run(index):
        host.index = index
        out[index] = sharding.gather_rows(rows[index])

    threads = [threading.Thread(target=run, args=(i,)) for i in (0, 1)]
    [t.start() for t in threads]
    [t.join(30) for t in threads]
    for gathered in out:
        assert gathered["mask"].tolist() == ["a1b2", "Z<~ 9", "é", "longer RLE string 0"]
        assert gathered["score"].tolist() == [1., 2., 3., 4.]
