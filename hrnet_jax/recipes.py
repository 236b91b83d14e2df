"""What several recipe families share (each family's own recipe is in its experiment file):
the synthetic demos' scaffolding, schedules in epochs, the top-down and face recipes, mmdet's
COCO detection recipe, the smoke shrinking, and the small variant builders (`arch`, `head`,
`input_size`). Each states its source in its docstring."""

from __future__ import annotations

from typing import Callable

from hrnet_jax.config import (CheckpointConfig, DetectionData, EvalConfig, ExperimentConfig,
                              KeypointData, LoopConfig, ModelConfig, OptimConfig, DATA_CONFIGS)
from hrnet_jax.data import datasets

Change = Callable[[ExperimentConfig], ExperimentConfig]


def arch(name: str) -> Change:
    """The variant that trains the recipe with another backbone (`:w18`)."""
    def change(config: ExperimentConfig) -> ExperimentConfig:
        config.model.arch = name
        return config
    return change


def head(name: str) -> Change:
    """The variant that trains the recipe with another head (`:ocr`)."""
    def change(config: ExperimentConfig) -> ExperimentConfig:
        config.model.head = name
        return config
    return change


def input_size(size: tuple[int, int], heatmap_sigma: float) -> Change:
    """The top-down variant at another input size, with the heatmaps' sigma the paper uses."""
    def change(config: ExperimentConfig) -> ExperimentConfig:
        config.data.image_size, config.data.heatmap_sigma = size, heatmap_sigma
        return config
    return change


def synthetic_demo(task: str, head: str, num_classes: int, dataset: str) -> ExperimentConfig:
    """What the embedded demos share: a width-8 tiny HRNet, 64x64 generated pictures, Adam with
    cosine decay; each demo then states what differs."""
    config = ExperimentConfig(task=task)
    config.model = ModelConfig(arch="tiny", width=8, head=head, num_classes=num_classes)
    config.data = DATA_CONFIGS[task](name=dataset, image_size=(64, 64), batch_size=16,
                                     num_train=4096, num_eval=128)
    config.optim = OptimConfig(optimizer="adam", learning_rate=3e-3, schedule="cosine",
                               warmup_steps=20)
    config.loop = LoopConfig(num_steps=600, log_every=20)
    config.checkpoint = CheckpointConfig(every_steps=200)
    return config


def smoke(config: ExperimentConfig) -> ExperimentConfig:
    """The demos' `:smoke` variant: 4 steps of a width-4 tiny model, checkpoints every 2."""
    config.model.arch, config.model.width = "tiny", 4
    config.data.batch_size, config.data.num_eval = 4, 8
    config.loop.num_steps, config.loop.log_every = 4, 2
    config.checkpoint.every_steps = 2
    return config


def schedule_in_epochs(config: ExperimentConfig, train_examples: int, epochs: int,
                       eval_every: int, log_every: int, checkpoints_per_epoch: int = 1) -> None:
    """The loop and checkpoints of a recipe stated in epochs of `train_examples` at the config's
    global batch size (the last partial batch of an epoch dropped, as the references do)."""
    steps_per_epoch = train_examples // config.data.batch_size
    config.loop = LoopConfig(num_steps=epochs * steps_per_epoch, log_every=log_every,
                             eval_every=eval_every * steps_per_epoch)
    config.checkpoint = CheckpointConfig(every_steps=steps_per_epoch // checkpoints_per_epoch,
                                         keep=3)


def parsing_smoke(config: ExperimentConfig) -> ExperimentConfig:
    """A few steps of a tiny model on a small sample prepared into `data.data_dir` (the real
    shared/data/lip_mini, or the tests' generated PASCAL-Context tree), trained on its train
    split and evaluated on its val split with the recipe's protocol at 64 px."""
    config.model.arch, config.model.width = "tiny", 4
    config.data.image_size = config.data.crop_size = (64, 64)
    config.data.resize = (64, 64) if config.data.resize else ()
    config.data.base_size, config.data.batch_size, config.data.worker_count = 64, 2, 0
    config.eval.scales = (0.75, 1.0, 1.25) if len(config.eval.scales) > 1 else (1.0,)
    config.loop = LoopConfig(num_steps=4, log_every=2)
    config.checkpoint = CheckpointConfig(every_steps=4, keep=1)
    config.eval.num_pictures = 1
    return config


def top_down_pose(dataset: str, arch: str, image_size: tuple[int, int], scale_factor: float,
                  rotation_factor: float, half_body_probability: float,
                  person_boxes: str = "ground_truth") -> ExperimentConfig:
    """HRNet pose's recipe: Adam 1e-3 without weight decay, 210 epochs of batch 32 x 4 GPUs,
    x0.1 after epochs 170 and 200; heatmaps at 1/4 with sigma 2 (3 from 384x288 up); flip
    training and the flip test; the augmentation as given (COCO: scale 0.35, rotation 45,
    half-body 0.3; MPII: 0.25, 30, none)."""
    persons = datasets.get(dataset)
    config = ExperimentConfig(task="pose")
    config.model = ModelConfig(arch=arch, head="pose", num_classes=persons.keypoints.num_joints)
    config.data = KeypointData(
        name=dataset, image_size=image_size, batch_size=128, eval_batch_size=32,
        heatmap_sigma=2.0 if image_size[0] <= 256 else 3.0, worker_count=8,
        train_split="train", eval_split=persons.eval_split, flip=True,
        scale_factor=scale_factor, rotation_factor=rotation_factor,
        half_body_probability=half_body_probability, person_boxes=person_boxes)
    config.optim = OptimConfig(optimizer="adam", learning_rate=1e-3, schedule="multistep",
                               milestones=(170 / 210, 200 / 210), decay_factor=0.1)
    schedule_in_epochs(config, persons.train_examples, 210, eval_every=10, log_every=100)
    config.eval = EvalConfig(num_pictures=4, flip=True)
    return config


def top_down_smoke(split: str, image_size: tuple[int, int]) -> Change:
    """A few steps of a tiny model on a sample prepared into `data.data_dir` (the real
    shared/data/coco_mini, mpii_mini, wflw_mini, cofw_mini, or generated CSV faces), training
    and evaluating on its only split: small crops of the recipe's aspect ratio, batch 2."""
    return lambda config: _top_down_smoke(config, split, image_size)


def _top_down_smoke(config: ExperimentConfig, split: str, image_size: tuple[int, int]
                    ) -> ExperimentConfig:
    config.model.arch, config.model.width = "tiny", 4
    config.data.train_split = config.data.eval_split = split
    config.data.image_size = image_size
    config.data.heatmap_sigma = min(config.data.heatmap_sigma, 2.0)
    config.data.batch_size, config.data.eval_batch_size, config.data.worker_count = 2, 4, 0
    config.data.person_boxes = "ground_truth"
    config.loop = LoopConfig(num_steps=4, log_every=2)
    config.checkpoint = CheckpointConfig(every_steps=2, keep=2)
    config.eval.num_pictures = 1
    return config


def face_landmarks(dataset: str) -> ExperimentConfig:
    """HRNet-Facial-Landmark-Detection's recipe: HRNetV2-W18, 256x256 crops of the face box
    x1.25 -> 64x64 heatmaps (sigma 1.5); scale U(0.75, 1.25), rotation U(-30, 30) with p 0.6,
    flip with the dataset's point pairs; Adam 1e-4 without weight decay, batch 16 x 4 GPUs, 60
    epochs, x0.1 after 30 and 50; evaluation on the whole split without the flip test."""
    faces = datasets.get(dataset)
    config = ExperimentConfig(task="landmarks")
    config.model = ModelConfig(arch="hrnet_w18", head="landmarks",
                               num_classes=faces.keypoints.num_joints)
    config.data = KeypointData(name=dataset, image_size=(256, 256), batch_size=64,
                               eval_batch_size=32, heatmap_sigma=1.5, worker_count=8,
                               train_split="train", eval_split=faces.eval_split, flip=True,
                               scale_factor=0.25, rotation_factor=30.0)
    config.optim = OptimConfig(optimizer="adam", learning_rate=1e-4, schedule="multistep",
                               milestones=(30 / 60, 50 / 60), decay_factor=0.1)
    schedule_in_epochs(config, faces.train_examples, 60, eval_every=10, log_every=50)
    config.eval = EvalConfig(num_pictures=4)
    return config


def mmdet_coco(arch: str, head: str, detector, optim: OptimConfig, epochs: int
               ) -> ExperimentConfig:
    """mmdet's COCO detection recipe, shared by its HRNetV2p frameworks: images resized to a
    short side of 800 (long <= 1333) and flipped, padded to 800x1344 (or 1344x800); batch 16;
    backbone BatchNorm frozen (mmdet's HRNet norm_eval); `epochs` epochs of COCO train2017,
    two checkpoints an epoch; evaluation at short side 800: score 0.05, class-wise NMS 0.5,
    100 detections an image. The head's options and the optimizer are the family's."""
    config = ExperimentConfig(task="detection")
    config.model = ModelConfig(arch=arch, head=head, num_classes=80, norm_eval=True,
                               detector=detector)
    config.data = DetectionData(name="coco_detection", image_size=(800, 1344), batch_size=16,
                                eval_batch_size=1, worker_count=16, train_split="train",
                                eval_split="val", flip=True, short_sides=(800,),
                                max_long_side=1333)
    config.optim = optim
    schedule_in_epochs(config, datasets.get("coco_detection").train_examples, epochs,
                       eval_every=4, log_every=50, checkpoints_per_epoch=2)
    config.eval = EvalConfig(num_pictures=4, nms_threshold=0.5)
    return config


def rcnn_optimizer(milestones: tuple[float, ...]) -> OptimConfig:
    """mmdet's R-CNN optimizer: SGD 0.02 momentum 0.9 for batch 16, weight decay 1e-4 on every
    parameter, linear warmup from lr x 0.001 over 500 iterations, x0.1 at the milestones
    (fractions of the run)."""
    return OptimConfig(optimizer="sgd", learning_rate=0.02, momentum=0.9, weight_decay=1e-4,
                       decay_norm_and_bias=True, schedule="multistep", milestones=milestones,
                       warmup_steps=500, warmup_start=0.001)


def detection_smoke(config: ExperimentConfig) -> ExperimentConfig:
    """A few steps of a tiny model on the real sample (shared/data/coco_mini prepared with
    `python -m hrnet_jax.data.prepare coco_detection`, its person boxes), training and
    evaluating on its only split: short side 96 or 128, long side <= 192, canvas 128x192,
    64-channel towers."""
    config.model.arch, config.model.width, config.model.detector.channels = "tiny", 4, 64
    config.data.train_split = config.data.eval_split = "val"
    config.data.image_size, config.data.short_sides = (128, 192), (96, 128)
    config.data.max_long_side = 192
    config.data.batch_size, config.data.worker_count = 2, 0
    config.optim.warmup_steps = 2
    config.loop = LoopConfig(num_steps=4, log_every=2)
    config.checkpoint = CheckpointConfig(every_steps=2, keep=2)
    config.eval.num_pictures = 1
    return config


def rcnn_smoke(config: ExperimentConfig) -> ExperimentConfig:
    """`detection_smoke`, with 100 proposals and 64 RoIs an image."""
    config = detection_smoke(config)
    config.model.detector.proposals, config.model.detector.rois = 100, 64
    config.model.detector.train_pre_nms, config.model.detector.train_proposals = 200, 100
    return config
