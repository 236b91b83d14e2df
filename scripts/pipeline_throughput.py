"""Does the input pipeline keep up? Images/s of one worker process for each training pipeline,
and how many worker processes an accelerator's train step would need.

    python scripts/pipeline_throughput.py --fixtures ../shared/data [--cases cityscapes,...]
        [--batches 8] [--gpu_json gpu_benchmark.jsonl]

Cases (each the experiment's own training pipeline: decode, augmentation, normalisation,
batching, in one process with the loader's reader threads, as one grain worker runs it):
  cityscapes      seg_cityscapes: 1024x2048 PNGs, scale 0.5-2.0, pad, 512x1024 crop, flip
  cityscapes_raw  the same from data.name=cityscapes_raw (the frames' pixels stored raw)
  coco_pose       pose_coco:w32,256x192: one person's affine crop to 256x192, flip, heatmaps
  coco_pose_crops the same from data.name=coco_keypoints_crops (loose crops stored raw)
  coco_detection  det_coco_fcos:w18: a whole image resized to 800 x <=1333, flip, padded
  coco_instances  det_coco_rcnn:mask_rcnn,w18: the same, and every instance's RLE mask decoded
                  (mirrored with the image) and resampled inside its box to 56x56

The data are the real samples in --fixtures, prepared with the project's builders (Cityscapes'
one image and label resized to the full 1024x2048 and copied: the PNG decode of a full-size
frame is most of the cost). The step rate a worker must feed is read from gpu_benchmark.py's
JSON lines when given (--gpu_json), otherwise estimated for an H100 at the project's MFU goal
(35% of 989 bf16 TFLOP/s, train FLOPs = conv/linear MACs x 2 x 3); the printed
`workers_needed` is that rate over one worker's. One JSON line a case.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import shutil
import tempfile
import time

import cv2
import numpy as np

CASES = {"cityscapes": ("seg_cityscapes", "cityscapes", "cityscapes_mini", "seg_w48_b12"),
         "cityscapes_raw": ("seg_cityscapes", "cityscapes_raw", "cityscapes_mini", "seg_w48_b12"),
         "coco_pose": ("pose_coco:w32,256x192", "coco_keypoints", "coco_mini", "pose_w32_b64"),
         "coco_pose_crops": ("pose_coco:w32,256x192", "coco_keypoints_crops", "coco_mini",
                             "pose_w32_b64"),
         "coco_detection": ("det_coco_fcos:w18", "coco_detection", "coco_mini", None),
         "coco_instances": ("det_coco_rcnn:mask_rcnn,w18", "coco_detection", "coco_mini", None)}
# The real training sets' lengths: Cityscapes' fine train images, COCO train2017's persons the
# pose reference trains on, COCO train2017's images.
FULL_LENGTH = {"cityscapes": 2975, "cityscapes_raw": 2975, "coco_pose": 149813,
               "coco_pose_crops": 149813, "coco_detection": 117266,
               "coco_instances": 117266}


class AtFullLength:
    """The sample's records repeated to the real training set's length. grain's shuffle costs
    depend on the length: its index_shuffle took 6.5 ms a record over the 15 persons of the
    COCO sample (cycle-walking a tiny domain), 0.02 ms over COCO's 150k."""

    def __init__(self, source, length: int):
        self.source, self.length = source, length
        if hasattr(source, "groups"):  # detection's orientation groups, repeated alike
            self.groups = np.resize(np.asarray(source.groups), length)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int):
        return self.source[index % len(self.source)]
H100_BF16, MFU_GOAL = 989e12, 0.35


def full_size_cityscapes(sample: pathlib.Path, copies: int) -> str:
    """The sample's image and labels at 1024x2048 as `copies` training images (and one val)."""
    root = pathlib.Path(tempfile.mkdtemp())
    image = cv2.imread(str(next((sample / "leftImg8bit").rglob("*.png"))))
    label = cv2.imread(str(next((sample / "gtFine").rglob("*labelTrainIds.png"))),
                       cv2.IMREAD_UNCHANGED)
    image = cv2.resize(image, (2048, 1024), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (2048, 1024), interpolation=cv2.INTER_NEAREST)
    for split in ("train", "val"):
        (root / "leftImg8bit" / split / "city").mkdir(parents=True)
        (root / "gtFine" / split / "city").mkdir(parents=True)
        for k in range(copies if split == "train" else 1):
            stem = f"city_{k:06d}_000019"
            cv2.imwrite(str(root / "leftImg8bit" / split / "city" / f"{stem}_leftImg8bit.png"), image)
            cv2.imwrite(str(root / "gtFine" / split / "city" / f"{stem}_gtFine_labelTrainIds.png"),
                        label)
    return str(root)


def estimated_step_rate(config) -> float:
    """Images/s of the train step on an H100 at the MFU goal."""
    import jax
    import jax.numpy as jnp

    from hrnet_jax.models.summary import count_macs
    from hrnet_jax.training.loop import build_model

    model = build_model(config)
    size = tuple(getattr(config.data, "crop_size", None) or config.data.image_size)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3)),
                                                  train=False))
    return MFU_GOAL * H100_BF16 / (6 * count_macs(model, variables, size))


def measure(case: str, fixtures: pathlib.Path, batches: int, gpu_rates: dict[str, float]) -> dict:
    from hrnet_jax import experiments
    from hrnet_jax.data import pipeline, prepare
    from hrnet_jax.tasks import make_task

    experiment, builder, sample, gpu_case = CASES[case]
    config = experiments.load(experiment)
    data_dir = tempfile.mkdtemp()
    if builder.startswith("cityscapes"):
        tree = full_size_cityscapes(fixtures / sample, copies=16)
        prepare.prepare(builder, tree, data_dir)
        shutil.rmtree(tree)
        config.data.name = builder
    else:  # the COCO sample holds val2017 images only: its val split stands in for train
        prepare.prepare(builder, str(fixtures / sample), data_dir)
        config.data.train_split = "val"
        config.data.name = builder
    config.data.data_dir = data_dir
    task = make_task(config)
    train, _ = task.dataset.sources(config.data)
    train = AtFullLength(train, FULL_LENGTH[case])
    batch_size = min(config.data.batch_size, 8)
    iterator = iter(pipeline.train_loader(train, task.prepare, batch_size, 0, 0, task.augment,
                                          task.mix_batch))
    next(iterator)  # reader threads started
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(batches):
        batch = next(iterator)
    images = batches * batch_size
    per_worker = round(images / (time.perf_counter() - start), 2)
    cpu_per_image = (time.process_time() - cpu_start) / images  # every thread of the process
    if gpu_case in gpu_rates:
        step_rate, source = gpu_rates[gpu_case], f"gpu_benchmark {gpu_case}"
    else:
        step_rate, source = estimated_step_rate(config), "H100 estimate at 35% MFU"
    shutil.rmtree(data_dir, ignore_errors=True)
    return {"case": case, "experiment": experiment, "image": list(batch["image"].shape[1:3]),
            "images_per_s_per_worker": per_worker, "cpus": os.cpu_count(),
            "cpu_ms_per_image": round(cpu_per_image * 1000, 2),
            "images_per_cpu_s": round(1 / cpu_per_image, 1),
            "step_images_per_s": round(step_rate, 1), "step_rate_from": source,
            "workers_needed": math.ceil(step_rate / per_worker),
            "cores_needed": math.ceil(step_rate * cpu_per_image)}


def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", default=str(pathlib.Path(__file__).resolve().parents[2]
                                                  / "shared" / "data"))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--gpu_json", help="gpu_benchmark.py's output (one JSON line a case)")
    args = parser.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; the cases are {', '.join(CASES)}")
    gpu_rates = {}
    if args.gpu_json:
        with open(args.gpu_json) as f:
            rows = [json.loads(line) for line in f if line.startswith("{")]
        gpu_rates = {row["case"]: row["images_per_s"] for row in rows if "images_per_s" in row}
    results = []
    for case in args.cases.split(","):
        results.append(measure(case, pathlib.Path(args.fixtures), args.batches, gpu_rates))
        print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
