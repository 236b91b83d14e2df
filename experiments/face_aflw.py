"""Facial landmarks on AFLW: HRNetV2-W18, HRNet-Facial-Landmark-Detection's recipe.

    python -m hrnet_jax.data.prepare aflw --manual_dir AFLW   # once: json or CSV annotations, images/
    python -m hrnet_jax.main --experiment=face_aflw --workdir=DIR

Expected (the paper's number; not yet reproduced with this code); metrics.jsonl also holds the
failure rate at 0.1 and the AUC:

Variants:
    w18    NME 1.57% on the full test split (4386 faces), normalised by the face box size (the default)
    smoke  4 steps of a tiny model on generated faces in the HRNet CSV layout (tests write them), for tests

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import Variant
from hrnet_jax.recipes import arch, face_landmarks, top_down_smoke


def recipe() -> ExperimentConfig:
    return face_landmarks("aflw")


VARIANTS = {
    "w18": Variant(arch("hrnet_w18"), group="width"),
    "smoke": Variant(top_down_smoke("test", (64, 64))),
}
