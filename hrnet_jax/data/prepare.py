"""Prepare a dataset once into ArrayRecord files that training reads through `tfds.data_source`.

    python -m hrnet_jax.data.prepare cityscapes --manual_dir DIR [--data_dir ~/tensorflow_datasets]
    python -m hrnet_jax.data.prepare cityscapes --manual_dir DIR --data_dir gs://BUCKET/tfds
    python -m hrnet_jax.data.prepare lip --manual_dir LIP_ROOT
    python -m hrnet_jax.data.prepare pascal_context --manual_dir VOCdevkit/VOC2010
    python -m hrnet_jax.data.prepare coco_keypoints --manual_dir COCO_ROOT
    python -m hrnet_jax.data.prepare coco_keypoints_crops --manual_dir COCO_ROOT  # persons as crops
    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO_ROOT
    python -m hrnet_jax.data.prepare mpii --manual_dir MPII_ROOT
    python -m hrnet_jax.data.prepare wflw --manual_dir WFLW_ROOT   # or 300w, cofw, aflw
    python -m hrnet_jax.data.prepare imagenet2012 --manual_dir ILSVRC2012_TARS

Needs the `prepare` extra (`pip install -e ".[prepare]"`: TensorFlow, with which tfds encodes;
without it this says so in one line). Each dataset's
builder is named in its file under hrnet_jax/data/datasets/. A `--data_dir` in a bucket is
built on local disk (under ~/.cache/hrnet_jax, or $HRNET_JAX_CACHE), then uploaded.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

# TensorFlow, which tfds encodes with, would open with its CPU-feature notices.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from hrnet_jax import storage
from hrnet_jax.data import datasets

DEFAULT_DATA_DIR = os.path.expanduser(datasets.DEFAULT_DATA_DIR)


def prepare(name: str, manual_dir: str, data_dir: str = DEFAULT_DATA_DIR) -> Any:
    """Build the ArrayRecord files of dataset `name` (skipped when already there); returns the
    builder."""
    return datasets.get(name).prepare(manual_dir, data_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=datasets.preparable())
    parser.add_argument("--manual_dir", required=True, help="the official downloads")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR)
    parser.add_argument("--verbose", action="store_true",
                        help="a failure's whole traceback, not only its one line")
    args = parser.parse_args(argv)
    try:
        builder = prepare(args.dataset, args.manual_dir, args.data_dir)
    except ImportError as error:  # the core install trains; preparing needs TensorFlow's tfds
        raise SystemExit(f"error: preparing datasets needs the prepare extra (pip install -e "
                         f"\".[prepare]\", or pip install 'hrnet_jax[prepare]'); missing: "
                         f"{error.name or error}") from None
    except (ValueError, OSError) as error:  # a missing folder, a corrupt file, a bad label
        if args.verbose:
            raise
        raise SystemExit(f"error: {args.dataset}: {error} (--verbose shows where)") from None
    where = args.data_dir if storage.is_remote(args.data_dir) else builder.data_dir
    for split, info in builder.info.splits.items():
        print(f"{args.dataset} {split}: {info.num_examples} examples in {where}")


if __name__ == "__main__":
    main()
