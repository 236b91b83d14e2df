"""ImageNet classification: crops, mixup / CutMix, soft-label loss, the tfds pipeline on mock data,
top-5 prediction with class names, and the experiments' recipes."""

from __future__ import annotations

import cv2
import jax.numpy as jnp
import numpy as np
import pytest
import tensorflow_datasets as tfds

from hrnet_jax import experiments
from hrnet_jax.data import transforms
from hrnet_jax.experiments import load
from hrnet_jax.tasks import classification, make_task

EXPECTED_TOP1 = {"w18_small": 72.3, "w18_small_v2": 75.1, "w18": 76.8, "w30": 78.2, "w32": 78.5,
                 "w40": 78.9, "w44": 78.9, "w48": 79.3, "w64": 79.5}


def test_random_resized_crop_boxes_follow_torchvision_bounds():
    for seed in range(200):
        top, left, h, w = transforms.random_resized_crop_box(300, 400, np.random.default_rng(seed))
        assert 0 <= top and top + h <= 300 and 0 <= left and left + w <= 400
        assert 0.08 * 0.97 <= h * w / 120000 <= 1.0
        assert 3 / 4 * 0.95 <= w / h <= 4 / 3 * 1.05
    # No draw fits a 10 x 1000 strip: the centre crop of the widest allowed ratio, 4:3.
    assert transforms.random_resized_crop_box(10, 1000, np.random.default_rng(0)) == (0, 493, 10, 13)


def test_evaluation_framing_is_resize_256_then_centre_224():
    columns = np.tile(np.arange(400, dtype=np.float32)[None, :, None], (300, 1, 3))
    framed = transforms.resize_centre_crop(columns, 224)
    assert framed.shape == (224, 224, 3)
    # short side 300 -> 256: x scales by 256/300; the centre crop starts at (341 - 224) // 2
    scale = 300 / 256
    expected_first = (58 + 0.5) * scale - 0.5
    assert framed[112, 0, 0] == pytest.approx(expected_first, abs=1.0)
    assert framed[112, 112, 0] == pytest.approx(199.5, abs=1.5)


def test_mixup_mixes_images_and_targets_with_one_lambda():
    images = np.random.default_rng(0).uniform(size=(4, 8, 8, 3)).astype(np.float32)
    labels = np.array([0, 1, 2, 3])
    mixed, targets = transforms.mix_batch(images, labels, 5, np.random.default_rng(7), 0.4, 0.0)
    lam = np.random.default_rng(7).beta(0.4, 0.4)
    np.testing.assert_allclose(mixed, lam * images + (1 - lam) * images[::-1], rtol=1e-5)
    np.testing.assert_allclose(targets[0, [0, 3]], [lam, 1 - lam], rtol=1e-5)
    np.testing.assert_allclose(targets.sum(1), 1.0, rtol=1e-6)


def test_cutmix_target_weights_equal_the_pasted_area():
    images = np.stack([np.full((32, 32, 3), v, np.float32) for v in (1, 2, 3, 4)])
    for seed in range(10):
        mixed, targets = transforms.mix_batch(images, np.arange(4), 4, np.random.default_rng(seed),
                                              0.0, 1.0)
        pasted = (mixed[0, ..., 0] == 4).mean()  # image 0 receives pixels of image 3
        assert targets[0, 3] == pytest.approx(pasted) and targets[0, 0] == pytest.approx(1 - pasted)


def test_soft_target_cross_entropy_is_the_mix_of_hard_ones():
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(3, 6)), jnp.float32)
    a, b, lam = jnp.array([0, 2, 5]), jnp.array([1, 2, 3]), 0.3
    soft = lam * jnp.eye(6)[a] + (1 - lam) * jnp.eye(6)[b]
    mixed = classification.cross_entropy(logits, soft)
    expected = lam * classification.cross_entropy(logits, a) + (1 - lam) * classification.cross_entropy(logits, b)
    assert float(mixed) == pytest.approx(float(expected), rel=1e-6)


def test_imagenet_pipeline_on_tfds_mock_data(monkeypatch):
    """The real path (tfds data source of `imagenet2012` read by grain, random-resized crops,
    CutMix / mixup, the evaluation framing) on tfds's generated records of random sizes."""
    from hrnet_jax.data import pipeline
    from hrnet_jax.tasks import make_task
    from hrnet_jax.data.datasets import Dataset

    config = load("cls_imagenet:w18,smoke")
    config.data.name, config.model.num_classes = "imagenet2012", 1000
    with tfds.testing.mock_data(num_examples=10):
        # mocked builders are not 'prepared' and list no splits; the sources themselves are real
        monkeypatch.setattr(Dataset, "prepared_builder",
                            lambda self, data_dir: tfds.builder("imagenet2012"))
        monkeypatch.setattr(Dataset, "split", lambda self, builder, split:
                            builder.as_data_source(split))
        task = make_task(config)
        train, evaluation = task.dataset.sources(config.data)
        loader = pipeline.train_loader(train, task.prepare, 4, 0, 0, task.augment, task.mix_batch)
        batch = next(iter(loader))
        evaluation_batch = next(pipeline.eval_batches(evaluation, task.prepare, 4))
    assert {len(train), len(evaluation)} == {10}
    assert batch["image"].shape == (4, 32, 32, 3) and batch["image"].dtype == np.float32
    assert batch["label"].shape == (4, 1000)  # soft targets of the mixed images
    np.testing.assert_allclose(batch["label"].sum(1), 1.0, rtol=1e-5)
    assert evaluation_batch["image"].shape == (4, 32, 32, 3)
    assert evaluation_batch["label"].dtype == np.int32 and evaluation_batch["label"].max() < 1000


def test_predict_prints_the_top5_with_imagenet_names(tmp_path, capsys):
    from hrnet_jax import main

    names = make_task(load("cls_imagenet:w18")).names
    assert len(names) == 1000 and names[0].startswith("tench")
    image = tmp_path / "picture.png"
    cv2.imwrite(str(image), np.random.default_rng(0).integers(0, 255, (90, 120, 3), np.uint8))
    args = ["--experiment=cls_imagenet:w18,smoke", f"--workdir={tmp_path}/run", "--mode=predict",
            f"--input={image}", f"--output={tmp_path}/out", "--from_init"]
    assert main.main(args) == 0
    printed = [l for l in capsys.readouterr().out.splitlines() if l[:1].isdigit()]
    assert len(printed) == 4  # the smoke model has 4 classes
    assert {l.split(" ", 1)[1] for l in printed} == {"disc", "square", "triangle", "cross"}
    assert sum(float(l.split()[0]) for l in printed) == pytest.approx(1.0, abs=0.01)
    assert (tmp_path / "out" / "picture_top5.png").exists()
    # The same top classes, best first, from Python (the same initialisation's variables).
    import hrnet_jax
    from hrnet_jax.training.loop import Trainer

    trainer = Trainer(load("cls_imagenet:w18,smoke"), str(tmp_path / "python"))
    found = hrnet_jax.Predictor(trainer.config, trainer.init_fn())(
        cv2.imread(str(image))[..., ::-1])[0]
    smoke_names = make_task(trainer.config).names
    assert [f"{s:.3f} {smoke_names[c]}" for c, s in zip(found["classes"], found["scores"])] \
        == printed
    assert found["probabilities"].sum() == pytest.approx(1)
    assert np.all(np.diff(found["scores"]) <= 0)


@pytest.mark.parametrize("name", sorted(EXPECTED_TOP1))
def test_each_imagenet_experiment_states_the_papers_recipe(name):
    config = load(f"cls_imagenet:{name}")
    assert config.model.arch == f"hrnet_{name}" and config.model.num_classes == 1000
    optim = config.optim
    assert (optim.optimizer, optim.learning_rate, optim.nesterov, optim.weight_decay) == \
        ("sgd", 0.05, True, 1e-4)
    assert optim.milestones == (0.3, 0.6, 0.9) and config.data.batch_size == 128
    _, table = experiments.available()["cls_imagenet"]
    assert table[name].startswith(f"top-1 {EXPECTED_TOP1[name]}%")
