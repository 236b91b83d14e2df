"""HRNet-OCR: object-contextual representations on the HRNetV2 features (Yuan et al., ECCV 2020;
the official HRNet-Semantic-Segmentation `seg_hrnet_ocr.py`), following the paper's figure:

    concat of the upsampled branches (15C) ─┬─ aux: 1x1 ConvBN (bias) + 1x1 -> K soft object regions
                                            └─ 3x3 ConvBN (bias) -> 512 pixel representations
    object region representations = the pixels averaged by each region's spatial softmax (gather)
    pixel-region relation = softmax(query(pixels) . key(regions) / sqrt(256)) (attention)
    object-contextual representation = relation . value(regions), 1x1 back to 512 (attention)
    augmented representation = 1x1 ConvBN(concat(context, pixels)) -> 512, channel dropout 0.05
    classifier: 1x1 (bias) -> K classes

Query, key and value transforms are the reference's f_pixel / f_object (two 1x1 ConvBN-ReLU to
256) and f_down (one), f_up maps the context back to 512; none has a bias. Every BatchNorm of the
OCR model uses PyTorch momentum 0.1 (Flax 0.9), the backbone's included.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hrnet_jax.models.heads import concat_upsampled
from hrnet_jax.models.layers import ConvBN, LayerConfig


def gather_object_regions(pixels: jnp.ndarray, region_logits: jnp.ndarray) -> jnp.ndarray:
    """(N, H, W, C) pixels, (N, H, W, K) region logits -> (N, K, 1, C): each region's pixels
    weighted by its softmax over the image's positions (the reference's SpatialGather_Module)."""
    n, h, w, c = pixels.shape
    weights = jax.nn.softmax(region_logits.reshape(n, h * w, -1).astype(jnp.float32), axis=1)
    regions = jnp.einsum("npk,npc->nkc", weights.astype(pixels.dtype), pixels.reshape(n, h * w, c))
    return regions[:, :, None, :]


class ObjectAttention(nn.Module):
    """The pixel-region relation and the object-contextual representation of every pixel
    (the reference's _ObjectAttentionBlock at scale 1)."""

    key_channels: int
    layers: LayerConfig

    @nn.compact
    def __call__(self, pixels: jnp.ndarray, regions: jnp.ndarray, train: bool) -> jnp.ndarray:
        n, h, w, c = pixels.shape
        unit = lambda name: ConvBN(self.key_channels, self.layers, kernel=1, name=name)
        query = unit("pixel1")(unit("pixel0")(pixels, train), train).reshape(n, h * w, -1)
        key = unit("object1")(unit("object0")(regions, train), train)[:, :, 0]  # (N, K, key)
        value = unit("down")(regions, train)[:, :, 0]
        relation = jnp.einsum("npd,nkd->npk", query, key).astype(jnp.float32)
        relation = jax.nn.softmax(relation * self.key_channels ** -0.5, axis=-1)
        context = jnp.einsum("npk,nkd->npd", relation.astype(value.dtype), value)
        return ConvBN(c, self.layers, kernel=1, name="up")(context.reshape(n, h, w, -1), train)


class OCRHead(nn.Module):
    """HRNetV2 features -> (logits, auxiliary logits) in training, logits in inference; both
    at 1/4 resolution."""

    num_classes: int
    layers: LayerConfig
    mid_channels: int = 512
    key_channels: int = 256
    dropout: float = 0.05

    @nn.compact
    def __call__(self, xs: list[jnp.ndarray], train: bool):
        features = concat_upsampled(xs, self.layers)
        self.sow("intermediates", "concat", features)  # a feature tap (hrnet_jax.surgery.tap)
        aux = ConvBN(features.shape[-1], self.layers, kernel=1, bias=True, name="aux")(features, train)
        aux = self.layers.conv(self.num_classes, 1, bias=True, name="aux_classifier")(aux)
        pixels = ConvBN(self.mid_channels, self.layers, bias=True, name="ocr_conv")(features, train)
        regions = gather_object_regions(pixels, aux)
        context = ObjectAttention(self.key_channels, self.layers, name="context")(pixels, regions, train)
        augmented = ConvBN(self.mid_channels, self.layers, kernel=1, name="fuse")(
            jnp.concatenate([context, pixels], axis=-1), train)
        # Dropout2d: whole channels dropped (the mask broadcast over the positions).
        augmented = nn.Dropout(self.dropout, broadcast_dims=(1, 2), deterministic=not train)(augmented)
        logits = self.layers.conv(self.num_classes, 1, bias=True, name="classifier")(augmented)
        return (logits, aux) if train else logits
