"""Finding and loading experiment files: `experiments/NAME.py` with `get_config(variant)`."""

from __future__ import annotations

import importlib.util
import os
import pathlib
from typing import Callable

from hrnet_jax.config import ExperimentConfig

EXPERIMENTS_DIR = pathlib.Path(os.environ.get(
    "HRNET_EXPERIMENTS", pathlib.Path(__file__).resolve().parents[1] / "experiments"))


def available() -> dict[str, str]:
    """Experiment name -> its one-line description (the docstring's first line)."""
    out = {}
    for path in sorted(EXPERIMENTS_DIR.glob("*.py")):
        if path.name.startswith("_"):
            continue
        module = _load_module(path)
        out[path.stem] = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
    return out


def _load_module(path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(f"hrnet_experiments.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def with_variant(config: ExperimentConfig, variant: str | None,
                 **variants: Callable[[ExperimentConfig], ExperimentConfig]) -> ExperimentConfig:
    """The experiment's config, or the named variant of it (`NAME:VARIANT`): what every
    experiment file's `get_config` returns."""
    if not variant:
        return config
    if variant not in variants:
        raise ValueError(f"unknown variant {variant!r}; choose {' or '.join(variants) or 'none'}")
    return variants[variant](config)


def load(spec: str) -> ExperimentConfig:
    """'NAME' or 'NAME:VARIANT' -> the experiment's config, named and described (the first line
    of its docstring)."""
    name, _, variant = spec.partition(":")
    path = EXPERIMENTS_DIR / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(available())}")
    module = _load_module(path)
    try:
        config = module.get_config(variant or None)
    except ValueError as error:
        raise ValueError(f"experiment {name}: {error}") from None
    config.name = spec
    config.description = (module.__doc__ or "").strip().splitlines()[0] if module.__doc__ else ""
    return config
