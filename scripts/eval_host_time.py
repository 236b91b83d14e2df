"""Does the evaluation keep up? The host's time an image around the network in each evaluation,
against the accelerator's time for that image's network calls.

    python scripts/eval_host_time.py --fixtures ../shared/data [--cases ...] [--images 4]

Cases (each the task's own `evaluate_image` on the real samples, prepared as in training):
  cityscapes_ms   seg_cityscapes with the paper's multi-scale and flip test (scales 0.5-1.75,
                  sliding 512x1024 windows above 1): the scaled images, each scale's scores
                  resized back to 1024x2048 and summed, the argmax and confusion matrix
  coco_pose       pose_coco:w32,256x192 with the flip test on the sample's person detections
                  (the paper's AP-56 boxes): the image sent, the persons' crops cut, flipped
                  heatmaps averaged and the quarter-offset decode on the device, the maps
                  back to the image on the host; then `summarize` (OKS-NMS, rescoring and
                  pycocotools' COCOeval), once after the last image: its share an image given apart
                  (`summarize_ms_per_image`), not in the per-image figures
  coco_masks      det_coco_rcnn:mask_rcnn: the image resized; 100 detections' 28x28 masks
                  (smooth blobs) pasted into the image and RLE-coded on the device, the
                  strings cut on the host

The network is replaced by a stand-in returning outputs of the right shapes at no cost, so
`host_ms_per_image` is the evaluation's own work: the calling thread's CPU time (OpenCV on that
thread), which leaves out what jax runs as device work (XLA:CPU executes it on its own threads
here; segmentation's scores are resampled and summed there) and `wall_ms_per_image_here` is
both on this machine. The accelerator's time an image is the
network's FLOPs for the pictures that image sent (conv and linear MACs x 2, counted per pixel
of each call's input) at the project's goal of 35% of an H100's 989 bf16 TFLOP/s. One JSON
line a case; `host_over_device` above 1: one host thread is the evaluation's bottleneck, and
`host_threads_to_keep_up` is how many images the host must work on at once (eval.host_threads,
on as many cores) to keep up with the accelerator. `--threads N` runs the images so (the wall
time per image then says what this machine's cores achieve).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import math
import pathlib
import shutil
import sys
import tempfile
import time
from typing import Any, Callable

import cv2
import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import pipeline_throughput  # noqa: E402  (the full-size Cityscapes sample)

H100_BF16, MFU_GOAL = 989e12, 0.35
CASES = {
    "cityscapes_ms": ("seg_cityscapes", "cityscapes", "cityscapes_mini",
                      ["eval.scales=0.5,0.75,1.0,1.25,1.5,1.75", "eval.flip=true"]),
    "coco_pose": ("pose_coco:w32,256x192", "coco_keypoints", "coco_mini", ["eval.flip=true"]),
    "coco_masks": ("det_coco_rcnn:mask_rcnn,w18", "coco_detection", "coco_mini", []),
}


class StandIn:
    """The network's place in `evaluate_image`: outputs of the model's shapes, at no cost, and
    the input pixels it was called on (for the accelerator's share). Called as the trainer's
    Network is: outputs as numpy, or left on the device (`on_device`)."""

    def __init__(self, outputs: Callable[[tuple[int, ...]], Any]):
        self.outputs, self.pixels, self._cache, self._on_device = outputs, 0, {}, {}

    def __call__(self, images: Any, image_sizes: Any = None) -> Any:
        self.pixels += int(np.prod(images.shape[:3]))
        if images.shape not in self._cache:
            self._cache[images.shape] = self.outputs(images.shape)
        return self._cache[images.shape]

    def on_device(self, images: Any, image_sizes: Any = None) -> Any:
        import jax

        outputs = self(images, image_sizes)
        if images.shape not in self._on_device:
            self._on_device[images.shape] = jax.device_put(outputs)
        return self._on_device[images.shape]


def detections(shape: tuple[int, ...], count: int = 100, mask_size: int = 28) -> dict:
    """Mask R-CNN's output for a batch of padded images: `count` boxes spread over the image,
    scores in order, 28x28 mask probabilities: smooth blobs, as a trained network's (noise
    would give ten times the runs of a real mask)."""
    rng = np.random.default_rng(0)
    n, height, width = shape[:3]
    corner = rng.uniform(0, 1, (n, count, 2)) * [width * 0.8, height * 0.8]
    size = rng.uniform(0.05, 0.2, (n, count, 2)) * [width, height]
    noise = rng.uniform(0, 1, (mask_size, mask_size, n * count)).astype(np.float32)
    blobs = cv2.GaussianBlur(noise, (0, 0), 3).transpose(2, 0, 1) * 2 - 0.5
    return {"boxes": np.concatenate([corner, corner + size], -1).astype(np.float32),
            "scores": np.sort(rng.uniform(0.05, 1, (n, count)))[:, ::-1].astype(np.float32),
            "classes": rng.integers(0, 80, (n, count)).astype(np.int32),
            "valid": np.ones((n, count), bool),
            "masks": blobs.reshape(n, count, mask_size, mask_size)}


def remember_device_results(module: Any, name: str) -> None:
    """`module.name`, a jitted device program, computed once for each distinct input and then
    handed back from memory (still on the device): on this machine XLA:CPU would run the
    device's share on the host's cores, and its gigabyte of temporaries an image slows the
    host's own work several times over. Its cost on an accelerator is left out of
    `device_ms_per_image` (the network's alone), which makes keeping up no easier."""
    program, results = getattr(module, name), {}

    def remembered(*args, **kwargs):
        # host inputs by value; the stand-in network's outputs are the same for a shape
        key = tuple(a.tobytes() if isinstance(a, np.ndarray) else
                    (a.shape, str(a.dtype)) if hasattr(a, "shape") else a
                    for a in args) + tuple(sorted(kwargs.items()))
        if key not in results:
            results[key] = program(*args, **kwargs)
        return results[key]

    setattr(module, name, remembered)


def macs_per_pixel(config: Any) -> float:
    """The network's conv and linear MACs an input pixel, at the evaluation's input size."""
    import jax
    import jax.numpy as jnp

    from hrnet_jax.models.summary import count_macs
    from hrnet_jax.training.loop import build_model

    model = build_model(config)
    size = (512, 1024) if config.task == "segmentation" else tuple(config.data.image_size)
    variables = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, *size, 3)),
                                                  train=False))
    return count_macs(model, variables, size) / (size[0] * size[1])


def measure(case: str, fixtures: pathlib.Path, images: int, threads: int = 1) -> dict[str, Any]:
    from hrnet_jax import config as config_lib, experiments
    from hrnet_jax.data import prepare
    from hrnet_jax.detection import paste
    from hrnet_jax.tasks import make_task

    experiment, builder, sample, settings = CASES[case]
    config = experiments.load(experiment)
    for assignment in settings:
        config_lib.apply_override(config, assignment)
    data_dir = tempfile.mkdtemp()
    if case == "cityscapes_ms":
        tree = pipeline_throughput.full_size_cityscapes(fixtures / sample, copies=1)
        prepare.prepare(builder, tree, data_dir)
        shutil.rmtree(tree)
    else:
        prepare.prepare(builder, str(fixtures / sample), data_dir)
    if case != "cityscapes_ms":  # the COCO sample holds val2017 only
        config.data.train_split = "val"
    if case == "coco_pose":
        config.data.person_boxes = str(fixtures / sample / "person_detection_results"
                                       / "COCO_val2017_detections_AP_H_56_person.json")
    config.data.data_dir = data_dir
    task = make_task(config)
    _, records = task.dataset.sources(config.data)
    classes = config.model.num_classes
    if case == "coco_masks":
        stand_in = StandIn(detections)
    else:  # logits or heatmaps at a quarter of the input
        stand_in = StandIn(lambda shape: np.zeros((shape[0], shape[1] // 4, shape[2] // 4,
                                                   classes), np.float32))
    chosen = [records[i % len(records)] for i in range(images)]
    cv2.setNumThreads(1)  # OpenCV's work on the calling thread, counted in its CPU time
    if case == "coco_masks":  # the paste's device work done once an image, as the network's
        remember_device_results(paste, "pasted_characters")
    for record in {np.shape(r["image"]): r for r in chosen}.values():  # warm: imports, caches,
        task.evaluate_image(stand_in, record)  # compilations (once a size or bucket of sizes)
    stand_in.pixels = 0

    def timed(record):  # the evaluating thread's own CPU time for the image
        start = time.thread_time()
        row = task.evaluate_image(stand_in, record)
        return row, time.thread_time() - start

    wall_start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:  # as eval.host_threads
        rows, seconds = zip(*pool.map(timed, chosen))
    seconds, wall = sum(seconds), time.perf_counter() - wall_start
    summarize_s = 0.0
    if case == "coco_pose":  # OKS-NMS, rescoring and COCOeval happen over the rows
        combined = {key: np.concatenate([row[key] for row in rows]) for key in rows[0]}
        start = time.thread_time()
        task.summarize(combined)
        summarize_s = time.thread_time() - start
    device_s = 2 * macs_per_pixel(config) * stand_in.pixels / images / (MFU_GOAL * H100_BF16)
    shutil.rmtree(data_dir, ignore_errors=True)
    host_ms = 1000 * seconds / images
    return {"case": case, "experiment": experiment, "settings": settings, "images": images,
            "host_ms_per_image": round(host_ms, 2),
            "summarize_ms_per_image": round(1000 * summarize_s / images, 2),
            "wall_ms_per_image_here": round(1000 * wall / images, 2),
            "device_ms_per_image": round(1000 * device_s, 2),
            "host_over_device": round(host_ms / (1000 * device_s), 2),
            "threads": threads,
            "host_threads_to_keep_up": math.ceil(host_ms / (1000 * device_s))}


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fixtures", default=str(pathlib.Path(__file__).resolve().parents[2]
                                                  / "shared" / "data"))
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--images", type=int, default=4, help="images timed a case")
    parser.add_argument("--threads", type=int, default=1,
                        help="images evaluated at once, as eval.host_threads")
    args = parser.parse_args(argv)
    unknown = set(args.cases.split(",")) - set(CASES)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; the cases are {', '.join(CASES)}")
    results = []
    for case in args.cases.split(","):
        results.append(measure(case, pathlib.Path(args.fixtures), args.images, args.threads))
        print(json.dumps(results[-1]), flush=True)
    return results


if __name__ == "__main__":
    main()
