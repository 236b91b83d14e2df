"""Classification: top-k accuracy (top-1, and top-5 where there are more than 5 classes)."""

from __future__ import annotations

import jax.numpy as jnp


def top_k_correct(logits: jnp.ndarray, labels: jnp.ndarray, k: int) -> jnp.ndarray:
    """1.0 where the label is among the k highest logits."""
    label_logit = jnp.take_along_axis(logits, labels[:, None], -1)
    return (jnp.sum(logits > label_logit, -1) < k).astype(jnp.float32)


def top_k_sums(logits: jnp.ndarray, labels: jnp.ndarray, mask: jnp.ndarray,
               ks: tuple[int, ...]) -> dict[str, jnp.ndarray]:
    """Correct counts (`top1`, `top5`, ...) and the `count` of the examples with mask 1."""
    sums = {f"top{k}": jnp.sum(top_k_correct(logits, labels, k) * mask) for k in ks}
    return {**sums, "count": jnp.sum(mask)}


def top_k_summary(sums: dict) -> dict[str, float]:
    """The accuracies of `top_k_sums` added over the evaluation set."""
    count = max(float(sums["count"]), 1.0)
    return {k: float(v) / count for k, v in sums.items() if k != "count"}
