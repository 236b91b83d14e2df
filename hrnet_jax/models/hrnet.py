"""The HRNet backbone, laid out as in the paper's figure: stem, stage 1, then stages 2-4 of
parallel branches joined by transitions, each stage a chain of HighResolutionModules, each module
its `branches` followed by a `fuse` that exchanges information across resolutions.

Variable names follow the figure (`stage3/module2/branch1/block0/conv1`,
`stage3/module2/fuse/to0_from2`); `hrnet_jax.weights` maps them to the PyTorch keys.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax.numpy as jnp

from hrnet_jax.models.layers import BLOCKS, Bottleneck, ConvBN, LayerConfig
from hrnet_jax.models.scan import scan_body, stacked_view


@dataclasses.dataclass(frozen=True)
class StageSpec:
    """One stage: `num_modules` HighResolutionModules over len(widths) branches."""

    num_modules: int
    num_blocks: int
    widths: tuple[int, ...]
    block: str = "basic"


@dataclasses.dataclass(frozen=True)
class ArchSpec:
    """The shape of an HRNet: the stem width, stage 1 (a Bottleneck layer) and stages 2-4."""

    stem_width: int
    stage1_blocks: int
    stage1_planes: int
    stages: tuple[StageSpec, ...]

    @property
    def widths(self) -> tuple[int, ...]:
        return self.stages[-1].widths


def standard_arch(width: int) -> ArchSpec:
    """HRNet-W{width}: stage 1 of 4 Bottlenecks, modules 1/4/3 of 4 BasicBlocks a branch."""
    c = width
    return ArchSpec(64, 4, 64, (StageSpec(1, 4, (c, 2 * c)),
                                StageSpec(4, 4, (c, 2 * c, 4 * c)),
                                StageSpec(3, 4, (c, 2 * c, 4 * c, 8 * c))))


ARCHS: dict[str, ArchSpec] = {
    "hrnet_w18_small": ArchSpec(64, 1, 32, (StageSpec(1, 2, (16, 32)),
                                            StageSpec(1, 2, (16, 32, 64)),
                                            StageSpec(1, 2, (16, 32, 64, 128)))),
    "hrnet_w18_small_v2": ArchSpec(64, 2, 64, (StageSpec(1, 2, (18, 36)),
                                               StageSpec(3, 2, (18, 36, 72)),
                                               StageSpec(2, 2, (18, 36, 72, 144)))),
    **{f"hrnet_w{w}": standard_arch(w) for w in (18, 30, 32, 40, 44, 48, 64)},
}


def tiny_arch(width: int = 4, stem_width: int = 8) -> ArchSpec:
    """A width-reduced HRNet with one block and one module per stage, for fast tests."""
    c = width
    return ArchSpec(stem_width, 1, stem_width, (StageSpec(1, 1, (c, 2 * c)),
                                                StageSpec(1, 1, (c, 2 * c, 4 * c)),
                                                StageSpec(1, 1, (c, 2 * c, 4 * c, 8 * c))))


class Stem(nn.Module):
    """Two 3x3 stride-2 convs (3 -> 64 -> 64) with BN and ReLU: 1/4 resolution."""

    width: int
    layers: LayerConfig

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        x = nn.relu(self.layers.norm(train, "bn1")(self.layers.conv(self.width, 3, 2, name="conv1")(x)))
        return nn.relu(self.layers.norm(train, "bn2")(self.layers.conv(self.width, 3, 2, name="conv2")(x)))


class Transition(nn.Module):
    """Between stages: a branch whose width changes gets a 3x3 conv; a new branch is a 3x3
    stride-2 conv from the previous stage's last (lowest-resolution) branch."""

    in_widths: tuple[int, ...]
    out_widths: tuple[int, ...]
    layers: LayerConfig

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> list[jnp.ndarray]:
        outs = []
        for i, width in enumerate(self.out_widths):
            if i < len(self.in_widths):
                x = xs[i]
                if self.in_widths[i] != width:
                    x = ConvBN(width, self.layers, name=f"branch{i}")(x, train)
            else:
                # Nested as in the references, whose new-branch entry is a list of downsamplers.
                new_branch = _Downsampler((width,), self.layers, final_relu=True, name=f"branch{i}")
                x = new_branch(xs[-1], train)
            outs.append(x)
        return outs


class _Downsampler(nn.Module):
    """A chain of 3x3 stride-2 ConvBNs with ReLU; the last has one only if `final_relu`
    (a transition's new branch does, a fuse path does not)."""

    widths: tuple[int, ...]
    layers: LayerConfig
    final_relu: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        last = len(self.widths) - 1
        for k, width in enumerate(self.widths):
            relu = k < last or self.final_relu
            x = ConvBN(width, self.layers, stride=2, relu=relu, name=f"down{k}")(x, train)
        return x


class HighResolutionModule(nn.Module):
    """The repeated unit of stages 2-4: parallel branches, then a fuse across resolutions.

    `fuse_outputs` = 1 builds only fuse row 0, as the pose net's final module.
    """

    widths: tuple[int, ...]
    num_blocks: int
    layers: LayerConfig
    block: str = "basic"
    fuse_outputs: int | None = None

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> list[jnp.ndarray]:
        xs = [residual_layer(self.block, self.widths[i], self.num_blocks, self.layers, x.shape[-1],
                             self.is_initializing(), name=f"branch{i}")(x, train)
              for i, x in enumerate(xs)]
        if len(xs) == 1:
            return xs
        return Fuse(self.widths, self.layers, self.fuse_outputs, name="fuse")(xs, train)


class Fuse(nn.Module):
    """Exchange across resolutions. Output i from input j: j > i is a 1x1 ConvBN then upsampling
    (no ReLU); j < i is (i - j) 3x3 stride-2 ConvBNs, the last mapping to width i without ReLU.
    The terms are summed and pass ONE ReLU."""

    widths: tuple[int, ...]
    layers: LayerConfig
    outputs: int | None = None

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> list[jnp.ndarray]:
        outs = []
        for i in range(self.outputs or len(xs)):
            size = xs[i].shape[1:3]
            total = xs[i]
            for j, x in enumerate(xs):
                name = f"to{i}_from{j}"
                if j > i:
                    y = ConvBN(self.widths[i], self.layers, kernel=1, relu=False, name=name)(x, train)
                    total = total + self.layers.resize(y, size)
                elif j < i:
                    chain = (self.widths[j],) * (i - j - 1) + (self.widths[i],)
                    total = total + _Downsampler(chain, self.layers, name=name)(x, train)
            outs.append(nn.relu(total))
        return outs


def residual_layer(block: str, planes: int, num_blocks: int, layers: LayerConfig, in_width: int,
                   initializing: bool, name: str, unit: str = "branch") -> nn.Module:
    """A ResidualLayer; with `layers.scan_modules`, its identical blocks run as one scan (all
    of them, or all after a first block that changes the width). `unit` "module": stage 1,
    rematerialised whole as a module is (`layers.remat`)."""
    start = int(in_width != planes * BLOCKS[block].expansion)
    if not layers.scan_modules or num_blocks - start < 2:
        layer = layers.checkpointed(ResidualLayer, unit)
        return layer(block, planes, num_blocks, layers, start, name=name)
    view = layers.checkpointed(stacked_view(ResidualLayer, "block", start, num_blocks - start,
                                            initializing), unit)
    return view(block, planes, num_blocks, layers, start, scanned=True, name=name)


class ResidualLayer(nn.Module):
    """`num_blocks` residual blocks at one resolution: a branch, or stage 1.
    Blocks from `first_scanned` on run as one scan when `scanned`."""

    block: str
    planes: int
    num_blocks: int
    layers: LayerConfig
    first_scanned: int = 0
    scanned: bool = False

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        block = self.layers.checkpointed(BLOCKS[self.block], "block")
        unrolled = self.first_scanned if self.scanned else self.num_blocks
        for k in range(unrolled):
            x = block(self.planes, self.layers, name=f"block{k}")(x, train)
        if self.scanned:
            body = scan_body(_BlockBody, self.num_blocks - self.first_scanned)
            x, _ = body(self.block, self.planes, self.layers, train, name="scan")(x, None)
        return x


class _BlockBody(nn.Module):
    """One residual block as a scan body."""

    block: str
    planes: int
    layers: LayerConfig
    train: bool

    @nn.compact
    def __call__(self, x: jnp.ndarray, _) -> tuple[jnp.ndarray, None]:
        block = self.layers.checkpointed(BLOCKS[self.block], "block")
        return block(self.planes, self.layers, name="block")(x, self.train), None


class HRNetBackbone(nn.Module):
    """Stem, stage 1, and stages 2-4; returns the branch features, highest resolution first.

    `multi_scale_output=False` makes the last module fuse only into branch 0 (HRNetV1 for pose),
    and the output is then that single map in a list.
    """

    arch: ArchSpec
    layers: LayerConfig
    multi_scale_output: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> list[jnp.ndarray]:
        check_input_size(x.shape[1:3], self.layers.upsample)
        x = Stem(self.arch.stem_width, self.layers, name="stem")(x.astype(self.layers.dtype), train)
        x = residual_layer("bottleneck", self.arch.stage1_planes, self.arch.stage1_blocks, self.layers,
                           x.shape[-1], self.is_initializing(), name="layer1", unit="module")(x, train)
        xs, widths = [x], (self.arch.stage1_planes * Bottleneck.expansion,)
        for s, stage in enumerate(self.arch.stages, start=2):
            xs = Transition(widths, stage.widths, self.layers, name=f"transition{s - 1}")(xs, train)
            single_output = s == len(self.arch.stages) + 1 and not self.multi_scale_output
            stage_module = make_stage(stage, self.layers, single_output, self.is_initializing(),
                                      name=f"stage{s}")
            xs = stage_module(xs, train)
            widths = stage.widths
        return xs


class Stage(nn.Module):
    """A chain of `num_modules` HighResolutionModules; `single_output` trims the last fuse."""

    spec: StageSpec
    layers: LayerConfig
    single_output: bool = False

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> list[jnp.ndarray]:
        for m in range(self.spec.num_modules):
            last = m == self.spec.num_modules - 1
            module = self.layers.checkpointed(HighResolutionModule, "module")
            xs = module(self.spec.widths, self.spec.num_blocks, self.layers, self.spec.block,
                        1 if (last and self.single_output) else None, name=f"module{m}")(xs, train)
        return xs


def make_stage(spec: StageSpec, layers: LayerConfig, single_output: bool, initializing: bool,
               name: str) -> nn.Module:
    """A Stage, run as a scan when `layers.scan_modules` and two or more modules are identical
    (all but a trimmed last one)."""
    scanned = spec.num_modules - int(single_output)
    if not layers.scan_modules or scanned < 2:
        return Stage(spec, layers, single_output, name=name)
    view = stacked_view(_ScannedStage, "module", 0, scanned, initializing)
    return view(spec, layers, single_output, scanned, name=name)


class _ModuleBody(nn.Module):
    """One HighResolutionModule as a scan body."""

    spec: StageSpec
    layers: LayerConfig
    train: bool

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], _) -> tuple[list[jnp.ndarray], None]:
        module = self.layers.checkpointed(HighResolutionModule, "module")(
            self.spec.widths, self.spec.num_blocks, self.layers, self.spec.block, name="module")
        return module(xs, self.train), None


class _ScannedStage(nn.Module):
    """Stage whose first `scanned` modules run as one scan; a trimmed last module follows."""

    spec: StageSpec
    layers: LayerConfig
    single_output: bool
    scanned: int

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool) -> list[jnp.ndarray]:
        body = scan_body(_ModuleBody, self.scanned)
        xs, _ = body(self.spec, self.layers, train, name="scan")(xs, None)
        for m in range(self.scanned, self.spec.num_modules):
            module = self.layers.checkpointed(HighResolutionModule, "module")
            xs = module(self.spec.widths, self.spec.num_blocks, self.layers, self.spec.block, 1,
                        name=f"module{m}")(xs, train)
        return xs


def check_input_size(size: tuple[int, int], upsample: str) -> None:
    """Nearest upsampling by factor needs every branch to be exactly half the one above it."""
    if upsample != "nearest" or (size[0] % 32 == 0 and size[1] % 32 == 0):
        return

    def around(n: int) -> list[int]:
        return sorted({max(32, n // 32 * 32), -(-n // 32) * 32})

    valid = [f"{h}x{w}" for h in around(size[0]) for w in around(size[1])]
    raise ValueError(
        f"input {size[0]}x{size[1]}: nearest upsampling by factor needs height and width divisible "
        f"by 32; nearest valid sizes: {', '.join(valid)} (or build the model with "
        f"upsample='bilinear', which takes any size)")
