"""Runs start from ImageNet-style classification checkpoints with strict accounting."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from hrnet_jax import config as config_lib, experiments, surgery, weights
from hrnet_jax.models import create_model, tiny_arch
from hrnet_jax.training.loop import Trainer


@pytest.fixture(scope="module")
def classification_checkpoint(tmp_path_factory):
    """A tiny classification model saved under the official PyTorch key names."""
    model = create_model(tiny_arch(4), "classification", 10)
    variables = surgery.init_variables(model, jax.random.key(3, impl="rbg"))
    state_dict = weights.to_torch(variables, "classification")
    path = tmp_path_factory.mktemp("weights") / "tiny_imagenet.safetensors"
    weights.save_safetensors(path, state_dict)
    return path, variables, state_dict


def smoke_config(path) -> config_lib.ExperimentConfig:
    config = experiments.load("seg_synthetic:smoke")
    config_lib.apply_override(config, f"model.pretrained={path}")
    return config


def test_a_run_starts_from_the_checkpoint_backbone(classification_checkpoint, tmp_path, capsys):
    path, variables, _ = classification_checkpoint
    trainer = Trainer(smoke_config(path), str(tmp_path))
    state = trainer.restore_or_init()
    for collection in ("params", "batch_stats"):
        expected = surgery.flatten(variables[collection]["backbone"])
        got = surgery.flatten(jax.device_get(state[collection]["backbone"]))
        assert set(got) == set(expected)
        for key, value in expected.items():
            np.testing.assert_array_equal(got[key], value, key)
    assert state["params"]["head"]["classifier"]["kernel"].shape[-1] == 5
    out = capsys.readouterr().out
    assert "classification-head tensors left over as expected" in out


def test_a_checkpoint_file_in_a_bucket_starts_a_run(classification_checkpoint, bucket, tmp_path,
                                                    capsys):
    """model.pretrained=gs://...: the file is read through a local copy (safetensors and
    torch.load open local files), the same backbone as from local disk."""
    from hrnet_jax import storage

    path, variables, _ = classification_checkpoint
    remote = f"{bucket}/weights/{path.name}"
    storage.copy_file(path, remote)
    state = Trainer(smoke_config(remote), str(tmp_path)).restore_or_init()
    expected = surgery.flatten(variables["params"]["backbone"])
    got = surgery.flatten(jax.device_get(state["params"]["backbone"]))
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, key)
    assert f"pretrained {remote}: " in capsys.readouterr().out


def test_missing_or_misshapen_backbone_keys_are_named(classification_checkpoint, tmp_path):
    _, _, state_dict = classification_checkpoint
    broken = {k: v for k, v in state_dict.items() if k != "stage2.0.fuse_layers.0.1.0.weight"}
    broken["transition1.0.0.weight"] = np.zeros((3, 3, 3, 3), np.float32)
    path = tmp_path / "broken.safetensors"
    weights.save_safetensors(path, broken)
    with pytest.raises(weights.WeightLoadError) as error:
        Trainer(smoke_config(path), str(tmp_path / "run")).restore_or_init()
    message = str(error.value)
    assert "stage2.0.fuse_layers.0.1.0.weight" in message and "transition1.0.0.weight" in message
    assert str(path) in message


def test_a_run_starts_from_another_runs_checkpoint(tmp_path):
    """A cls_synthetic:smoke run's checkpoint; a segmentation run starts from its backbone."""
    source = Trainer(experiments.load("cls_synthetic:smoke"), str(tmp_path / "cls"))
    state = source.init_fn()
    # Not what the segmentation run would initialise itself (same seed, same backbone init).
    state["params"] = jax.tree.map(lambda p: p + 1.0, state["params"])
    source.save(state, None, force=True)
    source.checkpoints.wait()
    trained = source.checkpoints.restore_variables()
    config = smoke_config(tmp_path / "cls")
    state = Trainer(config, str(tmp_path / "seg")).restore_or_init()
    expected = surgery.flatten(trained["params"]["backbone"])
    got = surgery.flatten(jax.device_get(state["params"]["backbone"]))
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], value, key)
