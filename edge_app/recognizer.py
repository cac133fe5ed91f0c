"""Pipeline + gallery matcher: a frame in, named faces out. Shared by the CLI and the daemon."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_app.gallery.matcher import Match, Matcher
from edge_app.vision.pipeline import Face, Pipeline

# Cosine similarity above which the best gallery match is taken as that person. Provisional,
# from scripts/evaluate.py (README, "Accuracy"): above the max labelled-vs-stranger impostor (0.922),
# below the min genuine (0.946) on the small labelled set; the mask issue recalibrates it.
DEFAULT_THRESHOLD = 0.93


@dataclass(frozen=True)
class Recognition:
    face: Face
    match: Match | None  # best gallery match, whether or not it passed the threshold
    threshold: float

    @property
    def known(self) -> bool:
        return self.match is not None and self.match.score >= self.threshold and self.face.quality.passed

    @property
    def name(self) -> str:
        return self.match.name if self.known and self.match is not None else "unknown"

    @property
    def score(self) -> float | None:
        return None if self.match is None else self.match.score

    def as_dict(self) -> dict[str, object]:
        d = self.face.detection
        return {
            "name": self.name,
            "known": self.known,
            "person_id": self.match.person_id if self.known and self.match else None,
            "score": None if self.score is None else round(self.score, 4),
            "best_candidate": self.match.name if self.match else None,
            "mask": "n/a" if self.face.mask_probability is None else round(self.face.mask_probability, 3),
            "box": [round(v, 1) for v in d.box],
            "detection_score": round(d.score, 3),
            "quality": self.face.quality.as_dict(),
        }


class Recognizer:
    def __init__(self, pipeline: Pipeline, matcher: Matcher, threshold: float = DEFAULT_THRESHOLD) -> None:
        self.pipeline = pipeline
        self.matcher = matcher
        self.threshold = threshold

    def recognize(self, frame: np.ndarray, max_faces: int | None = None) -> list[Recognition]:
        faces = self.pipeline.process(frame, max_faces)
        out = []
        for face in faces:
            match = None
            if face.embedding is not None and self.matcher.n_templates:
                best = self.matcher.match(face.embedding, k=1)
                match = best[0] if best else None
            out.append(Recognition(face, match, self.threshold))
        return out
