"""Runs whose workdir, data and weights live in a bucket: everything against a real GCS server of
this machine (fake-gcs-server, tests/gcs_emulator.py), through the same clients a TPU pod uses
(gcsfs under etils.epath, TensorStore under orbax). Nothing in the project is mocked."""

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

from hrnet_jax import storage

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_files_on_a_bucket_are_written_whole_copied_moved_and_staged(bucket, tmp_path):
    folder = f"{bucket}/files"
    storage.write_atomic(f"{folder}/a.json", '{"a": 1}')
    storage.write_atomic(f"{folder}/a.json", '{"a": 2}')  # replaced whole, never appended
    assert json.loads(storage.path(f"{folder}/a.json").read_text()) == {"a": 2}
    picture = np.random.default_rng(0).integers(0, 255, (8, 12, 3), dtype=np.uint8)
    storage.write_png(f"{folder}/sub/p.png", picture)
    decoded = cv2.imdecode(np.frombuffer(storage.path(f"{folder}/sub/p.png").read_bytes(),
                                         np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    np.testing.assert_array_equal(decoded, picture)
    assert [os.fspath(p) for p in storage.files_under(folder)] == [f"{folder}/a.json",
                                                                   f"{folder}/sub/p.png"]
    # A folder moved on a bucket: copied whole, then the originals deleted.
    storage.move(folder, f"{bucket}/moved")
    assert not storage.path(folder).exists()
    assert storage.path(f"{bucket}/moved/sub/p.png").read_bytes() == cv2.imencode(
        ".png", picture[..., ::-1])[1].tobytes()
    # Staged once to local disk; a second staging downloads nothing; a damaged local copy
    # (another size) is fetched again.
    local = tmp_path / "staged"
    first = storage.stage(f"{bucket}/moved", local)
    assert first > 0 and (local / "a.json").read_text() == '{"a": 2}'
    assert storage.stage(f"{bucket}/moved", local) == 0
    (local / "a.json").write_text("{}")
    assert storage.stage(f"{bucket}/moved", local) == len('{"a": 2}')
    assert not list(local.rglob(".partial-*"))  # only whole files
    with storage.local_file(f"{bucket}/moved/a.json") as copy:
        assert pathlib.Path(copy).name == "a.json" and pathlib.Path(copy).read_text() == '{"a": 2}'
    # Person boxes for --mode=predict read from the bucket.
    from hrnet_jax.predict import read_boxes

    storage.write_atomic(f"{bucket}/boxes.json", json.dumps([{"bbox": [1, 2, 30, 40]}]))
    np.testing.assert_array_equal(read_boxes(f"{bucket}/boxes.json"), [[1, 2, 30, 40]])
    storage.check_writable(f"{bucket}/new/folder")
    assert not storage.path(f"{bucket}/new/folder").exists() or not storage.files_under(
        f"{bucket}/new/folder")  # the probe is deleted


def test_a_bucket_that_does_not_exist_is_one_line_and_nothing_is_written(bucket, tmp_path,
                                                                          capsys, monkeypatch):
    from hrnet_jax.main import main

    monkeypatch.chdir(tmp_path)
    assert main(["--experiment=seg_synthetic:smoke", "--workdir=gs://no-such-bucket/run"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0, error
    assert "gs://no-such-bucket/run" in error and "check that the bucket exists" in error
    assert not list(tmp_path.iterdir())  # nothing written here instead
    with pytest.raises(storage.StorageError, match="gs://no-such-bucket/x.png"):
        with storage.errors_named("gs://no-such-bucket/x.png", "write"):
            storage.write_png("gs://no-such-bucket/x.png", np.zeros((2, 2, 3), np.uint8))


def test_a_bucket_without_permission_is_one_line_and_nothing_is_written(tmp_path):
    import gcs_emulator

    refusing = gcs_emulator.Refusing()
    try:
        env = {**os.environ, **gcs_emulator.environment(refusing.url), "PYTHONPATH": str(ROOT)}
        result = subprocess.run([sys.executable, "-m", "hrnet_jax.main",
                                 "--experiment=seg_synthetic:smoke", "--workdir=gs://locked/run"],
                                env=env, cwd=tmp_path, capture_output=True, text=True,
                                timeout=300)
    finally:
        refusing.stop()
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gs://locked/run" in errors[0], result.stderr[-3000:]
    assert "Forbidden" in errors[0] and "credentials may read and write it" in errors[0]
    assert "Traceback" not in result.stderr
    assert not list(tmp_path.iterdir())


# -- a Cityscapes run in the bucket ---------------------------------------------------------
STEPS = ("loop.num_steps=40", "loop.log_every=1", "checkpoint.every_steps=4",
         "checkpoint.keep=20")


def command(workdir: str, data_dir: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "hrnet_jax.main", "--experiment=seg_cityscapes:smoke",
            f"--workdir={workdir}", f"--set=data.data_dir={data_dir}",
            *[f"--set={o}" for o in STEPS], *extra]


def bucket_rows(workdir: str, name: str = "metrics.jsonl") -> list[dict]:
    file = storage.path(f"{workdir}/{name}")
    return [json.loads(line) for line in file.read_text().splitlines()] if file.exists() else []


def train_losses(workdir: str) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in bucket_rows(workdir) if r["split"] == "train"}


@pytest.fixture(scope="module")
def bucket_runs(bucket, shared_data, tmp_path_factory):
    """The Cityscapes sample prepared into the bucket; a run there straight through, and the
    same run SIGKILLed after its step-4 checkpoint, then rerun to the end."""
    from hrnet_jax.data import prepare

    monkeypatch = pytest.MonkeyPatch()
    monkeypatch.setenv("HRNET_JAX_CACHE", str(tmp_path_factory.mktemp("cache")))  # this disk
    data_dir = f"{bucket}/tfds"
    prepare.prepare("cityscapes", str(shared_data / "cityscapes_mini"), data_dir)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    straight = subprocess.run(command(f"{bucket}/straight", data_dir), env=env,
                              capture_output=True, text=True, timeout=600)
    assert straight.returncode == 0, straight.stderr[-3000:]

    killed = f"{bucket}/killed"
    process = subprocess.Popen(command(killed, data_dir), env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if storage.path(f"{killed}/checkpoints/4").is_dir() and max(
                train_losses(killed), default=0) >= 6:
            break
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    resumed = subprocess.run(command(killed, data_dir), env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    yield {"data_dir": data_dir, "straight": f"{bucket}/straight", "killed": killed,
           "resumed_output": resumed.stdout + resumed.stderr}
    monkeypatch.undo()


def test_a_run_killed_in_a_bucket_resumes_bit_exact(bucket_runs):
    expected = train_losses(bucket_runs["straight"])
    assert sorted(expected) == list(range(1, 41))
    killed = bucket_runs["killed"]
    assert "resumed at step" in bucket_runs["resumed_output"]
    assert train_losses(killed) == expected  # the same losses, bit for bit, one curve
    replayed = bucket_rows(killed, "metrics.replayed.jsonl")
    assert replayed, "the kill came after the run had finished"
    for row in replayed:
        assert row["split"] != "train" or row["loss"] == expected[row["step"]]
    steps = sorted(int(p.name) for p in storage.path(f"{killed}/checkpoints").iterdir()
                   if p.name.isdigit())
    assert steps == list(range(4, 41, 4))
    assert json.loads(storage.path(f"{killed}/config.json").read_text())["name"] == \
        "seg_cityscapes:smoke"


def test_tensorboard_files_pictures_eval_predict_and_export_in_the_bucket(
        bucket_runs, bucket, shared_data, tmp_path, capsys):
    import jax
    from test_trainer import tensorboard_events

    from hrnet_jax.main import main

    workdir, data_dir = bucket_runs["straight"], bucket_runs["data_dir"]
    # TensorBoard's event files, uploaded whole, hold the curve of metrics.jsonl.
    local_tensorboard = tmp_path / "tensorboard"
    storage.copy_tree(f"{workdir}/tensorboard", local_tensorboard)
    losses = {event.step: value.simple_value for event in tensorboard_events(local_tensorboard)
              for value in event.summary.value if value.tag == "train/loss"}
    assert losses == pytest.approx(train_losses(workdir), rel=1e-6)
    assert any(p.name.startswith("step000040_") for p in storage.path(f"{workdir}/pictures").iterdir())

    base = ["--experiment=seg_cityscapes:smoke", f"--workdir={workdir}",
            f"--set=data.data_dir={data_dir}"]
    assert main(base + ["--mode=eval"]) == 0
    last = bucket_rows(workdir)[-1]
    assert last["split"] == "eval" and last["step"] == 40 and 0 <= last["miou"] <= 1
    # Predict images read from the bucket into a bucket folder.
    image = next((shared_data / "cityscapes_mini" / "leftImg8bit" / "val").rglob("*.png"))
    storage.copy_file(image, f"{bucket}/inputs/{image.name}")
    output = f"{bucket}/predictions"
    assert main(base + ["--mode=predict", f"--input={bucket}/inputs", f"--output={output}"]) == 0
    mask = storage.path(f"{output}/{image.stem}_mask.png").read_bytes()
    assert cv2.imdecode(np.frombuffer(mask, np.uint8), cv2.IMREAD_COLOR).shape == \
        cv2.imread(str(image)).shape
    # Export to the bucket; the artifact runs.
    artifact = f"{bucket}/export/model.jax"
    assert main(base + ["--mode=export", f"--output={artifact}"]) == 0
    exported = jax.export.deserialize(bytearray(storage.path(artifact).read_bytes()))
    description = json.loads(storage.path(artifact + ".json").read_text())
    height, width = description["input"]["height"], description["input"]["width"]
    outputs = exported.call(np.zeros((1, height, width, 3), np.float32))
    assert np.all(np.isfinite(np.asarray(jax.tree.leaves(outputs)[0])))
    # model.pretrained read from the bucket: another run starts from this run's backbone.
    capsys.readouterr()
    assert main(["--experiment=seg_cityscapes:smoke", f"--workdir={bucket}/from_pretrained",
                 f"--set=data.data_dir={data_dir}", f"--set=model.pretrained={workdir}",
                 "--mode=eval", "--from_init"]) == 0
    assert f"pretrained run checkpoint {workdir} loaded into the backbone" in capsys.readouterr().out


@pytest.mark.multihost
@pytest.mark.slow  # the CI budget: two processes are in test_multihost, buckets in the rest here
def test_two_processes_share_a_bucket_workdir_and_resume_together(bucket):
    from test_multihost import OVERRIDES, free_port, launch

    workdir = f"{bucket}/multihost"
    for steps in (3, 6):
        overrides = [o for o in OVERRIDES if not o.startswith("loop.num_steps")] + [
            f"loop.num_steps={steps}"]
        port = free_port()
        hosts = [launch(workdir, 2, overrides, (port, 2, i)) for i in range(2)]
        outputs = [h.communicate(timeout=600)[0] for h in hosts]
        assert [h.returncode for h in hosts] == [0, 0], outputs[0][-3000:] + outputs[1][-3000:]
    assert "resumed at step 3" in outputs[0] or "resuming at step 3" in outputs[0]
    assert sorted(train_losses(workdir)) == list(range(1, 7))
    assert sorted(int(p.name) for p in storage.path(f"{workdir}/checkpoints").iterdir()
                  if p.name.isdigit()) == [3, 6]
    # Process 0 alone wrote the once-files: one config.json, a step copy for the longer run.
    assert storage.path(f"{workdir}/config.step000003.json").exists()


def test_a_bucket_that_vanishes_mid_run_stops_with_one_line(bucket, tmp_path):
    import gcs_emulator

    url = os.environ["STORAGE_EMULATOR_HOST"]
    gcs_emulator.create_bucket(url, "vanishing")
    workdir = "gs://vanishing/run"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-m", "hrnet_jax.main", "--experiment=seg_synthetic:smoke",
         f"--workdir={workdir}", "--set=loop.num_steps=100000", "--set=loop.log_every=1",
         "--set=checkpoint.every_steps=2"], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if storage.path(f"{workdir}/checkpoints/2").is_dir():
            break
        time.sleep(0.05)
    gcs_emulator.delete_bucket(url, "vanishing")
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err[-3000:]
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "gs://vanishing/run" in errors[0], err[-3000:]
    assert "check that the bucket exists" in errors[0]
    # (orbax's background save thread logs its own traceback before this line: its logging.)
    assert not list(tmp_path.iterdir())  # nothing written locally instead


def test_storage_speed_script_reports_local_and_bucket_figures(bucket, shared_data):
    """scripts/storage_speed.py at the tests' tiny size against the test bucket: the figures of
    its note, each measured."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("storage_speed", ROOT / "scripts" /
                                                  "storage_speed.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    report = script.main(["--arch=tiny", f"--bucket={bucket}/speed", "--passes=2",
                          f"--cityscapes={shared_data / 'cityscapes_mini'}"])
    assert report["state_mb"] > 0
    for where in ("checkpoint_local", "checkpoint_bucket"):
        assert report[where]["save_s"] > 0 and report[where]["restore_s"] > 0
    for where in ("read_local", "read_bucket_first", "read_bucket_staged"):
        assert report[where]["records_per_s"] > 0
    assert storage.path(f"{bucket}/speed/ckpt").is_dir()
