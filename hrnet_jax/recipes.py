"""The papers' training recipes, and the demo and `:smoke` variants, as config factories that
experiment files call with every argument visible. Each states its source in its docstring."""

from __future__ import annotations

from hrnet_jax.config import (CheckpointConfig, ClassificationData, DetectionData, EvalConfig,
                              ExperimentConfig, KeypointData, LoopConfig, LossConfig, ModelConfig,
                              OptimConfig, SegmentationData, DATA_CONFIGS)
from hrnet_jax.data import datasets
from hrnet_jax.data.datasets import cityscapes as cityscapes_dataset
from hrnet_jax.data.transforms import scale_steps
from hrnet_jax.models.fcos_head import FCOSOptions
from hrnet_jax.models.two_stage import RCNNOptions


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


def cityscapes(arch: str, ohem: bool = False, head: str = "segmentation") -> ExperimentConfig:
    """HRNet-Semantic-Segmentation's Cityscapes recipe: 512x1024 crops of images scaled to a
    long side of 2048 x 0.5..2.1, flip; batch 12 with BatchNorm over the whole batch; SGD 0.01,
    momentum 0.9, weight decay 5e-4 on every parameter, poly 0.9 per iteration, 484 epochs of
    floor(2975 / 12) = 247 iterations; class-weighted cross-entropy (or OHEM); the OCR head adds
    0.4 x its auxiliary output's cross-entropy."""
    config = ExperimentConfig(task="segmentation")
    config.model = ModelConfig(arch=arch, head=head, num_classes=19)
    config.data = SegmentationData(name="cityscapes", image_size=(512, 1024), batch_size=12,
                             eval_batch_size=1, base_size=2048,
                             train_scales=scale_steps(0.5, 2.1, 0.1), crop_size=(512, 1024),
                             flip=True, worker_count=8)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.01, momentum=0.9,
                               weight_decay=5e-4, schedule="poly", poly_power=0.9)
    config.loss = LossConfig(class_weights=cityscapes_dataset.CLASS_WEIGHTS, ohem=ohem)
    iterations = 484 * (datasets.get("cityscapes").train_examples // 12)
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


def lip(arch: str, head: str = "segmentation") -> ExperimentConfig:
    """HRNet-Semantic-Segmentation's LIP recipe (its lib/datasets/lip.py and the OCR branch's
    lip configs): images and labels resized to 473x473, then the long side scaled to 473 x
    0.5..1.6, padded and cropped to 473x473, mirrored with the left/right classes swapped (no
    rotation); batch 40 (10 x 4 GPUs), SGD 0.007, momentum 0.9, weight decay 5e-4, poly 0.9, 150
    epochs of floor(30462 / 40) iterations; plain cross-entropy (+ 0.4 x the OCR head's
    auxiliary). Evaluation: the 473x473 image with the flip test, scores resized to the label."""
    config = ExperimentConfig(task="segmentation")
    config.model = ModelConfig(arch=arch, head=head, num_classes=20)
    config.data = SegmentationData(name="lip", image_size=(473, 473), batch_size=40,
                                   eval_batch_size=1, resize=(473, 473), base_size=473,
                                   train_scales=scale_steps(0.5, 1.6, 0.1), crop_size=(473, 473),
                                   flip=True, worker_count=8)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.007, momentum=0.9,
                               weight_decay=5e-4, schedule="poly", poly_power=0.9)
    schedule_in_epochs(config, datasets.get("lip").train_examples, 150, eval_every=10,
                       log_every=50)
    config.eval = EvalConfig(num_pictures=4, flip=True, pad_to_crop=True)
    return config


def pascal_context(arch: str, classes: int, head: str = "segmentation") -> ExperimentConfig:
    """HRNet-Semantic-Segmentation's PASCAL-Context recipe: 520x520 crops of images scaled to
    a long side of 520 x 0.5..2.1, flip; batch 16 (4 x 4 GPUs), SGD 0.004, momentum 0.9, weight
    decay 1e-4, poly 0.9, 200 epochs of floor(4998 / 16) iterations; plain cross-entropy (+ 0.4
    x the OCR head's auxiliary). Evaluation: scales 0.5..2.0 with the flip test on the whole
    image (sliding 520x520 windows above the crop). 59 classes ignore the background; 60 keep
    it. (The OCR branch's own configs train at 0.001 with 10x on the head, which this trainer's
    one learning rate does not express.)"""
    config = ExperimentConfig(task="segmentation")
    config.model = ModelConfig(arch=arch, head=head, num_classes=classes)
    name = {59: "pascal_context", 60: "pascal_context60"}[classes]
    config.data = SegmentationData(name=name, image_size=(520, 520), batch_size=16,
                                   eval_batch_size=1, base_size=520,
                                   train_scales=scale_steps(0.5, 2.1, 0.1), crop_size=(520, 520),
                                   flip=True, worker_count=8)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.004, momentum=0.9,
                               weight_decay=1e-4, schedule="poly", poly_power=0.9)
    schedule_in_epochs(config, datasets.get(name).train_examples, 200, eval_every=20,
                       log_every=50)
    config.eval = EvalConfig(num_pictures=4, flip=True, scales=scale_steps(0.5, 2.0, 0.25),
                             pad_to_crop=True)
    return config


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



def imagenet(arch: str) -> ExperimentConfig:
    """HRNet-Image-Classification's recipe: RandomResizedCrop 224 + flip, evaluation resize 256
    + centre crop 224; SGD nesterov momentum 0.9, lr 0.05 for batch 32 x 4 GPUs, weight decay
    1e-4, 100 epochs, x0.1 after 30, 60 and 90. Label smoothing and mixup / CutMix are off, as
    in the paper (--set optim.label_smoothing=0.1, data.cutmix_alpha=1.0 for later recipes)."""
    config = ExperimentConfig(task="classification")
    config.model = ModelConfig(arch=arch, head="classification", num_classes=1000)
    config.data = ClassificationData(name="imagenet2012", image_size=(224, 224), batch_size=128,
                             eval_batch_size=250, worker_count=16, train_split="train",
                             eval_split="validation", random_resized_crop=True, flip=True)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.05, momentum=0.9, nesterov=True,
                               weight_decay=1e-4, schedule="multistep",
                               milestones=(0.3, 0.6, 0.9), decay_factor=0.1)
    schedule_in_epochs(config, datasets.get("imagenet2012").train_examples, 100, eval_every=5, log_every=100)
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


def fcos_coco(arch: str, style: str = "mmdet") -> ExperimentConfig:
    """FCOS on HRNetV2p, the 1x schedule of FCOS and mmdet's HRNet configs: images resized to
    a short side of 800 (long <= 1333) and flipped, padded to 800x1344 (or 1344x800); pyramid
    strides 8..128; SGD 0.01 momentum 0.9 for batch 16, weight decay 1e-4 (not on biases and
    norms), warmup from lr / 3 over 500 iterations, x0.1 after epochs 8 and 11 of 12, gradient
    norm clipped at 35 (mmdet's); backbone BatchNorm frozen (mmdet's norm_eval); evaluation at
    short side 800, 100 detections an image. `style` "mmdet" is the plain FCOS of mmdet's
    configs (their APs; NMS 0.5 as theirs), "improved" FCOS's later tricks (NMS 0.6).
    Left from mmdet's recipe: its warmup is constant (lr / 3, then lr), ours linear; it doubles
    the biases' learning rate."""
    config = ExperimentConfig(task="detection")
    config.model = ModelConfig(arch=arch, head="detection", num_classes=80, norm_eval=True,
                               detector=FCOSOptions(strides=(8, 16, 32, 64, 128), channels=256,
                                                    style=style))
    config.data = DetectionData(name="coco_detection", image_size=(800, 1344), batch_size=16,
                             eval_batch_size=1, worker_count=16, train_split="train",
                             eval_split="val", flip=True, short_sides=(800,), max_long_side=1333)
    config.optim = OptimConfig(optimizer="sgd", learning_rate=0.01, momentum=0.9,
                               weight_decay=1e-4, decay_norm_and_bias=False,
                               schedule="multistep", milestones=(8 / 12, 11 / 12),
                               warmup_steps=500, warmup_start=1 / 3, clip_grad_norm=35.0)
    schedule_in_epochs(config, datasets.get("coco_detection").train_examples, 12, eval_every=4, log_every=50,
                       checkpoints_per_epoch=2)
    config.eval = EvalConfig(num_pictures=4, nms_threshold=0.5 if style == "mmdet" else 0.6)
    return config


def faster_rcnn_coco(arch: str) -> ExperimentConfig:
    """Faster R-CNN on HRNetV2p, mmdet's 1x recipe (faster_rcnn_hrnetv2p_w*_1x_coco): images
    resized to a short side of 800 (long <= 1333), flipped, padded to 800x1344 (or 1344x800);
    pyramid strides 4..64 (HRFPN 256 channels), RPN anchors of scale 8 and ratios 0.5 / 1 / 2;
    SGD 0.02 momentum 0.9 for batch 16, weight decay 1e-4 on every parameter, linear warmup
    from lr x 0.001 over 500 iterations, x0.1 after epochs 8 and 11 of 12; backbone BatchNorm
    frozen (mmdet's HRNet norm_eval); evaluation at short side 800: score 0.05, class-wise NMS
    0.5, 100 detections an image."""
    config = fcos_coco(arch)
    config.model.head = "faster_rcnn"
    config.model.detector = RCNNOptions(proposals=1000, train_pre_nms=2000, train_proposals=1000,
                                        rois=512, positive_fraction=0.25, stage_ious=(0.5,),
                                        stage_stds=(0.1, 0.1, 0.2, 0.2), stage_weights=(1.0,))
    config.optim.learning_rate, config.optim.warmup_start = 0.02, 0.001
    config.optim.decay_norm_and_bias, config.optim.clip_grad_norm = True, 0.0
    config.eval.nms_threshold = 0.5
    return config


def mask_rcnn_coco(arch: str) -> ExperimentConfig:
    """Mask R-CNN on HRNetV2p, mmdet's 1x recipe (mask_rcnn_hrnetv2p_w*_1x_coco): Faster R-CNN's
    (above), and the mask head on RoIAlign 14x14 (adaptive sampling) of the positive RoIs, 28x28
    masks, binary cross-entropy of each RoI's own class; evaluation pastes each detection's mask
    into the image at threshold 0.5 (box and mask AP)."""
    config = faster_rcnn_coco(arch)
    config.model.head = "mask_rcnn"
    return config


def cascade_coco(arch: str, head: str = "cascade_rcnn") -> ExperimentConfig:
    """The cascades on HRNetV2p, mmdet's 20e recipes (cascade_rcnn_hrnetv2p_w*_20e_coco,
    cascade_mask_rcnn_..., htc_...): Faster R-CNN's data, neck, RPN and test settings (above),
    and three R-CNN stages at IoU 0.5 / 0.6 / 0.7 (no low-quality matches), coder stds
    (0.1, 0.1, 0.2, 0.2), (0.05, 0.05, 0.1, 0.1), (0.033, 0.033, 0.067, 0.067), losses
    weighted 1 / 0.5 / 0.25, class-agnostic deltas, smooth-L1 box losses (beta 1/9 for the
    RPN, 1 for the stages), 2000 proposals kept in training, 512 RoIs a stage a quarter
    positive; at test the stages' class scores averaged and the last stage's boxes (and the
    stages' masks averaged). HTC adds the interleaved mask branch, its information flow and
    the semantic branch (COCO-stuff's 183 classes at 1/8, loss weight 0.2; the records' label
    maps, prepared from stuffthingmaps/ beside the instances), and tests at score 0.001. SGD 0.02 for batch 16, warm-up 500
    iterations from lr x 0.001, x0.1 after epochs 16 and 19 of 20."""
    config = faster_rcnn_coco(arch)
    config.model.head = head
    config.model.detector = RCNNOptions(
        proposals=1000, train_pre_nms=2000, train_proposals=2000, rois=512,
        positive_fraction=0.25, stage_ious=(0.5, 0.6, 0.7),
        stage_stds=(0.1, 0.1, 0.2, 0.2, 0.05, 0.05, 0.1, 0.1, 0.033, 0.033, 0.067, 0.067),
        stage_weights=(1.0, 0.5, 0.25), class_agnostic=True, rpn_beta=1 / 9, box_beta=1.0,
        interleaved=head == "htc", mask_info_flow=head == "htc",
        semantic_classes=183 if head == "htc" else 0, semantic_weight=0.2)
    config.optim.milestones = (16 / 20, 19 / 20)
    schedule_in_epochs(config, datasets.get("coco_detection").train_examples, 20, eval_every=4,
                       log_every=50, checkpoints_per_epoch=2)
    if head == "htc":  # mmdet's HTC configs test at score 0.001
        config.eval.score_threshold = 0.001
    return config


def faster_rcnn_smoke(config: ExperimentConfig) -> ExperimentConfig:
    """FCOS's smoke (a tiny model on the real sample), with 100 proposals and 64 RoIs an
    image."""
    config = fcos_smoke(config)
    config.model.detector.proposals, config.model.detector.rois = 100, 64
    config.model.detector.train_pre_nms, config.model.detector.train_proposals = 200, 100
    return config


def fcos_smoke(config: ExperimentConfig) -> ExperimentConfig:
    """A few steps of a tiny model on the real sample (shared/data/coco_mini prepared with
    `python -m hrnet_jax.data.prepare coco_detection`, its person boxes), training and
    evaluating on its only split: short side 96 or 128, long side <= 192, canvas 128x192,
    64-channel towers."""
    config.model.arch, config.model.width, config.model.detector.channels = "tiny", 4, 64
    config.data.train_split = config.data.eval_split = "val"
    config.data.image_size, config.data.short_sides, config.data.max_long_side = (128, 192), (96, 128), 192
    config.data.batch_size, config.data.worker_count = 2, 0
    config.optim.warmup_steps = 2
    config.loop = LoopConfig(num_steps=4, log_every=2)
    config.checkpoint = CheckpointConfig(every_steps=2, keep=2)
    config.eval.num_pictures = 1
    return config
