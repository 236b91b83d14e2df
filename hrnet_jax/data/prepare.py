"""Prepare a dataset once into ArrayRecord files that training reads through `tfds.data_source`.

    python -m hrnet_jax.data.prepare cityscapes --manual_dir DIR [--data_dir ~/tensorflow_datasets]
    python -m hrnet_jax.data.prepare coco_keypoints --manual_dir COCO_ROOT
    python -m hrnet_jax.data.prepare coco_detection --manual_dir COCO_ROOT
    python -m hrnet_jax.data.prepare mpii --manual_dir MPII_ROOT
    python -m hrnet_jax.data.prepare wflw --manual_dir WFLW_ROOT   # or 300w, cofw, aflw
    python -m hrnet_jax.data.prepare imagenet2012 --manual_dir ILSVRC2012_TARS

Needs TensorFlow (`pip install -e ".[test]"` or `pip install tensorflow-cpu`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_DATA_DIR = os.path.expanduser("~/tensorflow_datasets")


# data.name -> (module of hrnet_jax.data.builders, builder class, tfds name); module None: tfds's.
BUILDERS = {"cityscapes": ("cityscapes", "HrnetCityscapes", "hrnet_cityscapes"),
            "coco_keypoints": ("coco_keypoints", "HrnetCocoKeypoints", "hrnet_coco_keypoints"),
            "coco_detection": ("coco_detection", "HrnetCocoDetection", "hrnet_coco_detection"),
            "mpii": ("mpii", "HrnetMpii", "hrnet_mpii"),
            **{name: ("face_landmarks", "HrnetFaceLandmarks", f"hrnet_face_landmarks/{name}")
               for name in ("wflw", "300w", "cofw", "aflw")},
            "imagenet2012": (None, None, "imagenet2012")}  # tfds's own builder (manual download)


def builder_class(name: str) -> Any:
    """The builder of a dataset; importing it registers it with tfds."""
    import importlib

    if name not in BUILDERS:
        raise ValueError(f"unknown dataset {name!r}; preparable: {', '.join(BUILDERS)}")
    module, cls, tfds_name = BUILDERS[name]
    if module is None:
        import tensorflow_datasets as tfds
        return tfds.builder_cls(tfds_name)
    return getattr(importlib.import_module(f"hrnet_jax.data.builders.{module}"), cls)


def prepare(name: str, manual_dir: str, data_dir: str = DEFAULT_DATA_DIR) -> Any:
    """Build the ArrayRecord files (skipped when already there); returns the builder."""
    import tensorflow_datasets as tfds

    cls = builder_class(name)
    if not os.path.isdir(os.path.expanduser(manual_dir)):
        raise FileNotFoundError(f"{manual_dir!r} does not exist.\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    builder = tfds.builder(BUILDERS[name][2], data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir)))
    return builder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=sorted(BUILDERS))
    parser.add_argument("--manual_dir", required=True, help="the official downloads")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    builder = prepare(args.dataset, args.manual_dir, args.data_dir)
    for split, info in builder.info.splits.items():
        print(f"{args.dataset} {split}: {info.num_examples} examples in {builder.data_dir}")


if __name__ == "__main__":
    main()
