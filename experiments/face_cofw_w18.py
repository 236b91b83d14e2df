"""HRNetV2-W18 facial landmarks on COFW (the paper's recipe and NME protocol).

    python -m hrnet_jax.data.prepare cofw --manual_dir COFW   # once: json or CSV annotations, images/
    python -m hrnet_jax.main --experiment=face_cofw_w18 --workdir=DIR

Expected: NME 3.45% on the test split (507 faces), normalised by the pupils 8/9 (the paper's number; not yet reproduced with this code);
metrics.jsonl also holds the failure rate at 0.1 and the AUC. `:smoke` runs 4 steps of a tiny
model on the real sample in shared/data/cofw_mini, for tests.

On GPUs and TPUs add `--set model.dtype=bfloat16` (bfloat16 compute; float32 master
weights and BatchNorm statistics): see the README's "GPU and TPU".
"""

from hrnet_jax.config import ExperimentConfig
from hrnet_jax.experiments import with_variant
from hrnet_jax.recipes import face_landmarks, top_down_smoke


def get_config(variant: str | None = None) -> ExperimentConfig:
    return with_variant(face_landmarks("cofw"), variant,
                        smoke=lambda config: top_down_smoke(config, "test", (64, 64)))
