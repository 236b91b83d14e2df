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
