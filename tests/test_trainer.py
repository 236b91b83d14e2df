"""The shared trainer end to end on the synthetic experiments' :smoke variants."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from hrnet_jax import config as config_lib, experiments
from hrnet_jax.training.loop import Trainer

ROOT = pathlib.Path(__file__).resolve().parents[1]


def read_metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def configured(name: str, *overrides: str):
    config = experiments.load(name)
    for assignment in overrides:
        config_lib.apply_override(config, assignment)
    return config


class SmokeRuns(dict):
    """Each demo's :smoke run, trained when a test first asks for it: the xdist workers that
    share this module train only the runs their tests read."""

    EVALS = {"seg_synthetic": ("miou", "loop.eval_every=2"), "pose_synthetic": ("pck", "loop.eval_every=0"),
             "cls_synthetic": ("top1", "loop.eval_every=0"), "det_synthetic": ("ap", "loop.eval_every=0")}

    def __init__(self, tmp_path_factory):
        super().__init__()
        self.tmp_path_factory = tmp_path_factory

    def __missing__(self, name):
        metric, evals = self.EVALS[name]
        workdir = str(self.tmp_path_factory.mktemp(name))
        config = configured(f"{name}:smoke", evals)
        result = Trainer(config, workdir).train()
        self[name] = (workdir, result, metric, config)
        return self[name]


@pytest.fixture(scope="module")
def smoke_runs(tmp_path_factory):
    return SmokeRuns(tmp_path_factory)


# Detection's run through the same trainer is tested on the real COCO sample
# (test_detection.py's smoke), and its generated shapes feed test_detection's Faster R-CNN step.
@pytest.mark.parametrize("name", ["seg_synthetic", "pose_synthetic", "cls_synthetic"])
def test_smoke_run_writes_config_metrics_checkpoints_and_pictures(smoke_runs, name):
    workdir, result, metric, config = smoke_runs[name]
    saved = config_lib.from_dict(json.load(open(os.path.join(workdir, "config.json"))))
    assert saved == config
    lines = read_metrics(workdir)
    train = [l for l in lines if l["split"] == "train"]
    assert [l["step"] for l in train] == [2, 4]
    for line in train:
        assert {"loss", "lr", "images_per_s", "grad_norm"} <= set(line)
        assert np.isfinite(line["loss"]) and line["images_per_s"] > 0
    evals = [l for l in lines if l["split"] == "eval"]
    # seg evaluates every 2 steps as well as at the end; the others only at the end.
    assert [l["step"] for l in evals] == ([2, 4] if config.loop.eval_every else [4])
    assert 0.0 <= evals[-1][metric] <= 1.0
    assert result[metric] == evals[-1][metric]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["2", "4"]
    pictures = sorted(os.listdir(os.path.join(workdir, "pictures")))
    assert pictures == [f"step000004_{i}.png" for i in range(4)]


def test_nan_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    """The command ends with one line naming the step and the checkpoint kept, no traceback.
    Figures are checked at logs, saves and evaluations only (no host sync a step): the NaN at
    step 6, found at step 8, is still named as step 6."""
    from hrnet_jax.main import main

    # The learning rate jumps to 1e32 after step 4 of 8: the loss turns NaN at step 6.
    overrides = ("loop.num_steps=8", "loop.log_every=8", "loop.eval_every=0",
                 "checkpoint.every_steps=4", "optim.optimizer=sgd", "optim.warmup_steps=0",
                 "optim.schedule=multistep", "optim.milestones=0.5", "optim.decay_factor=1e35")
    assert main(["--experiment=seg_synthetic:smoke", f"--workdir={tmp_path}",
                 *[f"--set={o}" for o in overrides]]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: training diverged: loss nan") and "at step 6" in err[-1]
    assert f"step 4, is kept in {tmp_path / 'checkpoints'}" in err[-1]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["4"]
    metrics = tmp_path / "metrics.jsonl"  # the only log step (8) came after the NaN
    assert not metrics.exists() or not read_metrics(tmp_path)


def run_cli(workdir, *overrides, wait=True):
    command = [sys.executable, "-m", "hrnet_jax.main", "--experiment=seg_synthetic:smoke",
               f"--workdir={workdir}", *[f"--set={o}" for o in overrides]]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if wait:
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.slow  # the fast tier's SIGKILL resume is test_storage's, which asserts the same
def test_resume_after_sigkill_reproduces_the_uninterrupted_losses(tmp_path):  # (in a bucket)
    overrides = ("loop.num_steps=24", "loop.log_every=1", "checkpoint.every_steps=8",
                 "data.image_size=64x64", "data.batch_size=8")
    straight = run_cli(tmp_path / "straight", *overrides)
    assert straight.returncode == 0, straight.stderr[-2000:]
    expected = {l["step"]: l["loss"] for l in read_metrics(tmp_path / "straight") if l["split"] == "train"}

    workdir = tmp_path / "killed"
    process = run_cli(workdir, *overrides, wait=False)
    deadline = time.time() + 300
    while time.time() < deadline:  # kill once step 8 is checkpointed and training has moved on
        done = (workdir / "checkpoints" / "8").is_dir() and (workdir / "metrics.jsonl").exists() \
            and any(l["step"] >= 10 for l in read_metrics(workdir))
        if done or process.poll() is not None:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = run_cli(workdir, *overrides)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # metrics.jsonl is one curve; the rows of the steps trained twice moved aside.
    train = [l for l in read_metrics(workdir) if l["split"] == "train"]
    assert [l["step"] for l in train] == sorted(expected)
    assert {l["step"]: l["loss"] for l in train} == expected
    replayed = [json.loads(line) for line in open(workdir / "metrics.replayed.jsonl")]
    assert replayed, "the kill came after the run had finished"
    for line in replayed:  # the first attempt's losses of those steps, the same again
        assert line["split"] != "train" or line["loss"] == expected[line["step"]], line


@pytest.mark.multihost
def test_multi_device_steps_and_restore_onto_fewer_devices():
    """8 simulated CPU devices: data=8 and data=4 x fsdp=2 agree with one device; a checkpoint
    of the 8-device run restores onto 4 devices unchanged (see tests/multidevice_check.py)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
    result = subprocess.run([sys.executable, str(ROOT / "tests" / "multidevice_check.py")],
                            env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["devices"] == 8
    assert report["data8_vs_single"] < 1e-4
    assert report["data4_fsdp2_vs_single"] < 1e-4
    assert report["fsdp_sharded_leaves"] > 0
    assert report["restored_8_to_4_max_difference"] == 0.0
    assert "data.batch_size=12" in report["indivisible_batch_refusal"]
    assert "multiple of 8" in report["indivisible_batch_refusal"]


def signalled_once_training(workdir, number: int) -> tuple[int, str, list[int]]:
    """A 400-step smoke run sent signal `number` once it has logged step 5: its exit code, its
    stderr and the steps saved."""
    command = [sys.executable, "-m", "hrnet_jax.main", "--experiment=seg_synthetic:smoke",
               f"--workdir={workdir}", "--set=loop.num_steps=400", "--set=loop.log_every=1",
               "--set=checkpoint.every_steps=1000"]
    process = subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if (workdir / "metrics.jsonl").exists() and any(
                l["step"] >= 5 for l in read_metrics(workdir)):
            break
        time.sleep(0.05)
    process.send_signal(number)
    _, err = process.communicate(timeout=120)
    return process.returncode, err, sorted(int(p) for p in os.listdir(workdir / "checkpoints")
                                           if p.isdigit())


def test_sigterm_saves_a_checkpoint_then_exits(tmp_path):
    code, err, saved = signalled_once_training(tmp_path, signal.SIGTERM)
    assert code == 0, err[-2000:]
    assert len(saved) == 1 and 5 <= saved[0] < 400  # the step it was at, not a periodic save


def test_ctrl_c_saves_the_step_reached_and_the_same_command_resumes(tmp_path, capsys):
    """The first Ctrl-C is treated as SIGTERM (saved, said, exit 130); the rerun says where it
    resumed."""
    code, err, saved = signalled_once_training(tmp_path, signal.SIGINT)
    assert code == 130, err[-2000:]
    assert len(saved) == 1 and 5 <= saved[0] < 400
    assert f"interrupted: saved step {saved[0]}" in err and "Traceback" not in err

    from hrnet_jax.main import main

    assert main(["--experiment=seg_synthetic:smoke", f"--workdir={tmp_path}",
                 f"--set=loop.num_steps={saved[0] + 1}"]) == 0
    assert f"resumed at step {saved[0]}" in capsys.readouterr().out


def tensorboard_events(folder) -> list:
    """Every event of the TensorBoard files in `folder`, read by TensorFlow's own reader."""
    import tensorflow as tf

    events = []
    for path in sorted(folder.glob("events.out.tfevents.*")):
        events += list(tf.compat.v1.train.summary_iterator(str(path)))
    return events


def test_tensorboard_holds_the_figures_of_metrics_jsonl_and_the_pictures(smoke_runs):
    workdir, *_ = smoke_runs["seg_synthetic"]
    events = tensorboard_events(pathlib.Path(workdir) / "tensorboard")
    scalars = {(e.step, v.tag): v.simple_value for e in events for v in e.summary.value
               if v.HasField("simple_value")}
    images = {(e.step, v.tag): v.image for e in events for v in e.summary.value
              if v.HasField("image")}
    expected = {}
    for line in read_metrics(workdir):
        for key, value in line.items():
            if key not in ("step", "split"):
                tag = key if "/" in key else f"{line['split']}/{key}"
                expected[(line["step"], tag)] = value
    assert expected and set(expected) == set(scalars)
    for key, value in expected.items():
        assert scalars[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert {(4, "train/loss"), (2, "eval/miou"), (4, "iou/0")} <= set(scalars)
    picture = cv2.imread(str(sorted((pathlib.Path(workdir) / "pictures").glob("*.png"))[0]))
    image = images[(4, "pictures/0")]
    assert (image.height, image.width) == picture.shape[:2]
    decoded = cv2.imdecode(np.frombuffer(image.encoded_image_string, np.uint8), cv2.IMREAD_COLOR)
    np.testing.assert_array_equal(decoded, picture)


def test_without_tensorboardx_the_run_says_once_that_tensorboard_is_off(tmp_path, monkeypatch,
                                                                          capsys):
    from hrnet_jax.training.workdir import TensorBoard

    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # as if not installed
    board = TensorBoard(str(tmp_path))
    board.scalars(1, "train", {"loss": 1.0})
    board.picture(1, "0", np.zeros((4, 4, 3), np.uint8))
    err = capsys.readouterr().err
    assert err.count("TensorBoard logging is off") == 1 and "pip install tensorboardX" in err
    assert not (tmp_path / "tensorboard").exists()


def test_image_by_image_evaluation_runs_on_host_threads_and_keeps_the_images_order():
    """eval.host_threads images at once; the rows come back in the images' order whatever
    order the threads finish in."""
    import threading
    import types

    from hrnet_jax.training.loop import EvaluationPass

    source = [{"index": np.array(i)} for i in range(12)]
    trainer = types.SimpleNamespace(
        config=configured("seg_synthetic:smoke", "eval.host_threads=3"), eval_source=source,
        predict_fn=lambda state: "network")
    threads, started = set(), threading.Barrier(3, timeout=10)

    def evaluate_image(predict, record):
        threads.add(threading.get_ident())
        if int(record["index"]) < 3:
            started.wait()  # the first three images are in flight together
        time.sleep(0.01 * (12 - int(record["index"])) / 12)  # later images finish sooner
        return {"index": np.array([int(record["index"]) * 10]), "network": np.array([predict])}

    rows = EvaluationPass(trainer, state={}).rows(evaluate_image)
    assert rows["index"].tolist() == [i * 10 for i in range(12)]
    assert set(rows["network"].tolist()) == {"network"} and len(threads) == 3
