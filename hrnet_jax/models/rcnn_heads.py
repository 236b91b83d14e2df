"""The heads of the two-stage detectors on HRNetV2p's pyramid (Faster / Mask R-CNN, with
mmdet's module names in the comments for the weight conversion).

`RPNHead` (mmdet `rpn_head`): one 3x3 conv + ReLU shared by the levels (`rpn_conv`), then 1x1
convs to one objectness logit (`rpn_cls`) and 4 box deltas (`rpn_reg`) per anchor, laid out
cell-major, anchor-minor as `tasks.boxes.grid_anchors`.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

# mmdet initialises the RPN's and the R-CNN heads' convs N(0, 0.01).
_NORMAL_001 = nn.initializers.normal(0.01)


class RPNHead(nn.Module):
    num_anchors: int = 3
    channels: int = 256
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, levels: list[jnp.ndarray]) -> tuple[list[jnp.ndarray], list[jnp.ndarray]]:
        """Per level (N, H, W, C) -> objectness logits (N, H*W*A) and deltas (N, H*W*A, 4),
        float32."""
        shared = nn.Conv(self.channels, (3, 3), padding=1, kernel_init=_NORMAL_001,
                         dtype=self.dtype, name="conv")
        objectness_conv = nn.Conv(self.num_anchors, (1, 1), kernel_init=_NORMAL_001,
                                  dtype=self.dtype, name="objectness")
        delta_conv = nn.Conv(self.num_anchors * 4, (1, 1), kernel_init=_NORMAL_001,
                             dtype=self.dtype, name="deltas")
        objectness, deltas = [], []
        for x in levels:
            features = nn.relu(shared(x))
            n = x.shape[0]
            objectness.append(objectness_conv(features).astype(jnp.float32).reshape(n, -1))
            deltas.append(delta_conv(features).astype(jnp.float32).reshape(n, -1, 4))
        return objectness, deltas
