"""Rebuild the parsed dlib ResNet as a TensorFlow graph and convert it to TFLite.

Affine (inference batch-norm) layers are folded into the convolution before them, so the graph
is plain conv/relu/pool/add/matmul: every op has an int8 TFLite kernel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import tensorflow as tf

from .dlib_resnet import DlibResNet
from .quant import full_int8

Op = tuple[Any, ...]


def _program(net: DlibResNet) -> list[Op]:
    """Ops in execution order (input first) with affine folded into the preceding conv."""
    layers = net.layers
    ops: list[Op] = []
    i = len(layers) - 1
    while i >= 0:
        layer = layers[i]
        if layer.kind.startswith("con"):
            after = layers[i - 1]
            if after.kind != "affine":
                raise ValueError(f"conv at {i} is not followed by an affine layer")
            w = layer.weights["W"].transpose(2, 3, 1, 0).astype(np.float32)  # OIHW -> HWIO
            gamma, beta = after.weights["gamma"], after.weights["beta"]
            w = w * gamma[None, None, None, :]
            b = layer.weights["b"] * gamma + beta
            if layer.pad not in (0, (layer.size - 1) // 2) or (layer.pad and layer.stride != 1):
                raise ValueError(f"conv padding {layer.pad} with stride {layer.stride} not supported")
            ops.append(("conv", w, b.astype(np.float32), layer.stride, "SAME" if layer.pad else "VALID"))
            i -= 2
            continue
        if layer.kind in ("max_pool", "avg_pool") and layer.pad:
            raise ValueError(f"{layer.kind} with padding {layer.pad} not supported")
        ops.append((layer.kind, layer))
        i -= 1
    return ops


class DlibFaceNet(tf.Module):
    """Input: RGB pixels 0..255 float32, (1, 150, 150, 3). Output: the 128-d descriptor."""

    def __init__(self, net: DlibResNet) -> None:
        super().__init__()
        self._ops = _program(net)
        self._mean = tf.constant(np.array(net.mean_rgb, np.float32).reshape(1, 1, 1, 3))

    @tf.function(input_signature=[tf.TensorSpec([1, 150, 150, 3], tf.float32)])
    def __call__(self, x: tf.Tensor) -> tf.Tensor:
        # dlib's input_rgb_image_sized subtracts the per-channel mean and divides by 256.
        x = (x - self._mean) * (1.0 / 256.0)
        tags: dict[int, tf.Tensor] = {}
        for op in self._ops:
            kind = op[0]
            if kind == "conv":
                _, w, b, stride, padding = op
                x = tf.nn.conv2d(x, w, stride, padding) + b
            elif kind == "relu":
                x = tf.nn.relu(x)
            elif kind == "max_pool":
                x = tf.nn.max_pool2d(x, op[1].size, op[1].stride, "VALID")
            elif kind == "avg_pool":
                x = tf.nn.avg_pool2d(x, op[1].size, op[1].stride, "VALID")
            elif kind == "avg_pool_all":
                x = tf.reduce_mean(x, axis=[1, 2])
            elif kind == "tag":
                tags[op[1].arg] = x
            elif kind == "skip":
                x = tags[op[1].arg]
            elif kind == "add_prev":
                x = _add_zero_padded(x, tags[op[1].arg])
            elif kind == "fc":
                x = tf.matmul(x, op[1].weights["W"].astype(np.float32))
            else:
                raise ValueError(kind)
        return x


def _add_zero_padded(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
    """dlib's add_prev: tensors of different size are added as if the smaller were zero-padded
    at the bottom/right and in the extra channels."""
    h = max(a.shape[1], b.shape[1])
    c = max(a.shape[3], b.shape[3])

    def fit(t: tf.Tensor) -> tf.Tensor:
        dh, dc = h - t.shape[1], c - t.shape[3]
        return tf.pad(t, [[0, 0], [0, dh], [0, dh], [0, dc]]) if dh or dc else t

    return fit(a) + fit(b)


def forward(model: DlibFaceNet, chips: np.ndarray) -> np.ndarray:
    return np.concatenate([model(chips[i:i + 1].astype(np.float32)).numpy() for i in range(len(chips))])


def representative(calib: np.ndarray, seed: int = 0) -> Callable[[], Iterator[list[np.ndarray]]]:
    """Calibration samples: the chips, their mirror images, and exposure-jittered copies.

    The jittered copies include saturated ones so the input range reaches exactly 0 and 255 and
    the uint8 input tensor maps raw pixels with scale 1 and zero point 0."""
    rng = np.random.default_rng(seed)

    def gen() -> Iterator[list[np.ndarray]]:
        for c in calib:
            yield [c[None].astype(np.float32)]
            yield [c[None, :, ::-1].astype(np.float32)]
        for k in range(40):
            c = calib[rng.integers(len(calib))].astype(np.float32)
            gain = 1.8 if k < 4 else rng.uniform(0.6, 1.3)
            shift = -80.0 if k < 4 else rng.uniform(-20, 20)
            yield [np.clip(c * gain + shift, 0, 255)[None].astype(np.float32)]

    return gen


def to_tflite(model: DlibFaceNet, kind: str, calib: Sequence[np.ndarray] | None = None) -> bytes:
    """kind: 'float32' (validation only) or 'int8' (full integer, uint8 input, float32 output)."""
    conv = tf.lite.TFLiteConverter.from_concrete_functions([model.__call__.get_concrete_function()], model)
    if kind == "int8":
        if calib is None:
            raise ValueError("int8 conversion needs calibration chips")
        # Float output costs one dequantize op and keeps the 128 values at full resolution.
        full_int8(conv, representative(np.asarray(calib)), tf.float32)
    elif kind != "float32":
        raise ValueError(kind)
    return bytes(conv.convert())
