"""HRNet in JAX/Flax: the networks, their tasks and the trainer (see README.md)."""

import logging


class _KnownNoise(logging.Filter):
    """Warnings of the libraries underneath that say nothing a user can act on in a normal run:
    orbax's 'Waiting for previous save to complete took 1.5 seconds' (a save a log interval
    after the last one), tfds's 'Variant folder ... has no dataset_info.json' (said before the
    project's own, clearer, not-prepared error)."""

    PREFIXES = ("Waiting for previous save to complete", "Variant folder")

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.PREFIXES)


logging.getLogger("absl").addFilter(_KnownNoise())


def __getattr__(name: str):
    """`hrnet_jax.Predictor`, imported when first asked for (the package itself stays light)."""
    if name == "Predictor":
        from hrnet_jax.predictor import Predictor

        return Predictor
    raise AttributeError(f"module 'hrnet_jax' has no attribute {name!r}")
