"""Full-integer TFLite conversion settings shared by the build scripts (dlib ResNet, SFace trial,
mask classifier): int8 weights and activations, raw uint8 pixels in."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np


def samples(chips: Iterable[np.ndarray]) -> Callable[[], Iterator[list[np.ndarray]]]:
    """A representative dataset: each chip once, as a float32 batch of one."""
    def gen() -> Iterator[list[np.ndarray]]:
        for c in chips:
            yield [c[None].astype(np.float32)]

    return gen


def full_int8(conv: Any, dataset: Callable[[], Iterator[list[np.ndarray]]], output_type: Any) -> None:
    """Configure a tf.lite.TFLiteConverter for full integer quantization with uint8 input."""
    import tensorflow as tf

    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = dataset
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.uint8
    conv.inference_output_type = output_type
