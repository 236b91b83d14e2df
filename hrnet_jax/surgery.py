"""Model surgery on the plain variables tree: pure functions, no module rebuilt by hand.

    cls = create_model("hrnet_w18", "classification")       # e.g. from hrnet_jax.weights
    seg = create_model("hrnet_w18", "segmentation", 19)
    seg_vars, report = transplant(cls_vars, seg, jax.random.key(0))   # backbone carried
    feats = tap(seg, seg_vars, images, ["stage3/branch2", "head/concat"])
    tx = freeze(optax.sgd(0.01), ["backbone/stem", "backbone/layer1"])

Paths are '/'-joined keys of the variables tree (`backbone/stage3/module0/fuse/to0_from1/conv/kernel`).
A path pattern matches a path equal to it, under it (`backbone/stem` matches everything of the
stem), or as a glob (`backbone/stage*/module0/*`).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import re
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from hrnet_jax.models import DETECTORS, HRNet
from hrnet_jax.models.hrnet import ArchSpec

Variables = dict[str, Any]  # {'params': ..., 'batch_stats': ...}


# -- paths ----------------------------------------------------------------------------------
def flatten(tree: dict) -> dict[str, Any]:
    """{'a/b/c': leaf} of a nested dict."""
    return traverse_util.flatten_dict(tree, sep="/")


def unflatten(flat: dict[str, Any]) -> dict:
    return traverse_util.unflatten_dict(flat, sep="/")


def matches(path: str, pattern: str) -> bool:
    """True when `path` or one of its ancestors equals `pattern` or fits it as a glob."""
    pattern = pattern.strip("/")
    parts = path.split("/")
    return any(fnmatch.fnmatchcase("/".join(parts[:n]), pattern) for n in range(1, len(parts) + 1))


# -- transplant and head swap ----------------------------------------------------------------
@dataclasses.dataclass
class SurgeryReport:
    """Every variable of source and target accounted for (paths include the collection)."""

    carried: list[str] = dataclasses.field(default_factory=list)
    created: list[str] = dataclasses.field(default_factory=list)
    dropped: list[str] = dataclasses.field(default_factory=list)
    reshaped: list[tuple[str, tuple, tuple]] = dataclasses.field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"carried {len(self.carried)}, created {len(self.created)}, "
                 f"dropped {len(self.dropped)}"]
        for title, paths in (("created", self.created), ("dropped", self.dropped)):
            if paths:
                lines.append(f"{title}: " + ", ".join(paths))
        lines += [f"re-initialised {p}: {old} -> {new}" for p, old, new in self.reshaped]
        return "\n".join(lines)


class SurgeryError(ValueError):
    """A transplant that would silently lose weights; `.report.reshaped` lists them all."""

    def __init__(self, message: str, report: SurgeryReport):
        lines = [f"shape mismatch {p}: source {old}, target {new}" for p, old, new in report.reshaped]
        more = f"\n... and {len(lines) - 20} more" if len(lines) > 20 else ""
        super().__init__(f"{message}; {len(lines)} mismatched:\n" + "\n".join(lines[:20]) + more)
        self.report = report


def init_variables(model: HRNet, rng: jax.Array, image_size: tuple[int, int] = (64, 64)) -> Variables:
    """Fresh variables of `model` (one jitted init on a zero image)."""
    images = jnp.zeros((1, *image_size, 3), jnp.float32)
    return jax.jit(lambda key: model.init(key, images, train=False))(rng)


def transplant(variables: Variables, target: HRNet, rng: jax.Array,
               carry: Sequence[str] = ("backbone",), reinit_on_shape_change: Sequence[str] = (),
               image_size: tuple[int, int] = (64, 64)) -> tuple[Variables, SurgeryReport]:
    """The variables of `target`: paths under `carry` (patterns, per collection) copied from
    `variables`, everything else freshly initialised from `rng`.

    A carried path whose shape differs raises SurgeryError, unless it matches
    `reinit_on_shape_change` (then it is re-initialised and reported). E.g. classification ->
    segmentation carries the backbone and drops the incre head; -> pose also drops the fuse rows
    the pose net's last module does not have.
    """
    return carry_into(variables, init_variables(target, rng, image_size), carry,
                      reinit_on_shape_change)


def carry_into(variables: Variables, fresh: Variables, carry: Sequence[str] = ("backbone",),
               reinit_on_shape_change: Sequence[str] = ()) -> tuple[Variables, SurgeryReport]:
    """`transplant` into given variables (`fresh`, e.g. a freshly initialised train state's)."""
    source = {c: flatten(tree) for c, tree in variables.items()}
    report = SurgeryReport()
    result = {}
    for collection in sorted(fresh, key=lambda c: c != "params"):  # params first in reports
        flat = flatten(fresh[collection])
        old = source.get(collection, {})
        for path, leaf in flat.items():
            name = f"{collection}/{path}"
            if not any(matches(path, p) for p in carry) or path not in old:
                report.created.append(name)
            elif np.shape(old[path]) != np.shape(leaf):  # keeps the fresh one
                report.reshaped.append((name, tuple(np.shape(old[path])), tuple(np.shape(leaf))))
            else:
                flat[path] = jnp.asarray(old[path], leaf.dtype)
                report.carried.append(name)
        result[collection] = unflatten(flat)
    for collection, flat in source.items():
        kept = set(flatten(fresh.get(collection, {})))
        report.dropped += [f"{collection}/{p}" for p in flat if p not in kept or not any(
            matches(p, q) for q in carry)]
    bad = [r for r in report.reshaped
           if not any(matches(r[0].split("/", 1)[1], p) for p in reinit_on_shape_change)]
    if bad:
        raise SurgeryError("shapes differ between source and target (another arch or width?)",
                           SurgeryReport(reshaped=bad))
    return result, report


def swap_head(variables: Variables, target: HRNet, rng: jax.Array,
              image_size: tuple[int, int] = (64, 64)) -> tuple[Variables, SurgeryReport]:
    """Same model, another number of classes / joints: every weight kept except the head's
    layers whose shape changes (the classifier), which are re-initialised."""
    return transplant(variables, target, rng, carry=("backbone", "head"),
                      reinit_on_shape_change=("head",), image_size=image_size)


# -- feature taps ---------------------------------------------------------------------------
_BACKBONE_PARTS = re.compile(r"^(stem|layer1|transition\d+|stage\d+)(/|$)")


def _normalise(name: str) -> str:
    name = name.strip("/")
    return f"backbone/{name}" if _BACKBONE_PARTS.match(name) else name


def _captured(intermediates: dict) -> dict[str, Any]:
    """{path: value} of every captured module output and sown value; the k-th element of a
    list output is also `path/branch{k}` (unless a real module has that path)."""
    out: dict[str, Any] = {}
    for key, value in flatten(intermediates).items():
        parts = key.split("/")
        path = "/".join(parts[:-1]) if parts[-1] == "__call__" else key
        out[path] = value[0] if isinstance(value, tuple) else value
    for path, value in list(out.items()):
        if isinstance(value, (list, tuple)):
            for k, item in enumerate(value):
                out.setdefault(f"{path}/branch{k}", item)
    return out


def available_taps(model: HRNet, variables: Variables, images: jax.Array) -> list[str]:
    """Every name `tap` accepts for this model (computed on shapes only)."""
    if model.layers.scan_modules:
        raise ValueError("taps need scan_modules=False (a scan keeps one body's intermediates)")
    _, state = jax.eval_shape(lambda v, x: model.apply(
        v, x, train=False, capture_intermediates=True, mutable=["intermediates"]), variables, images)
    return sorted(_captured(state["intermediates"]))


def tap(model: HRNet, variables: Variables, images: jax.Array, names: Sequence[str],
        train: bool = False) -> dict[str, Any]:
    """Run the model and return the named intermediates, e.g. `stage3/branch2` (stage 3's
    third output), `stage3/module0/fuse/branch1`, `stem`, `head/concat`, `head` (the output).

    `backbone/` may be left out. A module's output is its path; `path/branch{k}` is the k-th
    output of a module that returns one map per branch."""
    wanted = {name: _normalise(name) for name in names}
    valid = set(available_taps(model, variables, images))
    unknown = [n for n, path in wanted.items() if path not in valid]
    if unknown:
        near = sorted(p for p in valid if any(p.startswith(_normalise(u).rsplit("/", 1)[0])
                                              for u in unknown))[:40]
        raise KeyError(f"unknown tap(s) {unknown}; valid names near them: {near} "
                       "(surgery.available_taps lists all)")
    modules = {re.sub(r"/branch\d+$", "", p) for p in wanted.values()} | set(wanted.values())

    def capture(module, method_name: str) -> bool:
        return method_name == "__call__" and "/".join(module.path) in modules

    mutable = ["intermediates", "batch_stats"] if train else ["intermediates"]
    run = jax.jit(lambda v, x: model.apply(v, x, train=train, capture_intermediates=capture,
                                           mutable=mutable)[1]["intermediates"])
    captured = _captured(run(variables, images))
    return {name: captured[path] for name, path in wanted.items()}


# -- freezing -------------------------------------------------------------------------------
def trainable_mask(params: dict, frozen: Sequence[str]) -> dict:
    """A tree of bools like `params`: False where a path matches one of `frozen`."""
    flat = flatten(params)
    return unflatten({p: not any(matches(p, f) for f in frozen) for p in flat})


def freeze(tx: optax.GradientTransformation, frozen: Sequence[str]) -> optax.GradientTransformation:
    """`tx` on the trainable parameters; frozen ones get zero updates (no weight decay either,
    and no optimizer state is kept for them)."""
    if not frozen:
        return tx

    def labels(params):
        return jax.tree.map(lambda t: "train" if t else "frozen", trainable_mask(params, frozen))

    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


# -- depth views ----------------------------------------------------------------------------
def shallower(arch: ArchSpec, variables: Variables, modules: Sequence[int],
              blocks: int | None = None) -> tuple[ArchSpec, Variables]:
    """A shallower HRNet from a deeper one's variables: `modules[s]` modules in stage s+2 (the
    first ones and the last, whose output the next transition was trained on) and, if given,
    the first `blocks` residual blocks of every branch. Returns the new arch and variables;
    build its model with `create_model(new_arch, head, ...)`."""
    if len(modules) != len(arch.stages):
        raise ValueError(f"modules needs one count per stage ({len(arch.stages)}), got {modules}")
    stages = []
    renames: dict[str, dict[str, str]] = {}
    for s, (spec, count) in enumerate(zip(arch.stages, modules), start=2):
        if not 1 <= count <= spec.num_modules:
            raise ValueError(f"stage{s} has {spec.num_modules} modules; cannot keep {count}")
        if blocks is not None and not 1 <= blocks <= spec.num_blocks:
            raise ValueError(f"stage{s} has {spec.num_blocks} blocks a branch; cannot keep {blocks}")
        kept = list(range(count - 1)) + [spec.num_modules - 1]
        renames[f"stage{s}"] = {f"module{old}": f"module{new}" for new, old in enumerate(kept)}
        stages.append(dataclasses.replace(spec, num_modules=count,
                                          num_blocks=blocks or spec.num_blocks))
    new_arch = dataclasses.replace(arch, stages=tuple(stages))
    block_re = re.compile(r"/branch\d+/block(\d+)/")
    out = {}
    for collection, tree in variables.items():
        flat = {}
        for path, leaf in flatten(tree).items():
            parts = path.split("/")
            if len(parts) > 2 and parts[0] == "backbone" and parts[1] in renames:
                module = renames[parts[1]].get(parts[2])
                found = block_re.search(path)
                if module is None or (blocks is not None and found and int(found.group(1)) >= blocks):
                    continue
                path = "/".join([*parts[:2], module, *parts[3:]])
            flat[path] = leaf
        out[collection] = unflatten(flat)
    return new_arch, out


# -- export ---------------------------------------------------------------------------------
def export_inference(model: HRNet, variables: Variables, image_size: tuple[int, int],
                     dtype: Any = jnp.float32, postprocess: Any = None,
                     platforms: Sequence[str] | None = None) -> jax.export.Exported:
    """The model's inference function with its weights, serialisable StableHLO
    (`exported.serialize()`), for any batch size: input (b, H, W, 3) normalised images, and
    for a detector also (b, 2) int32 image sizes (each image's height and width in its padded
    canvas, where the boxes are clipped). `postprocess` (a task's, e.g. detection's decoding
    and NMS) runs in the same program; `platforms` (e.g. ("cpu", "cuda")): where it may run
    (default: this machine's)."""
    batch = jax.export.symbolic_shape("b")[0]
    specs = [jax.ShapeDtypeStruct((batch, *image_size, 3), dtype)]
    if model.head in DETECTORS:
        specs.append(jax.ShapeDtypeStruct((batch, 2), jnp.int32))

    def infer(images, image_sizes=None):
        outputs = model.apply(variables, images, train=False, image_sizes=image_sizes)
        return outputs if postprocess is None else postprocess(outputs)

    return jax.export.export(jax.jit(infer), platforms=platforms)(*specs)


def fold_batchnorm(model: HRNet, variables: Variables) -> tuple[HRNet, Variables]:
    """Inference with every BatchNorm folded into the conv before it: the same outputs (to
    float rounding) from fewer operations, on every backend. Returns the model without
    BatchNorm and its variables ({'params'} only): each conv's kernel scaled by
    s = scale / sqrt(var + eps) per output channel, its bias (b - mean) * s + beta."""
    layers = dataclasses.replace(model.layers, folded_batchnorm=True)
    folded_model = model.clone(layers=layers)
    params, stats = flatten(variables["params"]), flatten(variables.get("batch_stats", {}))
    folded = {path: value for path, value in params.items()}
    for path in [p for p in params if p.endswith("/kernel")]:
        module = path[: -len("/kernel")]
        parent, _, name = module.rpartition("/")
        norm = f"{parent}/{name.replace('conv', 'bn')}" if "conv" in name else None
        bias = params.get(f"{module}/bias")
        if norm is None or f"{norm}/mean" not in stats:  # no BatchNorm after it: a zero bias
            if bias is None:
                folded[f"{module}/bias"] = jnp.zeros(params[path].shape[-1], jnp.float32)
            continue
        kernel = params[path]
        s = params[f"{norm}/scale"] / jnp.sqrt(stats[f"{norm}/var"] + model.layers.bn_epsilon)
        # Scanned modules stack their variables: s is (..., out), the kernel (..., kh, kw, in, out).
        folded[path] = kernel * s.reshape(*s.shape[:-1], *(1,) * (kernel.ndim - s.ndim), -1)
        folded[f"{module}/bias"] = ((0 if bias is None else bias) - stats[f"{norm}/mean"]) * s \
            + params[f"{norm}/bias"]
        del folded[f"{norm}/scale"], folded[f"{norm}/bias"]
    leftover = [p for p in folded if p.rsplit("/", 1)[-1] == "scale" and "/bn" in p]
    if leftover:
        raise SurgeryError(f"BatchNorm without a conv before it: {leftover[:5]}")
    return folded_model, {"params": unflatten(folded)}


def load_exported(serialized: bytes | bytearray) -> jax.export.Exported:
    """The inverse of `exported.serialize()`; call `.call(images)` on the result."""
    return jax.export.deserialize(bytearray(serialized))


__all__ = ["SurgeryError", "SurgeryReport", "available_taps", "export_inference",
           "fold_batchnorm", "freeze", "init_variables", "load_exported", "shallower", "swap_head", "tap",
           "trainable_mask", "transplant"]
