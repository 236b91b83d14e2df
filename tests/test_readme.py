"""The README's surgery example runs as printed."""

from __future__ import annotations

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"


def test_readme_surgery_example_runs():
    text = README.read_text()
    block = re.search(r"<!-- surgery-example.*?-->\n```python\n(.*?)```", text, re.S).group(1)
    scope: dict = {}
    exec(compile(block, str(README), "exec"), scope)
    assert scope["logits"].shape == (2, 16, 16, 19)
    assert scope["taps"]["stage3/branch2"].shape == (2, 4, 4, 16)
    assert np.asarray(scope["seg7_vars"]["params"]["head"]["classifier"]["kernel"]).shape[-1] == 7
    assert [s.num_modules for s in scope["small_arch"].stages] == [1, 1, 1]


def test_readme_says_which_dataset_each_real_sample_prepares_as(shared_data):
    """Every sample folder of ../shared/data in the README's table, with a `prepare` name that
    exists."""
    from hrnet_jax.data import datasets

    text = README.read_text()
    for sample in sorted(p.name for p in shared_data.iterdir() if p.is_dir()):
        row = next((line for line in text.splitlines()
                    if line.startswith("|") and f"`{sample}`" in line), None)
        assert row is not None, sample
        named = re.findall(r"`(\w+)`", row.split("|")[2])
        assert named and set(named) <= set(datasets.preparable()) | {"person_keypoints_"}, row
