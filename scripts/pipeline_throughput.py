"""Images/s of the Cityscapes training pipeline (decode, scale 0.5-2.1, pad, 512x1024 crop,
flip, normalise, batch) against the images/s the train step consumes, on this machine.

    python scripts/pipeline_throughput.py --data_dir DIR [--workers 8] [--batches 20] [--step]

Without a prepared Cityscapes in DIR, pass --from_sample shared/data/cityscapes_mini: its real
image and labels are resized to the full 1024x2048 and prepared (a stand-in for the real files,
with the same sizes and PNG sizes of the same order). --step also times the W48 train step.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import tempfile
import time

import cv2


def full_size_tree(sample: str, copies: int) -> str:
    """The sample's image and labels at 1024x2048 as `copies` training images."""
    root = pathlib.Path(tempfile.mkdtemp())
    src = pathlib.Path(sample)
    image = cv2.imread(str(next((src / "leftImg8bit").rglob("*.png"))))
    label = cv2.imread(str(next((src / "gtFine").rglob("*labelTrainIds.png"))), cv2.IMREAD_UNCHANGED)
    image = cv2.resize(image, (2048, 1024), interpolation=cv2.INTER_LINEAR)
    label = cv2.resize(label, (2048, 1024), interpolation=cv2.INTER_NEAREST)
    for split in ("train", "val"):
        (root / "leftImg8bit" / split / "city").mkdir(parents=True)
        (root / "gtFine" / split / "city").mkdir(parents=True)
        for k in range(copies if split == "train" else 1):
            cv2.imwrite(str(root / "leftImg8bit" / split / "city" / f"city_{k:06d}_000019_leftImg8bit.png"), image)
            cv2.imwrite(str(root / "gtFine" / split / "city" / f"city_{k:06d}_000019_gtFine_labelTrainIds.png"), label)
    return str(root)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_dir", default=os.path.expanduser("~/tensorflow_datasets"))
    parser.add_argument("--from_sample", help="prepare a full-size stand-in from this sample")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--batch", type=int, default=12)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--step", action="store_true", help="also time the W48 train step")
    args = parser.parse_args()
    from hrnet_jax import experiments
    from hrnet_jax.data import pipeline, prepare
    from hrnet_jax.tasks import make_task

    if args.from_sample:
        tree = full_size_tree(args.from_sample, copies=24)
        args.data_dir = tempfile.mkdtemp()
        prepare.prepare("cityscapes", tree, args.data_dir)
        shutil.rmtree(tree)
    config = experiments.load("seg_cityscapes")
    config.data.data_dir, config.data.batch_size = args.data_dir, args.batch
    task = make_task(config)
    train, _ = task.dataset.sources(config.data)
    loader = pipeline.train_loader(train, task.prepare, args.batch, 0, args.workers, task.augment)
    iterator = iter(loader)
    next(iterator)  # workers started
    start = time.perf_counter()
    for _ in range(args.batches):
        batch = next(iterator)
    seconds = time.perf_counter() - start
    result = {"pipeline_images_per_s": round(args.batches * args.batch / seconds, 2),
              "workers": args.workers, "batch": args.batch, "crop": list(batch["image"].shape[1:3]),
              "cpus": os.cpu_count()}
    if args.step:
        import subprocess
        import sys
        out = subprocess.run([sys.executable, "scripts/compile_time.py", "--set=model.arch=hrnet_w48",
                              "--set=data.name=synthetic_segmentation", "--set=data.batch_size=1",
                              "--set=data.image_size=512,1024", "--set=model.num_classes=5",
                              "--set=optim.optimizer=sgd", "--repeats=2"],
                             capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        step_s = json.loads(out)["step_s"]
        result["train_step_images_per_s"] = round(1 / step_s, 3)
        result["ratio_pipeline_to_step"] = round(result["pipeline_images_per_s"] * step_s, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
