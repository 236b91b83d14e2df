"""Finding and loading experiment files: `experiments/NAME.py` with `get_config(variant)`."""

from __future__ import annotations

import importlib.util
import os
import pathlib

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


def load(spec: str) -> ExperimentConfig:
    """'NAME' or 'NAME:VARIANT' -> the experiment's config, named."""
    name, _, variant = spec.partition(":")
    path = EXPERIMENTS_DIR / f"{name}.py"
    if not path.is_file():
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(available())}")
    config = _load_module(path).get_config(variant or None)
    config.name = spec
    return config
