"""The embedded demos reach the quality their docstrings state (looser bounds here).

Slow (about 55 minutes on 2 cores): the README's test command leaves them out; run them with
`python -m pytest -m slow tests`.
"""

from __future__ import annotations

import pytest

from hrnet_jax import experiments
from hrnet_jax.training.loop import Trainer


@pytest.mark.slow
@pytest.mark.parametrize("name,bounds", [("seg_synthetic", {"miou": 0.7}),
                                         ("pose_synthetic", {"pck": 0.9}),
                                         ("cls_synthetic", {"top1": 0.8}),
                                         ("det_synthetic", {"ap": 0.6}),
                                         ("inst_synthetic", {"ap": 0.6, "mask_ap": 0.5}),
                                         ("inst_synthetic:cascade_rcnn", {"ap": 0.6}),
                                         ("inst_synthetic:cascade_mask_rcnn",
                                          {"ap": 0.6, "mask_ap": 0.5}),
                                         ("inst_synthetic:htc", {"ap": 0.6, "mask_ap": 0.5})])
def test_demo_trains_to_a_clearly_good_metric(tmp_path, name, bounds):
    result = Trainer(experiments.load(name), str(tmp_path)).train()
    assert all(result[metric] >= bound for metric, bound in bounds.items()), result
