"""Prepare a dataset once into ArrayRecord files that training reads through `tfds.data_source`.

    python -m hrnet_jax.data.prepare cityscapes --manual_dir DIR [--data_dir ~/tensorflow_datasets]

Needs TensorFlow (`pip install -e ".[test]"` or `pip install tensorflow-cpu`).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

DEFAULT_DATA_DIR = os.path.expanduser("~/tensorflow_datasets")


def builder_class(name: str) -> Any:
    if name == "cityscapes":
        from hrnet_jax.data.builders.cityscapes import HrnetCityscapes
        return HrnetCityscapes
    raise ValueError(f"unknown dataset {name!r}; preparable: cityscapes")


def prepare(name: str, manual_dir: str, data_dir: str = DEFAULT_DATA_DIR) -> Any:
    """Build the ArrayRecord files (skipped when already there); returns the builder."""
    import tensorflow_datasets as tfds

    cls = builder_class(name)
    if not os.path.isdir(os.path.expanduser(manual_dir)):
        raise FileNotFoundError(f"{manual_dir!r} does not exist.\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
    builder = cls(data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare(
        download_config=tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir)))
    return builder


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=["cityscapes"])
    parser.add_argument("--manual_dir", required=True, help="the official downloads")
    parser.add_argument("--data_dir", default=DEFAULT_DATA_DIR)
    args = parser.parse_args(argv)
    builder = prepare(args.dataset, args.manual_dir, args.data_dir)
    for split, info in builder.info.splits.items():
        print(f"{args.dataset} {split}: {info.num_examples} examples in {builder.data_dir}")


if __name__ == "__main__":
    main()
