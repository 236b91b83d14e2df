"""Compiling once a program (hrnet_jax/training/sharding.py): announced, with how long the same
program took last time on this host."""

from __future__ import annotations

import json
import re

import jax
import numpy as np

from hrnet_jax.training.sharding import CompiledOnFirstCall


def test_a_compilation_is_announced_with_how_long_it_took_last_time(tmp_path, monkeypatch,
                                                                    capsys):
    monkeypatch.setenv("HRNET_JAX_CACHE", str(tmp_path))
    first = CompiledOnFirstCall(jax.jit(lambda x: x * 2), "train_step", "demo|64x64")
    assert float(first(np.float32(2))) == 4.0
    assert "compiling the train step (the first time for this model and shape" in \
        capsys.readouterr().err
    remembered = json.loads((tmp_path / "compile_times.json").read_text())
    assert list(remembered) == ["train_step|demo|64x64"]
    again = CompiledOnFirstCall(jax.jit(lambda x: x * 2), "train_step", "demo|64x64")
    assert float(again(np.float32(3))) == 6.0
    assert re.search(r"compiling the train step \(took \d+ s last time\)", capsys.readouterr().err)
    assert float(again(np.float32(4))) == 8.0 and capsys.readouterr().err == ""  # compiled once
