"""TFLite conversion settings shared by the build scripts (dlib ResNet, SFace, MiniFASNet, EdgeFace, mask classifier):
full int8 (int8 weights and activations, raw uint8 pixels in), ONNX -> SavedModel by onnx2tf, and SavedModel ->
TFLite at a chosen precision."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
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


def saved_model_to_tflite(saved_model: Any, precision: str, calib: Iterable[np.ndarray] | None = None) -> bytes:
    """A SavedModel (from onnx2tf) as TFLite. precision: "float32", "fp16" (fp16 weights), "dynamic" (int8
    weights, float activations) or "int8" (full, uint8 input, float output, calibrated on ``calib``)."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_saved_model(str(saved_model))
    if precision == "fp16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif precision == "int8":
        if calib is None:
            raise ValueError("int8 needs calibration images")
        full_int8(conv, samples(calib), tf.float32)
    elif precision != "float32":
        raise ValueError(f"unknown precision {precision!r}")
    return bytes(conv.convert())


def onnx_to_saved_model(onnx_path: Path, images: np.ndarray, work: Path, *flags: str) -> Path:
    """onnx2tf in `work`, with its extra ``flags`` (e.g. -kat input: keep our NHWC input as it is). onnx2tf wants a
    calibration sample in `work` or downloads one, and this machine reaches package registries only: 20 of
    ``images`` (repeated if fewer) at 128 px, pixel/255, under the name it looks for."""
    import cv2

    twenty = np.resize(images, (20, *images.shape[1:]))
    sample = np.stack([cv2.resize(c, (128, 128)) for c in twenty]).astype(np.float32) / 255.0
    np.save(work / "calibration_image_sample_data_20x128x128x3_float32.npy", sample)
    out = work / (onnx_path.stem + "_saved_model")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-m", "onnx2tf", "-i", str(onnx_path), "-o", str(out), "-b", "1", "-n", *flags],
                   check=True, cwd=work, env=env, stdout=subprocess.DEVNULL)
    return out
