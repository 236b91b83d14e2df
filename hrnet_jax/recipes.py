"""The papers' training recipes as config factories that experiment files share."""

from __future__ import annotations

from hrnet_jax.config import (CheckpointConfig, DataConfig, EvalConfig, ExperimentConfig, LoopConfig,
                              LossConfig, ModelConfig, OptimConfig)
from hrnet_jax.data import cityscapes_labels
from hrnet_jax.data.transforms import scale_steps

CITYSCAPES_TRAIN_IMAGES = 2975


def schedule_in_epochs(config: ExperimentConfig, train_examples: int, epochs: int,
                       eval_every: int, log_every: int, checkpoints_per_epoch: int = 1) -> None:
    """The loop and checkpoints of a recipe stated in epochs of `train_examples` at the config's
    global batch size (the last partial batch of an epoch dropped, as the references do)."""
    steps_per_epoch = train_examples // config.data.batch_size
    config.loop = LoopConfig(num_steps=epochs * steps_per_epoch, log_every=log_every,
                             eval_every=eval_every * steps_per_epoch)
    config.checkpoint = CheckpointConfig(every_steps=steps_per_epoch // checkpoints_per_epoch,
                                         keep=3)


def cityscapes(arch: str, ohem: bool = False) -> ExperimentConfig:
    """HRNet-Semantic-Segmentation's Cityscapes recipe: 512x1024 crops of images scaled to a
    long side of 2048 x 0.5..2.1, flip; batch 12 with BatchNorm over the whole batch; SGD 0.01,
    momentum 0.9, weight decay 5e-4 on every parameter, poly 0.9 per iteration, 484 epochs of
    floor(2975 / 12) = 247 iterations; class-weighted cross-entropy (or OHEM)."""
    config = ExperimentConfig(task="segmentation")
    config.model = ModelConfig(arch=arch, head="segmentation", num_classes=19)
    config.data = DataConfig(name="cityscapes", image_size=(512, 1024), batch_size=12,
                             eval_batch_size=1, base_size=2048,
                             train_scales=scale_steps(0.5, 2.1, 0.1), crop_size=(512, 1024),
                             flip=True, worker_count=8)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.01, momentum=0.9,
                               weight_decay=5e-4, schedule="poly", poly_power=0.9)
    config.loss = LossConfig(class_weights=cityscapes_labels.CLASS_WEIGHTS, ohem=ohem)
    iterations = 484 * (CITYSCAPES_TRAIN_IMAGES // 12)
    config.loop = LoopConfig(num_steps=iterations, log_every=50, eval_every=10_000)
    config.checkpoint = CheckpointConfig(every_steps=2000, keep=3)
    config.eval = EvalConfig(num_pictures=4)
    return config


def cityscapes_smoke(config: ExperimentConfig) -> ExperimentConfig:
    """A few steps of a tiny model on the real sample's val split (shared/data/cityscapes_mini,
    prepared with `python -m hrnet_jax.data.prepare cityscapes --manual_dir .../cityscapes_mini
    --data_dir DIR`, then `--set data.data_dir=DIR`): 64x128 crops of the 128x256 image."""
    config.model.arch, config.model.width = "tiny", 4
    config.data.train_split = config.data.eval_split = "val"
    config.data.base_size, config.data.crop_size, config.data.image_size = 256, (64, 128), (64, 128)
    config.data.batch_size, config.data.worker_count = 2, 0
    config.loss.ohem_min_kept = 1000  # of the 8192 pixels of a 64x128 crop
    config.loop = LoopConfig(num_steps=4, log_every=2)
    config.checkpoint = CheckpointConfig(every_steps=2, keep=2)
    config.eval = EvalConfig(num_pictures=1)
    return config


COCO_TRAIN_PERSONS = 149813  # the reference's training persons of train2017
MPII_TRAIN_PERSONS = 22246


def top_down_pose(dataset: str, arch: str, image_size: tuple[int, int], train_persons: int
                  ) -> ExperimentConfig:
    """HRNet pose's recipe: Adam 1e-3 without weight decay, 210 epochs of batch 32 x 4 GPUs,
    x0.1 after epochs 170 and 200; heatmaps at 1/4 with sigma 2 (3 from 384x288 up); flip
    training and the flip test. COCO augments scale 0.35, rotation 45, half-body 0.3; MPII
    scale 0.25, rotation 30, no half-body."""
    coco = dataset == "coco_keypoints"
    config = ExperimentConfig(task="pose")
    config.model = ModelConfig(arch=arch, head="pose", num_classes=17 if coco else 16)
    config.data = DataConfig(
        name=dataset, image_size=image_size, batch_size=128, eval_batch_size=32,
        heatmap_sigma=2.0 if image_size[0] <= 256 else 3.0, worker_count=8,
        train_split="train", eval_split="val" if coco else "valid", flip=True,
        scale_factor=0.35 if coco else 0.25, rotation_factor=45.0 if coco else 30.0,
        half_body_probability=0.3 if coco else 0.0)
    if coco:  # the paper's person detector (AP 56.4), from the HRNet release
        config.data.person_boxes = ("~/coco/person_detection_results/"
                                    "COCO_val2017_detections_AP_H_56_person.json")
    config.optim = OptimConfig(optimizer="adam", learning_rate=1e-3, schedule="multistep",
                               milestones=(170 / 210, 200 / 210), decay_factor=0.1)
    schedule_in_epochs(config, train_persons, 210, eval_every=10, log_every=100)
    config.eval = EvalConfig(num_pictures=4, flip=True)
    return config


def top_down_smoke(config: ExperimentConfig, split: str, image_size: tuple[int, int]
                   ) -> ExperimentConfig:
    """A few steps of a tiny model on a sample prepared into `data.data_dir` (the real
    shared/data/coco_mini, mpii_mini, wflw_mini, cofw_mini, or generated CSV faces), training
    and evaluating on its only split: small crops of the recipe's aspect ratio, batch 2."""
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


# Training faces and the evaluation split of the facial-landmark datasets (HRNet's splits).
FACE_DATASETS = {"wflw": (7500, "test"), "300w": (3148, "valid"), "cofw": (1345, "test"),
                 "aflw": (20000, "test")}


def face_landmarks(dataset: str) -> ExperimentConfig:
    """HRNet-Facial-Landmark-Detection's recipe: HRNetV2-W18, 256x256 crops of the face box
    x1.25 -> 64x64 heatmaps (sigma 1.5); scale U(0.75, 1.25), rotation U(-30, 30) with p 0.6,
    flip with the dataset's point pairs; Adam 1e-4 without weight decay, batch 16 x 4 GPUs, 60
    epochs, x0.1 after 30 and 50; evaluation on the whole split without the flip test."""
    from hrnet_jax.data.keypoint_sets import LANDMARK_SETS

    train_faces, eval_split = FACE_DATASETS[dataset]
    config = ExperimentConfig(task="landmarks")
    config.model = ModelConfig(arch="hrnet_w18", head="landmarks",
                               num_classes=LANDMARK_SETS[dataset].num_joints)
    config.data = DataConfig(name=dataset, image_size=(256, 256), batch_size=64, eval_batch_size=32,
                             heatmap_sigma=1.5, worker_count=8, train_split="train",
                             eval_split=eval_split, flip=True, scale_factor=0.25,
                             rotation_factor=30.0)
    config.optim = OptimConfig(optimizer="adam", learning_rate=1e-4, schedule="multistep",
                               milestones=(30 / 60, 50 / 60), decay_factor=0.1)
    schedule_in_epochs(config, train_faces, 60, eval_every=10, log_every=50)
    config.eval = EvalConfig(num_pictures=4)
    return config



IMAGENET_TRAIN_IMAGES = 1281167


def imagenet(arch: str) -> ExperimentConfig:
    """HRNet-Image-Classification's recipe: RandomResizedCrop 224 + flip, evaluation resize 256
    + centre crop 224; SGD nesterov momentum 0.9, lr 0.05 for batch 32 x 4 GPUs, weight decay
    1e-4, 100 epochs, x0.1 after 30, 60 and 90. Label smoothing and mixup / CutMix are off, as
    in the paper (--set optim.label_smoothing=0.1, data.cutmix_alpha=1.0 for later recipes)."""
    config = ExperimentConfig(task="classification")
    config.model = ModelConfig(arch=arch, head="classification", num_classes=1000)
    config.data = DataConfig(name="imagenet2012", image_size=(224, 224), batch_size=128,
                             eval_batch_size=250, worker_count=16, train_split="train",
                             eval_split="validation", random_resized_crop=True, flip=True)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9, nesterov=True,
                               weight_decay=1e-4, schedule="multistep",
                               milestones=(0.3, 0.6, 0.9), decay_factor=0.1)
    schedule_in_epochs(config, IMAGENET_TRAIN_IMAGES, 100, eval_every=5, log_every=100)
    config.eval = EvalConfig(num_pictures=8)
    return config


def imagenet_smoke(config: ExperimentConfig) -> ExperimentConfig:
    """4 steps of a tiny model through the ImageNet pipeline (random-resized crops, mixup and
    CutMix) on generated pictures of 4 shapes, 32x32 (as cls_synthetic:smoke)."""
    config.model.arch, config.model.width, config.model.num_classes = "tiny", 4, 4
    config.data.name, config.data.image_size = "synthetic_classification", (32, 32)
    config.data.num_train, config.data.num_eval = 64, 8
    config.data.batch_size, config.data.eval_batch_size, config.data.worker_count = 4, 4, 0
    config.data.mixup_alpha, config.data.cutmix_alpha = 0.2, 1.0
    config.loop = LoopConfig(num_steps=4, log_every=2)
    config.checkpoint = CheckpointConfig(every_steps=2, keep=2)
    config.eval.num_pictures = 1
    return config


COCO_DETECTION_TRAIN_IMAGES = 117266  # train2017 images with a box (FCOS's training set)


def fcos_coco(arch: str) -> ExperimentConfig:
    """FCOS on HRNetV2p, the 1x schedule of FCOS and mmdet's HRNet configs: images resized to
    a short side of 800 (long <= 1333) and flipped, padded to 800x1344 (or 1344x800); pyramid
    strides 8..128; SGD 0.01 momentum 0.9 for batch 16, weight decay 1e-4, linear warmup from
    lr / 3 over 500 iterations, x0.1 after epochs 8 and 11 of 12, gradient norm clipped at 35
    (mmdet's); backbone BatchNorm frozen (mmdet's norm_eval); evaluation at short side 800, NMS 0.6, 100 detections an image."""
    config = ExperimentConfig(task="detection")
    config.model = ModelConfig(arch=arch, head="detection", num_classes=80, norm_eval=True)
    config.data = DataConfig(name="coco_detection", image_size=(800, 1344), batch_size=16,
                             eval_batch_size=1, worker_count=16, train_split="train",
                             eval_split="val", flip=True, short_sides=(800,), max_long_side=1333)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.01, momentum=0.9,
                               weight_decay=1e-4, decay_norm_and_bias=False,
                               schedule="multistep", milestones=(8 / 12, 11 / 12),
                               warmup_steps=500, warmup_start=1 / 3, clip_grad_norm=35.0)
    schedule_in_epochs(config, COCO_DETECTION_TRAIN_IMAGES, 12, eval_every=4, log_every=50,
                       checkpoints_per_epoch=2)
    config.eval = EvalConfig(num_pictures=4)
    return config


def fcos_smoke(config: ExperimentConfig) -> ExperimentConfig:
    """A few steps of a tiny model on the real sample (shared/data/coco_mini prepared with
    `python -m hrnet_jax.data.prepare coco_detection`, its person boxes), training and
    evaluating on its only split: short side 96 or 128, long side <= 192, canvas 128x192,
    64-channel towers."""
    config.model.arch, config.model.width, config.model.head_channels = "tiny", 4, 64
    config.data.train_split = config.data.eval_split = "val"
    config.data.image_size, config.data.short_sides, config.data.max_long_side = (128, 192), (96, 128), 192
    config.data.batch_size, config.data.worker_count = 2, 0
    config.optim.warmup_steps = 2
    config.loop = LoopConfig(num_steps=4, log_every=2)
    config.checkpoint = CheckpointConfig(every_steps=2, keep=2)
    config.eval.num_pictures = 1
    return config
