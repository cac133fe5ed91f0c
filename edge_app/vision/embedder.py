"""Face chip -> L2-normalised 128-d embedding (dlib's ResNet, converted to TFLite)."""

from __future__ import annotations

import numpy as np

from edge_app.vision.runtime import TFLiteModel


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(n, 1e-12), np.float32)


class FaceEmbedder:
    def __init__(self, model: TFLiteModel) -> None:
        shape = model.input.shape
        if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3:
            raise ValueError(f"{model.path.name}: not a face-chip input shape: {shape}")
        self.model = model
        self.chip_size = shape[1]
        self.dim = int(model.outputs[0].shape[-1])

    def _input(self, chip: np.ndarray) -> np.ndarray:
        if chip.shape != (self.chip_size, self.chip_size, 3) or chip.dtype != np.uint8:
            raise ValueError(f"chip must be uint8 ({self.chip_size}, {self.chip_size}, 3), "
                             f"got {chip.dtype} {chip.shape}")
        spec = self.model.input
        if spec.dtype == np.uint8 and spec.quantized and (spec.scale != 1.0 or spec.zero_point != 0):
            # Calibration normally gives scale 1 / zero point 0 (raw pixels); requantize otherwise.
            q = np.round(chip.astype(np.float32) / spec.scale + spec.zero_point)
            return np.clip(q, 0, 255).astype(np.uint8)[None]
        if spec.dtype == np.float32:
            return chip.astype(np.float32)[None]
        return chip[None]

    def embed(self, chip: np.ndarray) -> np.ndarray:
        """One chip -> (dim,) unit vector."""
        return l2_normalize(self.model.run(self._input(chip))[0][0])
