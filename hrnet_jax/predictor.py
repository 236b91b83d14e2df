"""A trained model as a function of pictures, for a user's own code:

    import hrnet_jax

    predictor = hrnet_jax.Predictor.from_workdir("runs/cityscapes")
    results = predictor([image])   # uint8 RGB (H, W, 3) arrays of any sizes
    labels = results[0]["labels"]  # segmentation: (H, W) classes at the image's own size

Each result is the task's `results` (hrnet_jax.tasks): segmentation `labels` and
`probabilities`; pose and landmarks `keypoints`, `scores` (in the given person `boxes`, or the
whole image as one person); detection `boxes`, `scores`, `labels` (and `masks`);
classification the top-5 `classes`, their `scores` and every class's `probabilities`. They come
from the same pre- and post-processing as `--mode=eval`, and `--mode=predict` draws the same
results.
"""

from __future__ import annotations

from typing import Any, Sequence

import jax
import numpy as np

from hrnet_jax import config as config_lib, storage


class Predictor:
    """The model of `config` with `variables` ({'params', 'batch_stats'}), in inference mode."""

    def __init__(self, config: config_lib.ExperimentConfig, variables: dict):
        from hrnet_jax.tasks import make_task
        from hrnet_jax.training.loop import build_model
        from hrnet_jax.training.step import Network, make_predict

        self.config = config
        self.task = make_task(config)
        inference = jax.jit(make_predict(build_model(config), self.task.postprocess))
        self.predict = Network(inference, jax.device_put({c: variables[c]
                                                          for c in ("params", "batch_stats")}))

    @classmethod
    def from_workdir(cls, workdir: str, step: int | None = None) -> "Predictor":
        """The run in `workdir` (local or a bucket): its recorded settings and its latest
        checkpoint (or `step`'s)."""
        from hrnet_jax.training.checkpoint import Checkpointer
        from hrnet_jax.training.workdir import recorded_config

        config = recorded_config(workdir)
        if config is None:
            raise FileNotFoundError(f"{workdir} holds no run (no config.json): is it a workdir "
                                    "of `python -m hrnet_jax.main`?")
        checkpoints = Checkpointer(storage.join(workdir, "checkpoints"), every_steps=1, keep=1)
        return cls(config, checkpoints.restore_variables(step))

    def __call__(self, images: np.ndarray | Sequence[np.ndarray],
                 boxes: np.ndarray | None = None) -> list[dict[str, Any]]:
        """The results of each image (a list, one image a dict), images given as a list or a
        (N, H, W, 3) array, or one (H, W, 3) image. `boxes`: pose and landmarks, the persons'
        boxes (x, y, w, h) of every image (default: each whole image as one person)."""
        if isinstance(images, np.ndarray) and images.ndim == 3:
            images = [images]
        results = []
        for index, image in enumerate(images):
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"image {index}: {image.dtype} {image.shape}; expected uint8 RGB "
                                 "(height, width, 3), as hrnet_jax.predict.read_image returns "
                                 "(grey images: np.repeat(grey[..., None], 3, -1))")
            results.append(self.task.results(self.predict, image, boxes))
        return results
