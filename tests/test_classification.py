"""The classification task's loss against PyTorch."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
import torch.nn.functional as F

from hrnet_jax.metrics.topk import top_k_correct
from hrnet_jax.tasks.classification import cross_entropy


def test_classification_loss_and_top_k():
    logits = jnp.array([[2.0, 1.0, 0.5, 0.1], [0.1, 0.2, 3.0, 0.0]])
    labels = jnp.array([1, 2])
    expected = F.cross_entropy(torch.tensor(np.asarray(logits)), torch.tensor([1, 2]),
                               label_smoothing=0.1).item()
    assert abs(float(cross_entropy(logits, labels, 0.1)) - expected) < 1e-6
    np.testing.assert_array_equal(top_k_correct(logits, labels, 1), [0, 1])
    np.testing.assert_array_equal(top_k_correct(logits, labels, 2), [1, 1])
