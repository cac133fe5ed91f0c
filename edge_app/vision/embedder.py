"""Face chip -> L2-normalised embedding: one network (SFace, dlib's ResNet), or two fused for bare faces."""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from edge_app.vision.runtime import SideBySide, TFLiteModel


class Embedder(Protocol):
    """What the pipeline and enrolment need of an embedder."""

    chip_size: int
    dim: int  # length of embed()'s vector
    primary_dim: int  # its first primary_dim components are the first network's own unit embedding (masked faces)

    def embed(self, chip: np.ndarray, masked: bool = False) -> np.ndarray: ...


def l2_normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.asarray(x / np.maximum(n, 1e-12), np.float32)


def first_part(x: np.ndarray, dim: int) -> np.ndarray:
    """The first ``dim`` components of each embedding (last axis), made unit again (dtype kept): a fused embedder's
    first network's embedding, on which its masked faces are matched (FusedEmbedder, gallery.Matcher.prefix)."""
    h = np.asarray(x)[..., :dim]
    return np.asarray(h / np.maximum(np.linalg.norm(h, axis=-1, keepdims=True), 1e-12))


class FaceEmbedder:
    def __init__(self, model: TFLiteModel) -> None:
        shape = model.input.shape
        if len(shape) != 4 or shape[0] != 1 or shape[1] != shape[2] or shape[3] != 3:
            raise ValueError(f"{model.path.name}: not a face-chip input shape: {shape}")
        self.model = model
        self.chip_size = shape[1]
        self.dim = int(model.outputs[0].shape[-1])
        self.primary_dim = self.dim

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

    def embed(self, chip: np.ndarray, masked: bool = False) -> np.ndarray:
        """One chip -> (dim,) unit vector (``masked`` changes nothing for one network)."""
        return l2_normalize(self.model.run(self._input(chip))[0][0])


class FusedEmbedder:
    """Two networks on the same chip, fused so that a plain cosine of two fused vectors is
    ``weight * cos(first) + (1 - weight) * cos(second)``: the unit embeddings are concatenated, scaled by
    sqrt(weight) and sqrt(1 - weight).

    A masked face gets the first network's embedding alone, zeros in the second's place (and the second
    network is not run): on real masked faces the second network (EdgeFace-XS) made the fused score worse,
    on bare faces better (docs/accuracy.md). Masked faces are matched on the first ``primary_dim``
    components of the templates (gallery.Matcher.prefix): made unit again, they are the first network's
    embedding whatever the template.

    With ``side_by_side`` (one-thread interpreters of the same two models) a bare face runs both networks at the
    same time, the second on a worker thread ("embed_0"): on 2 cores 7.5 against 9.5 ms for the two in turn on
    two threads each (docs/speed.md). A masked face runs the first network alone on ``first``'s threads."""

    def __init__(self, first: FaceEmbedder, second: FaceEmbedder, weight: float,
                 side_by_side: tuple[FaceEmbedder, FaceEmbedder] | None = None) -> None:
        if first.chip_size != second.chip_size:
            raise ValueError(f"fused embedders take chips of one size, got {first.chip_size} and {second.chip_size}")
        if not 0.0 < weight < 1.0:
            raise ValueError(f"fusion weight must be in (0, 1), got {weight}")
        if side_by_side is not None and any(
                (x.model.path.resolve(), x.dim) != (y.model.path.resolve(), y.dim)
                for x, y in zip((first, second), side_by_side, strict=True)):
            raise ValueError("side_by_side must be other interpreters of the same two models, in the same order")
        self.first, self.second, self.weight = first, second, weight
        self.chip_size = first.chip_size
        self.dim = first.dim + second.dim
        self.primary_dim = first.dim
        self._a, self._b = math.sqrt(weight), math.sqrt(1.0 - weight)
        self._pair = side_by_side
        self._side = SideBySide("embed", 1)  # its thread starts on first use, so only with side_by_side

    @property
    def parallel(self) -> bool:
        """A bare face's two networks run side by side."""
        return self._pair is not None

    def embed(self, chip: np.ndarray, masked: bool = False) -> np.ndarray:
        if masked:
            return np.concatenate([self.first.embed(chip), np.zeros(self.second.dim, np.float32)])
        if self._pair is None:
            a, b = self.first.embed(chip), self.second.embed(chip)
        else:
            one, two = self._pair
            a, b = self._side.run(lambda: one.embed(chip), lambda: two.embed(chip))
        return np.concatenate([self._a * a, self._b * b]).astype(np.float32)
