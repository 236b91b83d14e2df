"""The dataset layer: each dataset is one file of hrnet_jax/data/datasets, found by itself, and
the only place that knows its name."""

from __future__ import annotations

import pathlib
import re
import textwrap

import pytest

from hrnet_jax.data import datasets
from hrnet_jax.tasks import TASK_HEADS

PACKAGE = pathlib.Path(datasets.__file__).parents[2]


def test_every_dataset_states_its_task_and_preparation():
    found = datasets.all_datasets()
    assert {"cityscapes", "coco_keypoints", "coco_detection", "mpii", "wflw", "300w", "cofw",
            "aflw", "imagenet2012", "synthetic_segmentation", "synthetic_pose",
            "synthetic_classification", "synthetic_detection"} <= set(found)
    for name, dataset in found.items():
        assert dataset.name == name and dataset.task in TASK_HEADS, name
        if name in datasets.preparable():
            builder = dataset.builder_class()  # imports and registers the tfds builder
            assert builder.MANUAL_DOWNLOAD_INSTRUCTIONS and dataset.tfds_name, name
            assert dataset.train_examples > 0, name


def test_unknown_dataset_lists_the_real_ones():
    with pytest.raises(ValueError, match="unknown dataset 'citiscapes'; available: .*cityscapes"):
        datasets.get("citiscapes")


def test_metadata_the_tasks_read():
    cityscapes = datasets.get("cityscapes")
    assert cityscapes.names(19)[11] == "person" and cityscapes.ignore_label == 255
    assert tuple(cityscapes.palette(19)[0]) == (128, 64, 128)
    generated = datasets.get("synthetic_segmentation").palette(5)
    assert generated.shape == (5, 3) and (generated[0] == 0).all()
    assert datasets.get("coco_keypoints").keypoints.num_joints == 17
    assert datasets.get("mpii").keypoints.joints[9] == "head_top"
    assert datasets.get("wflw").normaliser == (60, 72) and datasets.get("aflw").normaliser is None
    assert datasets.get("coco_detection").names(80)[79] == "toothbrush"
    assert datasets.get("synthetic_detection").categories[0] == (1, "disc")


def test_adding_a_dataset_takes_one_file(tmp_path, monkeypatch):
    """A module dropped beside the others is found, prepared by its builder and read by a
    task, with nothing else edited (here: generated pictures, as a user's first dataset is
    often a folder of their own)."""
    (tmp_path / "my_scenes.py").write_text(textwrap.dedent('''
        from hrnet_jax.data import synthetic
        from hrnet_jax.data.datasets import GeneratedDataset

        DATASETS = (GeneratedDataset(name="my_scenes", task="segmentation",
                                     source=synthetic.SyntheticSegmentation,
                                     class_names=("ground", "a", "b", "c", "d")),)
    '''))
    monkeypatch.setattr(datasets, "__path__", [*datasets.__path__, str(tmp_path)])
    datasets.all_datasets.cache_clear()
    try:
        from hrnet_jax import experiments
        from hrnet_jax.tasks import make_task

        config = experiments.load("seg_synthetic:smoke")
        config.data.name = "my_scenes"
        task = make_task(config)
        train, evaluation = task.dataset.sources(config.data)
        assert task.class_names[0] == "ground" and len(train) == config.data.num_train
        assert task.prepare(evaluation[0])["label"].shape == tuple(config.data.image_size)
    finally:
        datasets.all_datasets.cache_clear()


def test_no_code_outside_the_dataset_files_compares_a_dataset_name():
    pattern = re.compile(r"data\.name ==|is_coco|is_face|dataset ==|name in (KEYPOINT|LANDMARK)")
    for path in (PACKAGE / "hrnet_jax").rglob("*.py"):
        if "datasets" in path.parts:
            continue
        assert not pattern.search(path.read_text()), path
    for name in datasets.all_datasets():  # no dataset's name quoted in tasks or the trainer
        for folder in ("tasks", "training"):
            for path in (PACKAGE / "hrnet_jax" / folder).rglob("*.py"):
                assert f'"{name}"' not in path.read_text(), (name, path)
