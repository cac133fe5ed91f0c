"""frame -> list[Face]: the one place that chains detection, alignment, quality and embedding."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from edge_app.vision.align import ChipGeometry, align
from edge_app.vision.cascade import FaceCascade
from edge_app.vision.detector import Detection, FaceDetector
from edge_app.vision.embedder import Embedder
from edge_app.vision.eyes import EyeLandmarks
from edge_app.vision.liveness import LivenessChecker
from edge_app.vision.mask import MaskClassifier
from edge_app.vision.quality import Quality, QualityConfig, assess


@dataclass(frozen=True)
class Face:
    detection: Detection
    quality: Quality
    chip: np.ndarray = field(repr=False)
    embedding: np.ndarray | None = field(repr=False)  # None when the face was not embedded
    mask_probability: float | None = None  # None when the pipeline has no mask classifier
    masked: bool | None = None  # mask_probability >= the pipeline's mask threshold
    live_probability: float | None = None  # p(live) of the anti-spoofing check; None: not checked


@dataclass
class StageTimes:
    """Milliseconds spent per stage, accumulated over calls (for scripts/bench.py)."""

    detect: list[float] = field(default_factory=list)
    eyes: list[float] = field(default_factory=list)
    align: list[float] = field(default_factory=list)
    quality: list[float] = field(default_factory=list)
    mask: list[float] = field(default_factory=list)
    embed: list[float] = field(default_factory=list)
    liveness: list[float] = field(default_factory=list)
    total: list[float] = field(default_factory=list)


class Pipeline:
    def __init__(self, detector: FaceDetector | FaceCascade, embedder: Embedder, geometry: ChipGeometry,
                 quality: QualityConfig | None = None, eyes_only: bool = False,
                 embed_low_quality: bool = True, mask_classifier: MaskClassifier | None = None,
                 mask_threshold: float = 0.5, mask_geometry: ChipGeometry | None = None,
                 liveness: LivenessChecker | None = None, eyes: EyeLandmarks | None = None) -> None:
        if embedder.chip_size != geometry.size:
            raise ValueError(f"embedder takes {embedder.chip_size}px chips, geometry is {geometry.size}px")
        self.detector = detector
        self.embedder = embedder
        self.geometry = geometry
        self.quality = quality or QualityConfig()
        self.eyes_only = eyes_only
        # Enrolment and batch recognition want embeddings of every face; the door may skip
        # faces that fail the gates to save time.
        self.embed_low_quality = embed_low_quality
        self.mask_classifier = mask_classifier
        # The classifier's own chip framing (it was trained on one embedder's chips); None: the embedder's.
        same = mask_geometry is None or (mask_geometry.size == geometry.size
                                         and np.allclose(mask_geometry.template, geometry.template))
        self.mask_geometry = None if same else mask_geometry
        if not 0.0 < mask_threshold < 1.0:
            raise ValueError(f"mask threshold is a probability in (0, 1), got {mask_threshold}")
        self.mask_threshold = mask_threshold
        # Checked on the faces that are embedded (the ones that can vote), from the full frame's context.
        self.liveness = liveness
        # Eye centres for everything after detection (alignment, mask status, pose); None: BlazeFace's.
        self.eyes = eyes
        self.times: StageTimes | None = None

    def process(self, frame: np.ndarray, max_faces: int | None = None) -> list[Face]:
        """RGB uint8 frame (H, W, 3) -> faces, largest first."""
        t0 = time.perf_counter()
        detections = self.detector.detect(frame)
        t1 = time.perf_counter()
        detections.sort(key=lambda d: d.width * d.height, reverse=True)
        if max_faces is not None:
            detections = detections[:max_faces]
        faces = []
        t_eyes = t_align = t_quality = t_mask = t_embed = t_live = 0.0
        for det in detections:
            z = time.perf_counter()
            # From here on (mask status, alignment, pose, the Face) the eyes are the eye-landmark model's.
            if self.eyes is not None:
                det = Detection(det.box, det.score, self.eyes.refine(frame, det.keypoints))
            a = time.perf_counter()
            # The mask classifier was trained on eyes-aligned chips; a masked face is also embedded
            # from one, because its nose and mouth keypoints are guesses under the mask.
            p_mask = masked = None
            mask_chip = None
            if self.mask_classifier is not None:
                mask_chip = align(frame, det.keypoints, self.mask_geometry or self.geometry, eyes_only=True)
            b = time.perf_counter()
            if self.mask_classifier is not None and mask_chip is not None:
                p_mask = self.mask_classifier.probability(mask_chip)
                masked = p_mask >= self.mask_threshold
            c = time.perf_counter()
            # A masked face is embedded from an eyes-only chip too: the classifier's, when it has the
            # embedder's geometry, otherwise cut here (only when needed).
            if (self.eyes_only or masked) and mask_chip is not None and self.mask_geometry is None:
                chip = mask_chip
            else:
                chip = align(frame, det.keypoints, self.geometry, eyes_only=bool(self.eyes_only or masked))
            d = time.perf_counter()
            q = assess(chip, det.keypoints, self.quality, masked=bool(masked))
            e = time.perf_counter()
            use = q.passed or self.embed_low_quality
            emb = self.embedder.embed(chip, masked=bool(masked)) if use else None
            f = time.perf_counter()
            p_live = self.liveness.probability(frame, det.box) if (use and self.liveness is not None) else None
            g = time.perf_counter()
            t_eyes += a - z
            t_align += (b - a) + (d - c)
            t_mask += c - b
            t_quality += e - d
            t_embed += f - e
            t_live += g - f
            faces.append(Face(det, q, chip, emb, p_mask, masked, p_live))
        if self.times is not None:
            self.times.detect.append((t1 - t0) * 1e3)
            self.times.eyes.append(t_eyes * 1e3)
            self.times.align.append(t_align * 1e3)
            self.times.quality.append(t_quality * 1e3)
            self.times.mask.append(t_mask * 1e3)
            self.times.embed.append(t_embed * 1e3)
            self.times.liveness.append(t_live * 1e3)
            self.times.total.append((time.perf_counter() - t0) * 1e3)
        return faces
