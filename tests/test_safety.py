"""Nothing silent, nothing overwritten: bad input is named before anything runs, and a workdir's
config, checkpoints and figures survive mistakes, corruption and resumes."""

from __future__ import annotations

import json
import os
import shutil

import cv2
import numpy as np
import pytest
import torch

from hrnet_jax import weights
from hrnet_jax.main import main
from hrnet_jax.predict import read_boxes, read_image

SMOKE = "--experiment=seg_synthetic:smoke"


def rows(workdir) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    return [json.loads(line) for line in open(path)] if os.path.exists(path) else []


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A finished smoke run (checkpoints at steps 2 and 4); tests work on copies of it."""
    workdir = tmp_path_factory.mktemp("run") / "run"
    assert main([SMOKE, f"--workdir={workdir}"]) == 0
    return workdir


@pytest.fixture
def copy(run, tmp_path):
    target = tmp_path / "run"
    shutil.copytree(run, target)
    return target


# -- silent wrong results ---------------------------------------------------------------------
def test_eval_without_a_checkpoint_refuses_naming_the_folder(tmp_path, capsys):
    workdir = tmp_path / "typo"
    for mode in ("eval", "predict"):
        assert main([SMOKE, f"--workdir={workdir}", f"--mode={mode}"]) == 2
        assert f"no checkpoint in {workdir / 'checkpoints'}" in capsys.readouterr().err
    assert not workdir.exists()  # nothing written, nothing appended
    assert main([SMOKE, f"--workdir={workdir}", "--mode=eval", "--from_init"]) == 0
    assert [r["step"] for r in rows(workdir)] == [0]


@pytest.mark.parametrize("override,named", [
    ("loop.num_steps=-5", "loop.num_steps=-5"), ("data.batch_size=0", "data.batch_size=0"),
    ("data.image_size=0x64", "data.image_size[0]=0"), ("loop.log_every=0", "loop.log_every=0"),
    ("checkpoint.every_steps=-1", "checkpoint.every_steps=-1"),
    ("data.image_size=32,48,64", "expected 2 numbers"),
    ("model.pretrained=/nowhere/w18.pth", "model.pretrained=/nowhere/w18.pth: no such file"),
    ("mesh.data=16", "this run has 1"),
    ("eval.score_threshold=2", "eval.score_threshold=2.0: must be in [0, 1]"),
    ("loss.ohem_threshold=-0.1", "loss.ohem_threshold=-0.1: must be in [0, 1]"),
    ("optim.learning_rate=-1", "optim.learning_rate=-1.0: must be at least 0"),
    ("optim.milestones=0.5,1.5", "fractions of the run in (0, 1]"),
    ("model.dtype=bf16", "model.dtype='bf16': choose float32 or bfloat16 or float16"),
    ("optim.schedule=linear", "choose constant or poly or multistep or cosine"),
])
def test_values_no_run_can_use_are_named_before_anything_runs(tmp_path, capsys, override, named):
    assert main([SMOKE, f"--workdir={tmp_path / 'w'}", "--set", override]) == 2
    assert named in capsys.readouterr().err
    assert not (tmp_path / "w" / "config.json").exists()


def test_a_workdir_that_is_a_file_is_one_line(tmp_path, capsys):
    occupied = tmp_path / "notes.txt"
    occupied.write_text("mine")
    assert main([SMOKE, f"--workdir={occupied}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot write to {occupied}") and len(err.splitlines()) == 1
    assert occupied.read_text() == "mine"


def test_one_image_size_is_a_square(capsys):
    assert main([SMOKE, "--print_config", "--set", "data.image_size=48"]) == 0
    assert json.loads(capsys.readouterr().out)["data"]["image_size"] == [48, 48]


def jpeg_bytes() -> bytes:
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    return cv2.imencode(".jpg", image)[1].tobytes()


def test_a_truncated_jpeg_is_an_error_naming_it(tmp_path):
    whole, cut = tmp_path / "whole.jpg", tmp_path / "cut.jpg"
    whole.write_bytes(jpeg_bytes())
    cut.write_bytes(jpeg_bytes()[:len(jpeg_bytes()) // 2])
    assert read_image(str(whole)).shape == (64, 64, 3)
    with pytest.raises(ValueError, match=f"{cut}: not an image or corrupt"):
        read_image(str(cut))


def test_a_16_bit_grey_png_reads_as_its_8_bit_picture(tmp_path):
    grey = np.array([[0, 257, 32896], [65535, 1000, 60000]], np.uint16)
    cv2.imwrite(str(tmp_path / "depth.png"), grey)
    image = read_image(str(tmp_path / "depth.png"))
    assert image.dtype == np.uint8 and image.shape == (2, 3, 3)
    np.testing.assert_array_equal(image[..., 0], [[0, 1, 128], [255, 4, 233]])
    assert (image[..., 0] == image[..., 2]).all()


def test_a_picture_too_large_to_segment_whole_is_refused_by_name_and_the_rest_predicted(
        tmp_path, capsys, monkeypatch):
    from hrnet_jax.tasks import segmentation

    monkeypatch.setattr(segmentation, "MAX_PREDICT_PIXELS", 48 * 48)  # 8000x8000, in small
    folder = tmp_path / "in"
    folder.mkdir()
    cv2.imwrite(str(folder / "huge.png"), np.zeros((64, 64, 3), np.uint8))
    cv2.imwrite(str(folder / "small.png"), np.zeros((32, 32, 3), np.uint8))
    assert main([SMOKE, f"--workdir={tmp_path / 'w'}", "--mode=predict", "--from_init",
                 f"--input={folder}", f"--output={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err
    assert f"{folder / 'huge.png'}: 64x64 pixels, above the 2,304-pixel limit" in err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["small_mask.png",
                                                                    "small_overlay.png"]


def test_a_full_disk_is_one_line_and_the_last_good_checkpoint_is_kept(tmp_path, capsys,
                                                                      monkeypatch):
    """The disk fills after the step-2 checkpoint: the step-4 save is refused before orbax
    writes anything, in one line; the rerun clears what an interrupted save left and goes on."""
    import collections
    import shutil as shutil_lib

    from hrnet_jax.training import checkpoint

    real = shutil_lib.disk_usage
    calls = []

    def filling(path):
        calls.append(path)
        usage = real(path)
        return collections.namedtuple("Usage", "total used free")(
            usage.total, usage.used, usage.free if len(calls) < 2 else 1 << 20)

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", filling)
    workdir = tmp_path / "run"
    assert main([SMOKE, f"--workdir={workdir}"]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"no room for a checkpoint in {workdir / 'checkpoints'}" in errors[0]
    assert "1 MiB free" in errors[0] and "the last good checkpoint, step 2, is kept" in \
        errors[0].lower() and "Traceback" not in err
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2"]

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", real)
    (workdir / "checkpoints" / "4.orbax-checkpoint-tmp-1764835200").mkdir()  # a killed save's
    assert main([SMOKE, f"--workdir={workdir}"]) == 0
    out = capsys.readouterr().out
    assert "removed 1 unfinished checkpoint save(s)" in out and "resumed at step 2" in out
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]


# -- nothing on disk overwritten or lost --------------------------------------------------------
def test_a_resume_of_another_run_is_refused_and_config_json_kept(copy, capsys):
    saved = (copy / "config.json").read_bytes()
    assert main([SMOKE, f"--workdir={copy}", "--set", "model.width=8"]) == 2
    err = capsys.readouterr().err
    assert "model.width: 4 there, 8 now" in err and "another --workdir" in err
    assert main(["--experiment=pose_synthetic:smoke", f"--workdir={copy}"]) == 2
    assert "experiment: 'seg_synthetic' there, 'pose_synthetic' now" in capsys.readouterr().err
    assert (copy / "config.json").read_bytes() == saved


def test_a_resume_keeps_config_json_and_metrics_one_curve(copy, capsys):
    """Step 4's checkpoint has an emptied data-iterator file: the resume falls back to step 2
    (step 4 kept aside), logging every step now. config.json stays the original, the change is
    recorded beside it, and metrics.jsonl holds each step once (the replayed rows kept in
    metrics.replayed.jsonl)."""
    saved = (copy / "config.json").read_bytes()
    (copy / "checkpoints" / "4" / "data" / "process_0-of-1.json").write_text("")
    assert main([SMOKE, f"--workdir={copy}", "--set", "loop.log_every=1"]) == 0
    assert sorted(os.listdir(copy / "checkpoints")) == ["2", "4", "4.unrestorable"]
    assert (copy / "config.json").read_bytes() == saved
    later = json.loads((copy / "config.step000002.json").read_text())
    assert later["loop"]["log_every"] == 1
    train = [r["step"] for r in rows(copy) if r["split"] == "train"]
    assert train == [2, 3, 4]
    replayed = [json.loads(line) for line in open(copy / "metrics.replayed.jsonl")]
    assert sorted({r["step"] for r in replayed}) == [4]
    # TensorBoard: the resumed file purges the first attempt's steps after 2 (TensorBoard's
    # SessionLog START at step 3), so the curves carry on without duplicate steps.
    from test_trainer import tensorboard_events

    starts = [e.step for e in tensorboard_events(copy / "tensorboard")
              if e.HasField("session_log") and e.session_log.status == e.session_log.START]
    assert starts == [3]
    out = capsys.readouterr().out
    assert "recorded in" in out
    assert f"pictures: {copy / 'pictures'}" in out and f"figures: {copy / 'metrics.jsonl'}" in out


@pytest.mark.parametrize("broken", ["array chunks", "_METADATA"])
def test_a_corrupt_latest_checkpoint_falls_back_and_is_kept_aside(copy, capsys, broken):
    state = copy / "checkpoints" / "4" / "state"
    if broken == "_METADATA":
        (state / "_METADATA").write_text("")
    for chunk in (state / "ocdbt.process_0" / "d").iterdir() if broken != "_METADATA" else ():
        chunk.write_bytes(chunk.read_bytes()[:100])  # truncated
    assert main([SMOKE, f"--workdir={copy}", "--mode=eval"]) == 0
    captured = capsys.readouterr()
    assert "checkpoint step 4" in captured.err and "does not restore" in captured.err
    assert "step 2 eval: miou" in captured.out
    assert sorted(os.listdir(copy / "checkpoints")) == ["2", "4.unrestorable"]
    assert rows(copy)[-1]["step"] == 2


def test_eval_prints_its_figures_when_metrics_jsonl_cannot_be_written(copy, capsys):
    (copy / "metrics.jsonl").unlink()
    (copy / "metrics.jsonl").mkdir()  # unwritable (the tests may run as root: chmod would not do)
    assert main([SMOKE, f"--workdir={copy}", "--mode=eval"]) == 0
    captured = capsys.readouterr()
    assert "step 4 eval: miou" in captured.out
    assert f"could not write {copy / 'metrics.jsonl'}" in captured.err


# -- errors early and in one line ---------------------------------------------------------------
def test_predicting_a_folder_goes_past_bad_files_and_lists_them(copy, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "a_good.png"), np.full((40, 56, 3), 90, np.uint8))
    (images / "b_cut.jpg").write_bytes(jpeg_bytes()[:300])
    (images / "c_text.png").write_bytes(b"not an image")
    assert main([SMOKE, f"--workdir={copy}", "--mode=predict", f"--input={images}",
                 f"--output={tmp_path / 'out'}"]) == 1
    err = capsys.readouterr().err
    assert "2 of the images failed" in err and "b_cut.jpg" in err and "c_text.png" in err
    assert sorted(os.listdir(tmp_path / "out")) == ["a_good_mask.png", "a_good_overlay.png"]


def test_a_checkpoint_of_another_shape_is_one_paragraph(copy, capsys):
    (copy / "config.json").unlink()  # no saved config to compare with: the arrays say it
    assert main([SMOKE, f"--workdir={copy}", "--mode=eval", "--set", "model.width=8"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "saved (4,), model (8,)" in err
    assert "Event loop" not in err and "Traceback" not in err and len(err.splitlines()) == 1


def test_pretrained_weights_that_do_not_fit_are_named_before_anything_compiles(
        tmp_path, capsys, monkeypatch):
    import jax

    from hrnet_jax.models import create_model, tiny_arch
    from hrnet_jax.training.loop import Trainer

    monkeypatch.setattr(Trainer, "restore_or_init",
                        lambda *args, **kwargs: pytest.fail("the initialisation ran first"))
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    assert main([SMOKE, f"--workdir={tmp_path / 'a'}", "--set", f"model.pretrained={empty}"]) == 2
    assert f"{empty} is empty (0 bytes)" in capsys.readouterr().err
    # A state_dict of another width: every backbone tensor mismatches; a few are listed.
    wider = create_model(tiny_arch(8), "segmentation", 5)
    shapes = jax.eval_shape(lambda: wider.init(jax.random.key(0), np.zeros((1, 64, 64, 3)),
                                               train=False))
    zeros = jax.tree.map(lambda leaf: np.zeros(leaf.shape, leaf.dtype), shapes)
    other = tmp_path / "w8.safetensors"
    weights.save_safetensors(other, weights.to_torch(zeros, "segmentation"))
    assert main([SMOKE, f"--workdir={tmp_path / 'b'}", "--set", f"model.pretrained={other}"]) == 2
    err = capsys.readouterr().err
    assert "does not fit the model" in err and "more shape mismatches" in err
    assert len(err.splitlines()) <= weights.SHOWN_KEYS + 6


def test_weights_boxes_and_files_that_are_not_what_they_claim(tmp_path, capsys):
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="garbage.pth is not a PyTorch state_dict file"):
        weights.load_state_dict_file(garbage)
    pickled = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)  # a model object, not its state_dict
    with pytest.raises(ValueError, match="save its state_dict instead") as error:
        weights.load_state_dict_file(pickled)
    assert "weights_only=False" not in str(error.value)  # not torch's advice to run its code
    not_json = tmp_path / "boxes.json"
    not_json.write_text("[[1, 2, 3, 4],")
    with pytest.raises(ValueError, match=f"{not_json}: not JSON"):
        read_boxes(str(not_json))
    boxes = tmp_path / "ok.json"
    boxes.write_text(json.dumps([[0, 0, 10, 20], [5, 5, 0, 8], {"bbox": [1, 1, 4, -2]}]))
    np.testing.assert_array_equal(read_boxes(str(boxes)), [[0, 0, 10, 20]])
    assert "skipped 2 boxes without area" in capsys.readouterr().err
