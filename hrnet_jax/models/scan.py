"""Repeated identical children run as one `nn.scan` body, stored under their canonical names.

HRNet repeats itself: a stage chains identical modules, a branch chains identical blocks. Traced
one by one, W48's train step is a ~50k-line program that takes XLA a minute to compile; as scans,
each repeat is compiled once. The scan keeps its variables stacked (`scan/<body>` with a leading
axis), while the stored tree keeps `module0, module1, ...` / `block0, block1, ...`, so weights,
checkpoints and surgery see one layout whichever way the model runs.
"""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

COLLECTIONS = ["params", "batch_stats"]


def stacked_view(container: type[nn.Module], prefix: str, start: int, count: int,
                 initializing: bool) -> Any:
    """`container` (a module class that scans a body named `prefix` inside a child named
    `scan`) seen through the canonical names `{prefix}{start}` .. `{prefix}{start+count-1}`."""
    return nn.map_variables(
        container, COLLECTIONS,
        trans_in_fn=functools.partial(_map, _stack, prefix=prefix, start=start, count=count),
        trans_out_fn=functools.partial(_map, _unstack, prefix=prefix, start=start, count=count),
        # init=True maps freshly created variables out; at apply time it would run the body once
        # unmapped, so it is set only while initialising.
        init=initializing, mutable=True)


def scan_body(body: type[nn.Module], count: int) -> type[nn.Module]:
    """`body(carry, None) -> (carry, None)` repeated `count` times with its own variables."""
    return nn.scan(body, variable_axes={c: 0 for c in COLLECTIONS}, split_rngs={"params": True},
                   length=count)


def _map(function, collections: dict, **kwargs) -> dict:
    return {name: function(variables, **kwargs) for name, variables in collections.items()}


def _stack(variables: dict, prefix: str, start: int, count: int) -> dict:
    names = [f"{prefix}{k}" for k in range(start, start + count)]
    if names[0] not in variables:
        return variables
    stacked = jax.tree.map(lambda *leaves: jnp.stack(leaves), *[variables[n] for n in names])
    rest = {k: v for k, v in variables.items() if k not in names}
    return {**rest, "scan": {prefix: stacked}}


def _unstack(variables: dict, prefix: str, start: int, count: int) -> dict:
    if "scan" not in variables:
        return variables
    stacked = variables["scan"][prefix]
    named = {f"{prefix}{start + k}": jax.tree.map(lambda leaf: leaf[k], stacked)
             for k in range(count)}
    return {**{k: v for k, v in variables.items() if k != "scan"}, **named}
