"""HRNetV2-W18 facial landmarks on 300W (the paper's recipe and NME protocol).

    python -m hrnet_jax.data.prepare 300w --manual_dir 300W   # once: json or CSV annotations, images/
    python -m hrnet_jax.main --experiment=face_300w_w18 --workdir=DIR

Expected: NME 3.34% on the full valid split (689 faces: common + challenging), normalised by the outer eye corners (the paper's number; not yet reproduced with this code);
metrics.jsonl also holds the failure rate at 0.1 and the AUC. `:smoke` runs 4 steps of a tiny
model on generated faces in the HRNet CSV layout (tests write them), for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import face_landmarks, top_down_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(face_landmarks("300w"), variant,
                        smoke=lambda config: top_down_smoke(config, "test", (64, 64)))
