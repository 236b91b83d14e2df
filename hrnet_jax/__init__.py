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
