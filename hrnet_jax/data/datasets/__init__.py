"""Datasets: each module of this package tells one dataset's whole story.

A dataset states how it is prepared (its tfds builder), how its train and evaluation sources are
opened, and its metadata: classes, palette, ignore label, keypoint set, categories, and its
evaluation protocol. Tasks read this metadata; nothing outside these files compares a dataset's
name. Adding a dataset = one module here declaring `DATASETS` + its builder + an experiment:
the modules are found by themselves (no registry to edit).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import os
import pkgutil
from typing import Any, Sequence

import numpy as np

from hrnet_jax import storage
from hrnet_jax.data.keypoint_sets import KeypointSet

DEFAULT_DATA_DIR = "~/tensorflow_datasets"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A dataset prepared once (`python -m hrnet_jax.data.prepare NAME`) into ArrayRecord files,
    read through `tfds.data_source` without TensorFlow.

    task: the task it is labelled for (a config pairing it with another is an error).
    builder: (module of hrnet_jax.data.builders, class) of its tfds builder; module "" = tfds's own.
    tfds_name: the builder's registered name (with its config, e.g. "hrnet_face_landmarks/wflw").
    """

    name: str
    task: str
    builder: tuple[str, str] = ("", "")
    tfds_name: str = ""
    class_names: tuple[str, ...] = ()
    ignore_label: int = 255  # segmentation: the label no loss or metric counts
    colours: tuple[tuple[int, int, int], ...] = ()  # the labels' official colours, if any
    # Segmentation: labels that trade places when an image is mirrored (LIP's left and right
    # arms, legs, shoes); training flips swap them, the flip test swaps their scores back.
    label_flip_pairs: tuple[tuple[int, int], ...] = ()
    # Segmentation: the stored label 0 (background) is ignored and the others shift down by one
    # (PASCAL-Context's 59-class setting; mmsegmentation's reduce_zero_label).
    reduce_zero_label: bool = False
    # Segmentation: every image has one size, so whole images batch on the devices for
    # evaluation; otherwise they are evaluated one by one.
    same_size_images: bool = False
    keypoints: KeypointSet | None = None  # pose, landmarks: names, flip pairs, skeleton, sigmas
    train_examples: int = 0  # what one epoch of the references' schedules trains on
    eval_split: str = "val"  # where the papers' numbers are measured
    # Variants that store what is costly to decode as raw arrays (tfds Tensor features): their
    # records are kept uncompressed (zstd's decompression was half of reading one: a person's
    # loose crop 0.72 -> 0.34 ms, for twice the bytes on disk) and read by a lean parser
    # (hrnet_jax.data.records: 0.30 -> 0.18 ms).
    raw_records: bool = False

    # -- preparation --------------------------------------------------------------------------
    # A data_dir in a bucket: ArrayRecord's reader and writer open local files only, so the
    # files are built on local disk and uploaded (`prepare`), and each host reading them stages
    # a copy on its own disk once (`prepared_builder`; hrnet_jax.storage.stage).
    def builder_class(self) -> Any:
        """The tfds builder class; importing it registers it with tfds."""
        module, cls = self.builder
        if not module:
            import tensorflow_datasets as tfds
            return tfds.builder_cls(self.tfds_name)
        return getattr(importlib.import_module(f"hrnet_jax.data.builders.{module}"), cls)

    def prepare(self, manual_dir: str, data_dir: str = DEFAULT_DATA_DIR) -> Any:
        """Build the ArrayRecord files in `data_dir` (skipped when already there); returns the
        builder (of this host's local copy when `data_dir` is a bucket)."""
        import tensorflow_datasets as tfds

        if storage.is_remote(data_dir):
            local_root = storage.cache_folder(data_dir)
            builder = self.prepare(manual_dir, local_root)
            remote = storage.join(data_dir, os.path.relpath(builder.data_dir, local_root))
            with storage.errors_named(remote, "upload the prepared files to"):
                if not (storage.path(remote) / "dataset_info.json").exists():
                    # dataset_info.json last: the dataset counts as prepared once it is whole.
                    storage.copy_tree(builder.data_dir, remote, f"uploading to {remote}",
                                      last=("dataset_info.json",))
            return builder
        cls = self.builder_class()
        if not os.path.isdir(os.path.expanduser(manual_dir)):
            raise FileNotFoundError(f"{manual_dir!r} does not exist.\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}")
        builder = tfds.builder(self.tfds_name, data_dir=os.path.expanduser(data_dir),
                               file_format="array_record")
        builder.download_and_prepare(
            download_config=tfds.download.DownloadConfig(manual_dir=os.path.expanduser(manual_dir)))
        if self.raw_records:
            store_uncompressed(builder.data_dir, f"storing {self.name} uncompressed")
        return builder

    def prepared_builder(self, data_dir: str) -> Any:
        """The builder of the prepared files in `data_dir`, or an error saying how to prepare."""
        import tensorflow_datasets as tfds

        cls = self.builder_class()
        if storage.is_remote(data_dir):
            local_root = storage.cache_folder(data_dir)
            relative = os.path.relpath(tfds.builder(self.tfds_name, data_dir=local_root).data_dir,
                                       local_root)
            remote = storage.join(data_dir, relative)
            with storage.errors_named(remote, "read"):
                prepared = (storage.path(remote) / "dataset_info.json").exists()
            if prepared:
                storage.stage(remote, os.path.join(local_root, relative),
                              f"staging {self.name} from {data_dir}")
                return tfds.builder(self.tfds_name, data_dir=local_root)
        data_dir = os.path.expanduser(data_dir)
        builder = tfds.builder(self.tfds_name, data_dir=data_dir)
        if not builder.is_prepared():
            held = prepared_in(data_dir)
            found = (f"; it holds {', '.join(held)}" if held else
                     "; it holds no prepared dataset" if os.path.isdir(data_dir) else
                     "; that folder does not exist")
            raise FileNotFoundError(
                f"{self.name} (version {builder.version}) is not prepared in {data_dir}{found}."
                f"\n{cls.MANUAL_DOWNLOAD_INSTRUCTIONS}\n(or pass --set data.data_dir=DIR where "
                "it was prepared)")
        return builder

    # -- reading ------------------------------------------------------------------------------
    def split(self, builder: Any, split: str) -> Any:
        """A split read through `tfds.data_source` (ArrayRecord, random access, no TensorFlow;
        `raw_records`: parsed by hrnet_jax.data.records)."""
        if split not in builder.info.splits:
            raise ValueError(f"{self.name} in {builder.data_dir} has splits "
                             f"{list(builder.info.splits)}, not {split!r}")
        if self.raw_records:
            from hrnet_jax.data.records import TensorRecords

            return TensorRecords(builder.as_data_source(split))
        return builder.as_data_source(split)

    def sources(self, data: Any) -> tuple[Any, Any]:
        """(train, evaluation) random-access sources for a data config."""
        builder = self.prepared_builder(data.data_dir)
        return self.training_view(self.split(builder, data.train_split), builder, data), \
            self.split(builder, data.eval_split)

    def training_view(self, records: Any, builder: Any, data: Any) -> Any:
        """What training iterates over (records as stored; top-down: one person each)."""
        return records

    # -- metadata -----------------------------------------------------------------------------
    def training_labels(self, stored: np.ndarray) -> np.ndarray:
        """The labels a model is trained on, from the labels as prepared (`reduce_zero_label`:
        0 -> ignore, k -> k - 1)."""
        if not self.reduce_zero_label:
            return stored
        shifted = stored.astype(np.int32) - 1
        shifted[(stored == 0) | (stored == self.ignore_label)] = self.ignore_label
        return shifted.astype(stored.dtype)

    def names(self, num_classes: int) -> list[str]:
        """Class names in label order (the class numbers where the dataset names none)."""
        return list(self.class_names) or [str(i) for i in range(num_classes)]

    def palette(self, num_classes: int) -> np.ndarray:
        """(num_classes, 3) uint8 colours of the labels in pictures: the official ones, else
        random ones with background black."""
        if self.colours:
            return np.array(self.colours, np.uint8)
        rng = np.random.default_rng(1)
        palette = rng.integers(40, 255, (num_classes, 3)).astype(np.uint8)
        palette[0] = (0, 0, 0)
        return palette


@dataclasses.dataclass(frozen=True)
class GeneratedDataset(Dataset):
    """A procedural dataset (hrnet_jax.data.synthetic): no preparation, served straight to
    grain; its size is data.num_train / data.num_eval at data.image_size."""

    source: type | None = None

    def sources(self, data: Any) -> tuple[Any, Any]:
        size = tuple(data.image_size)
        # Evaluation pictures come from a different seed: never seen in training.
        return (self.source(data.num_train, size, data.seed),
                self.source(data.num_eval, size, data.seed + 1_000_003))

    def prepare(self, manual_dir: str, data_dir: str = DEFAULT_DATA_DIR) -> Any:
        raise ValueError(f"{self.name} is generated on the fly: there is nothing to prepare")


@dataclasses.dataclass(frozen=True)
class PersonDataset(Dataset):
    """Images of persons (or faces) with boxes and keypoints, for the top-down tasks: training
    takes one annotated person at a time; evaluation predicts in each image's evaluation boxes
    and scores the rows by the dataset's protocol (`evaluation_rows`, `summarize`)."""

    clip_boxes: bool = False  # training boxes clipped to the image (COCO)
    uniform_augment: bool = False  # scale and rotation drawn uniformly (the faces' recipe)

    def training_view(self, records: Any, builder: Any, data: Any) -> Any:
        from hrnet_jax.data import topdown

        height, width = data.image_size
        persons = builder.info.metadata[data.train_split]["training_persons"]
        return topdown.PersonInstances(records, persons, width / height, self.clip_boxes)

    def evaluation_boxes(self, record: dict, persons: dict, data: Any
                         ) -> tuple[np.ndarray, np.ndarray]:
        """The boxes (N, 4) evaluated in one image and their scores: every annotated one."""
        return persons["bbox"], np.ones(len(persons["bbox"]), np.float32)

    def evaluation_rows(self, record: dict, persons: dict, predicted: np.ndarray,
                        box_scores: np.ndarray, scales: np.ndarray) -> dict[str, np.ndarray]:
        """One image's rows for `summarize`: predicted (N, K, 3) keypoints of its boxes."""
        raise NotImplementedError

    def summarize(self, rows: dict[str, np.ndarray]) -> dict[str, float]:
        """The protocol's figures from every image's rows."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class DetectionDataset(Dataset):
    """Images with boxed, labelled objects. `categories`: (category id of the results files,
    name) of each contiguous label."""

    categories: tuple[tuple[int, str], ...] = ()

    def training_view(self, records: Any, builder: Any, data: Any) -> Any:
        from hrnet_jax.data.detection import DetectionRecords

        # images with boxes, in orientation-grouped batches
        metadata = builder.info.metadata[data.train_split]
        return DetectionRecords(records, metadata["training_records"], metadata["portrait_records"])

    def names(self, num_classes: int) -> list[str]:
        return [name for _, name in self.categories]

    def evaluation_rows(self, record: dict, found: dict[str, np.ndarray]
                        ) -> dict[str, np.ndarray]:
        """One image's rows for `summarize`: its detections (`boxes` x0, y0, x1, y1 in its
        pixels, `scores`, `labels`, and `masks` (D,) compressed RLE strings for the detectors
        with masks) and its ground truth, as arrays with a row per object (gathered over
        hosts)."""
        from hrnet_jax.data.detection import object_arrays

        category_ids = np.array([category_id for category_id, _ in self.categories])
        boxes, objects = found["boxes"], object_arrays(record)
        image_id = int(record["image_id"])
        height, width = record["image"].shape[:2]
        rows = {"image_id": np.full(len(boxes), image_id, np.int64),
                "bbox": np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1),
                "score": found["scores"].astype(np.float32),
                "category_id": category_ids[found["labels"]],
                "image": np.array([[image_id, height, width]], np.int64),
                "truth_image_id": np.full(len(objects["bbox"]), image_id, np.int64),
                "truth_bbox": objects["bbox"],
                "truth_category_id": category_ids[objects["label"]],
                "truth_area": objects["area"], "truth_iscrowd": objects["iscrowd"]}
        if "masks" in found:  # compressed RLE strings, gathered over hosts as text
            rows["mask"] = np.asarray(found["masks"], object).reshape(-1)
            rows["truth_mask"] = objects["mask"]
        return rows

    def summarize(self, rows: dict[str, np.ndarray]) -> dict[str, float]:
        """COCO's protocol by pycocotools: box AP, AP50, AP75, APs/m/l and AR, the number of
        detections, and with masks the same figures of the masks (`mask_ap`, ...)."""
        from hrnet_jax.metrics import coco

        images = [{"id": int(i), "height": int(h), "width": int(w)} for i, h, w in rows["image"]]
        truth = coco.box_ground_truth(
            images, {k[len("truth_"):]: v for k, v in rows.items() if k.startswith("truth_")},
            self.categories)
        results = coco.box_results(rows["image_id"], rows["bbox"], rows["score"],
                                   rows["category_id"])
        figures = {**coco.box_ap(truth, results), "detections": float(len(results))}
        if "mask" in rows:
            sizes = {i: (h, w) for i, h, w in rows["image"]}
            masks = coco.mask_results(rows["image_id"], rows["mask"],
                                      np.array([sizes[i] for i in rows["image_id"]]).reshape(-1, 2),
                                      rows["score"], rows["category_id"])
            figures.update({f"mask_{k}": v for k, v in coco.mask_ap(truth, masks).items()})
        return figures


def prepared_in(data_dir: str) -> list[str]:
    """What a local data_dir holds: "NAME VERSION" of each prepared dataset (a folder with a
    dataset_info.json), under this project's dataset names where they are its own."""
    names = {dataset.tfds_name: name for name, dataset in all_datasets().items()
             if getattr(dataset, "tfds_name", None)}
    root = os.path.expanduser(data_dir)
    found = []
    for folder, children, files in os.walk(root):
        depth = os.path.relpath(folder, root).count(os.sep)
        if "dataset_info.json" in files and depth >= 1:  # BUILDER[/CONFIG]/VERSION
            tfds_name, version = os.path.split(os.path.relpath(folder, root))
            found.append(f"{names.get(tfds_name, tfds_name)} {version}")
        if depth >= 2:
            children.clear()
    return sorted(found)


@functools.cache
def all_datasets() -> dict[str, Dataset]:
    """Every dataset of every module of this package, by name."""
    found: dict[str, Dataset] = {}
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("_"):
            continue
        for dataset in importlib.import_module(f"{__name__}.{module.name}").DATASETS:
            if dataset.name in found:
                raise ValueError(f"two datasets are named {dataset.name!r}")
            found[dataset.name] = dataset
    return found


def get(name: str) -> Dataset:
    """The dataset called `name`, or an error listing the real ones."""
    datasets = all_datasets()
    if name not in datasets:
        raise ValueError(f"unknown dataset {name!r}; available: {', '.join(sorted(datasets))}")
    return datasets[name]


def preparable() -> Sequence[str]:
    """The names of the datasets `python -m hrnet_jax.data.prepare` builds."""
    return sorted(n for n, d in all_datasets().items() if not isinstance(d, GeneratedDataset))


def store_uncompressed(folder: str, description: str) -> None:
    """Rewrite the ArrayRecord shards in `folder` without compression (tfds writes them with
    zstd), each to a new file that then replaces it: an interrupted rewrite leaves readable
    shards, and one already uncompressed is left alone."""
    import glob

    from array_record.python import array_record_module as records
    from tqdm import tqdm

    shards = sorted(glob.glob(os.path.join(folder, "*.array_record-*-of-*")))
    for shard in tqdm(shards, desc=description, unit="shard", leave=False,
                      disable=len(shards) < 2):
        reader = records.ArrayRecordReader(shard)
        if "uncompressed" in reader.writer_options_string().split(","):
            reader.close()
            continue
        rewritten = f"{shard}.uncompressed"
        writer = records.ArrayRecordWriter(rewritten, "group_size:1,uncompressed")
        for index in range(reader.num_records()):  # one record in memory at a time
            writer.write(reader.read([index])[0])
        writer.close()
        reader.close()
        os.replace(rewritten, shard)
