"""Mask status: the probability that a face mask covers the nose and mouth.

Runs on the eyes-aligned embedder chip (eyes only, because a mask hides the nose and mouth and
their keypoints drift), shrunk to the classifier's input size. The model is ours
(scripts/train_mask.py), full int8 with raw uint8 pixels in.
"""

from __future__ import annotations

import cv2
import numpy as np

from edge_app.vision.runtime import TFLiteModel


class MaskClassifier:
    def __init__(self, model: TFLiteModel) -> None:
        shape = model.input.shape
        if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3:
            raise ValueError(f"{model.path.name}: not an image input shape: {shape}")
        if len(model.outputs) != 1 or int(np.prod(model.outputs[0].shape)) != 1:
            raise ValueError(f"{model.path.name}: expected one scalar output (p_mask), "
                             f"got {[o.shape for o in model.outputs]}")
        self.model = model
        self.size = shape[1]

    def _input(self, chip: np.ndarray) -> np.ndarray:
        if chip.ndim != 3 or chip.shape[2] != 3 or chip.dtype != np.uint8:
            raise ValueError(f"chip must be uint8 (H, W, 3), got {chip.dtype} {chip.shape}")
        x = chip if chip.shape[:2] == (self.size, self.size) else cv2.resize(
            chip, (self.size, self.size), interpolation=cv2.INTER_AREA)
        spec = self.model.input
        if spec.dtype == np.float32:
            return x.astype(np.float32)[None]
        if spec.quantized and (spec.scale != 1.0 or spec.zero_point != 0):
            q = np.round(x.astype(np.float32) / spec.scale + spec.zero_point)
            return np.clip(q, 0, 255).astype(np.uint8)[None]
        return np.ascontiguousarray(x)[None]

    def probability(self, chip: np.ndarray) -> float:
        """Aligned RGB uint8 chip -> p(mask) in [0, 1]."""
        p = float(self.model.run(self._input(chip))[0].reshape(-1)[0])
        return min(1.0, max(0.0, p))
