"""`hrnet_jax.Predictor` (hrnet_jax/predictor.py): a trained run as a function of pictures of
any size, returning what --mode=predict draws; the README's five lines run as printed."""

from __future__ import annotations

import pathlib
import re

import numpy as np
import pytest

import hrnet_jax
from hrnet_jax.main import main
from hrnet_jax.tasks.segmentation import colour_mask

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def segmentation_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("seg") / "run"
    assert main(["--experiment=seg_synthetic:smoke", f"--workdir={workdir}"]) == 0
    return workdir


def test_segmentation_results_at_each_images_size_are_what_predict_draws(segmentation_run):
    predictor = hrnet_jax.Predictor.from_workdir(str(segmentation_run))
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), np.uint8), rng.integers(0, 255, (48, 80, 3),
                                                                        np.uint8)]
    results = predictor(images)
    assert [r["labels"].shape for r in results] == [(64, 64), (48, 80)]
    for result in results:
        assert result["probabilities"].shape[-1] == 5
        np.testing.assert_allclose(result["probabilities"].sum(-1), 1, rtol=1e-5)
        np.testing.assert_array_equal(result["labels"], result["probabilities"].argmax(-1))
    drawn = predictor.task.render(predictor.predict, images[1])["mask"]
    np.testing.assert_array_equal(drawn, colour_mask(results[1]["labels"],
                                                     predictor.task.palette))
    assert predictor(images[0])[0]["labels"].shape == (64, 64)  # one image, not a list


def test_an_image_of_the_wrong_kind_says_what_is_expected(segmentation_run):
    predictor = hrnet_jax.Predictor.from_workdir(str(segmentation_run))
    with pytest.raises(ValueError, match=r"image 0: uint8 \(32, 32, 4\); expected uint8 RGB"):
        predictor([np.zeros((32, 32, 4), np.uint8)])
    with pytest.raises(ValueError, match=r"image 1: float32 \(32, 32, 3\)"):
        predictor([np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.float32)])
    with pytest.raises(FileNotFoundError, match="holds no run"):
        hrnet_jax.Predictor.from_workdir(str(segmentation_run / "nothing"))


def test_readme_predictor_section_runs(segmentation_run, tmp_path, monkeypatch):
    import cv2

    block = re.search(r"<!-- predictor-example.*?-->\n```python\n(.*?)```", README.read_text(),
                      re.S).group(1)
    assert len(block.strip().splitlines()) <= 6
    cv2.imwrite(str(tmp_path / "street.png"), np.zeros((40, 56, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.replace("runs/cityscapes", str(segmentation_run)), str(README), "exec"),
         scope)
    assert scope["labels"].shape == (40, 56)
