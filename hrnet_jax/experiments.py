"""Finding and loading experiments: one file a recipe family in `experiments/`, its variants
chosen after a colon, `--experiment=seg_cityscapes:w18,ohem`.

A family file holds
- `recipe() -> ExperimentConfig`: the family's recipe itself, its values in view (the default
  variant);
- `VARIANTS`: name -> `Variant`, each a change to that recipe. The chosen ones apply in the
  order the file lists them, whatever order the user wrote, so that `:smoke,w18` and
  `:w18,smoke` are one config; variants of one `group` (the widths, the input sizes) exclude
  each other;
- a docstring whose first line says what the family is, with the commands, and a `Variants:`
  table, one line a variant with its expected result (`--list` prints it).

A file may instead define `get_config(variants: str)` itself (big_vision's form), with
`with_variant` to parse the variants.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import pathlib
from types import ModuleType
from typing import Callable

from hrnet_jax.config import ExperimentConfig

EXPERIMENTS_DIR = pathlib.Path(os.environ.get(
    "HRNET_EXPERIMENTS", pathlib.Path(__file__).resolve().parents[1] / "experiments"))

# The names of the one-file-a-run experiments before they were gathered into families: old
# name -> the family and variants it is now. Each resolves to the config it always did.
RENAMED = {
    **{f"cls_imagenet_{width}": f"cls_imagenet:{width}" for width in (
        "w18", "w18_small", "w18_small_v2", "w30", "w32", "w40", "w44", "w48", "w64")},
    "seg_cityscapes_ohem": "seg_cityscapes:ohem",
    "seg_cityscapes_w18": "seg_cityscapes:w18",
    "seg_cityscapes_w18_small_v2": "seg_cityscapes:w18_small_v2",
    "seg_cityscapes_ocr_w48": "seg_cityscapes:ocr",
    "seg_lip_w48": "seg_lip", "seg_lip_ocr_w48": "seg_lip:ocr",
    "seg_pascal_context_w48": "seg_pascal_context",
    "seg_pascal_context_ocr_w48": "seg_pascal_context:ocr",
    "seg_pascal_context60_ocr_w48": "seg_pascal_context:60,ocr",
    **{f"pose_coco_{width}_{size}": f"pose_coco:{width},{size}" for width in ("w32", "w48")
       for size in ("256x192", "384x288")},
    "pose_mpii_w32_256x256": "pose_mpii",
    **{f"face_{name}_w18": f"face_{name}" for name in ("300w", "aflw", "cofw", "wflw")},
    "det_coco_fcos_w18": "det_coco_fcos:w18", "det_coco_fcos_w32": "det_coco_fcos:w32",
    **{f"det_coco_{framework}_{width}_{schedule}": f"det_coco_{family}:{framework},{width}"
       for family, framework, schedule, widths in (
           ("rcnn", "faster_rcnn", "1x", ("w18", "w32", "w40")),
           ("rcnn", "mask_rcnn", "1x", ("w18", "w32")),
           ("cascade", "cascade_rcnn", "20e", ("w18", "w32", "w40")),
           ("cascade", "cascade_mask_rcnn", "20e", ("w18", "w32", "w40")),
           ("cascade", "htc", "20e", ("w18", "w32", "w40")))
       for width in widths},
}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One named change to a family's recipe: `apply` edits the config (and returns it)."""
    apply: Callable[[ExperimentConfig], ExperimentConfig | None]
    group: str = ""  # variants of one group exclude each other: "width", "input size"


def choose(config: ExperimentConfig, chosen: str | None,
           variants: dict[str, Variant]) -> ExperimentConfig:
    """The recipe with the comma-separated `chosen` variants applied in `variants`' order."""
    names = [name.strip() for name in (chosen or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in variants]
    if unknown:
        raise ValueError(f"unknown variant {', '.join(map(repr, unknown))}; choose from "
                         f"{', '.join(variants) or 'none (this experiment has no variants)'}")
    groups: dict[str, list[str]] = {}
    for name in dict.fromkeys(names):
        if variants[name].group:
            groups.setdefault(variants[name].group, []).append(name)
    for group, members in groups.items():
        if len(members) > 1:
            others = [n for n, v in variants.items() if v.group == group]
            raise ValueError(f"variants {' and '.join(members)} both choose the {group}; "
                             f"choose one of {', '.join(others)}")
    for name, variant in variants.items():
        if name in names:
            config = variant.apply(config) or config
    return config


def with_variant(config: ExperimentConfig, chosen: str | None,
                 **variants: Callable[[ExperimentConfig], ExperimentConfig]) -> ExperimentConfig:
    """`choose` for a file that writes its own `get_config(variants)`, variants as functions."""
    return choose(config, chosen, {name: Variant(apply) for name, apply in variants.items()})


def _load_module(path: pathlib.Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"hrnet_experiments.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _families() -> dict[str, pathlib.Path]:
    return {path.stem: path for path in sorted(EXPERIMENTS_DIR.glob("*.py"))
            if not path.name.startswith("_")}


def _description(module: ModuleType) -> str:
    return (module.__doc__ or "").strip().splitlines()[0] if (module.__doc__ or "").strip() else ""


def variant_table(module: ModuleType) -> dict[str, str]:
    """A family docstring's `Variants:` table: variant -> its text (the expected result). A row
    starts at the table's indentation; lines indented further continue the row above."""
    lines = (module.__doc__ or "").splitlines()
    stripped = [line.strip() for line in lines]
    if "Variants:" not in stripped:
        return {}
    table: dict[str, str] = {}
    indent, name = None, ""
    for line in lines[stripped.index("Variants:") + 1:]:
        if not line.strip():
            break
        depth = len(line) - len(line.lstrip())
        indent = depth if indent is None else indent
        if depth > indent:
            table[name] += " " + line.strip()
        else:
            name, _, text = line.strip().partition(" ")
            table[name] = text.strip()
    return table


def available() -> dict[str, tuple[str, dict[str, str]]]:
    """Family name -> (its one-line description, its variants' table)."""
    out = {}
    for name, path in _families().items():
        module = _load_module(path)
        out[name] = (_description(module), variant_table(module))
    return out


def variants_of(name: str) -> dict[str, Variant]:
    """The family's variants, as its file declares them (empty for a `get_config` file)."""
    return dict(getattr(_load_module(_families()[name]), "VARIANTS", {}))


def current_name(spec: str) -> str:
    """A spec under its name now: an old one-file name (with its variant) as its family's."""
    name, _, variant = spec.partition(":")
    if name not in RENAMED:
        return spec
    family, _, implied = RENAMED[name].partition(":")
    chosen = ",".join(v for v in (implied, variant) if v)
    return f"{family}:{chosen}" if chosen else family


def same_experiment(spec: str, other: str) -> bool:
    """Whether two specs name one experiment: the same family and variants, in any order,
    under old names or new."""
    def canonical(text: str) -> tuple[str, frozenset[str]]:
        name, _, chosen = current_name(text).partition(":")
        return name, frozenset(v.strip() for v in chosen.split(",") if v.strip())
    return canonical(spec) == canonical(other)


def load(spec: str) -> ExperimentConfig:
    """'NAME' or 'NAME:VARIANT,VARIANT' -> the experiment's config, named and described (the
    first line of its docstring)."""
    name, _, chosen = spec.partition(":")
    families = _families()
    if name not in families:
        if name in RENAMED:
            raise ValueError(f"experiment {name} is now called {current_name(spec)} (one file a "
                             "recipe family, its variants after the colon)")
        raise ValueError(f"unknown experiment {name!r}; available: {', '.join(families)}")
    module = _load_module(families[name])
    try:
        if hasattr(module, "get_config"):
            config = module.get_config(chosen or None)
        else:
            config = choose(module.recipe(), chosen, module.VARIANTS)
    except ValueError as error:
        raise ValueError(f"experiment {name}: {error}") from None
    config.name = spec
    config.description = _description(module)
    return config
