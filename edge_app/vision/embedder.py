"""Face chip -> L2-normalised embedding: one network (SFace, dlib's ResNet), or several fused for bare faces."""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import partial
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
    """Two or more networks on the same chip, fused so that a plain cosine of two fused vectors is the weighted
    mean of the networks' cosines, ``sum(w_i * cos_i)``: the unit embeddings are concatenated, each scaled by
    sqrt(w_i).

    A masked face gets the first network's embedding alone, zeros in the others' place (and they are not run): on
    real masked faces the other networks (EdgeFace-XS, Intel's face-reidentification-retail-0095) made the fused score
    worse, on bare faces better (docs/accuracy.md). Masked faces are matched on the first ``primary_dim`` components
    of the templates (gallery.Matcher.prefix): made unit again, they are the first network's embedding whatever the
    template.

    With ``side_by_side`` (one-thread interpreters of the same models) a bare face runs all networks at the same time,
    the first on the caller's thread and each other one on a worker thread ("embed_N"): on 2 cores 7.5 against 9.5 ms
    for two networks in turn on two threads each (docs/speed.md). A masked face runs the first network alone on
    ``nets[0]``'s threads."""

    def __init__(self, nets: Sequence[FaceEmbedder], weights: Sequence[float],
                 side_by_side: Sequence[FaceEmbedder] | None = None) -> None:
        nets, weights = tuple(nets), tuple(float(w) for w in weights)
        if len(nets) < 2 or len(weights) != len(nets):
            raise ValueError(f"fusion takes two or more networks and a weight each, got {len(nets)} networks and "
                             f"{len(weights)} weights")
        if len({n.chip_size for n in nets}) != 1:
            raise ValueError(f"fused embedders take chips of one size, got {[n.chip_size for n in nets]}")
        if not all(0.0 < w < 1.0 for w in weights) or abs(sum(weights) - 1.0) > 1e-9:
            raise ValueError(f"fusion weights must be in (0, 1) and sum to 1, got {list(weights)}")
        if side_by_side is not None and (len(side_by_side) != len(nets) or any(
                (x.model.path.resolve(), x.dim) != (y.model.path.resolve(), y.dim)
                for x, y in zip(nets, side_by_side, strict=False))):
            raise ValueError("side_by_side must be other interpreters of the same models, in the same order")
        self.nets, self.weights = nets, weights
        self.chip_size = nets[0].chip_size
        self.dim = sum(n.dim for n in nets)
        self.primary_dim = nets[0].dim
        self._scale = [math.sqrt(w) for w in weights]
        self._copies = tuple(side_by_side) if side_by_side is not None else None
        self._side = SideBySide("embed", len(nets) - 1)  # its threads start on first use, so only with side_by_side

    @property
    def parallel(self) -> bool:
        """A bare face's networks run side by side."""
        return self._copies is not None

    def embed(self, chip: np.ndarray, masked: bool = False) -> np.ndarray:
        if masked:
            return np.concatenate([self.nets[0].embed(chip), np.zeros(self.dim - self.primary_dim, np.float32)])
        if self._copies is None:
            parts = [n.embed(chip) for n in self.nets]
        else:
            first, *others = self._copies
            parts = self._side.run(lambda: first.embed(chip), *(partial(n.embed, chip) for n in others))
        return np.concatenate([s * p for s, p in zip(self._scale, parts, strict=True)]).astype(np.float32)
