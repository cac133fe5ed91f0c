"""Pipeline + gallery matcher: a frame in, named faces out. Shared by the CLI and the daemon.

Mask-aware matching: an unmasked face is compared with the plain templates only and accepted at
``threshold``; a masked face (mask classifier p >= the pipeline's mask threshold) is accepted at
``masked_threshold`` and compared with the plain templates, plus the synthetic-masked ones when
``masked_gallery`` says so. All three are calibrated per embedder for the same false accept rate
(MANIFEST.json "recognition", README "Accuracy").
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

import numpy as np

from edge_app.config import LivenessConfig
from edge_app.gallery.matcher import Match, Matcher
from edge_app.models import MASKED_GALLERIES, Thresholds
from edge_app.vision.pipeline import Face, Pipeline

LIVE_THRESHOLD = LivenessConfig().threshold


class Reason(enum.Enum):
    """Why a face was or was not accepted; stored with every door event."""

    MATCH = "match"
    UNKNOWN = "unknown"  # best score below the threshold, or an empty gallery
    LOW_QUALITY = "low_quality"  # failed a quality gate: never matched
    NO_MASK = "no_mask"  # recognised, but require_mask is on and no mask is worn
    SPOOF = "spoof"  # recognised, but judged not live (a photo or screen); only when liveness is checked


@dataclass(frozen=True)
class RecognitionPolicy:
    threshold: float
    masked_threshold: float
    require_mask: bool = False
    masked_gallery: str = "plain+masked"  # which templates a masked probe is compared with
    margin: float = 0.0  # best person minus second-best person, at least (unmasked probes)
    masked_margin: float = 0.0  # the same for masked probes
    live_threshold: float = LIVE_THRESHOLD  # p(live) at which a checked face counts as live
    # Whether one frame's liveness verdict decides (reason SPOOF). The door decides liveness over its vote
    # window instead (access/tracker.py), and a photo file is never live, so `recognize` only reports it
    # unless asked (--require-live).
    require_live: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.live_threshold < 1.0:
            raise ValueError(f"live_threshold is a probability in (0, 1), got {self.live_threshold}")
        for name in ("threshold", "masked_threshold"):
            v = getattr(self, name)
            if not -1.0 <= v <= 1.0:
                raise ValueError(f"{name} is a cosine in [-1, 1], got {v}")
        for name in ("margin", "masked_margin"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"{name} is a cosine difference in [0, 1], got {v}")
        if self.masked_gallery not in MASKED_GALLERIES:
            raise ValueError(f"masked_gallery must be one of {MASKED_GALLERIES}, got {self.masked_gallery!r}")

    @classmethod
    def from_thresholds(cls, t: Thresholds, require_mask: bool = False, live_threshold: float = LIVE_THRESHOLD
                        ) -> RecognitionPolicy:
        return cls(t.plain, t.masked, require_mask, t.masked_gallery, t.margin, t.masked_margin, live_threshold)


@dataclass(frozen=True)
class Recognition:
    face: Face
    match: Match | None  # best gallery match, whether or not it passed the threshold
    threshold: float  # the one that applied: plain or masked
    require_mask: bool = False
    runner_up: float | None = None  # score of the second-best person (None: fewer than two persons)
    margin: float = 0.0  # the margin that applied: plain or masked
    live_threshold: float = LIVE_THRESHOLD
    require_live: bool = False

    @property
    def masked(self) -> bool:
        return bool(self.face.masked)

    @property
    def known(self) -> bool:
        """The face is this gallery person (identity only; see ``granted`` for require_mask)."""
        return (self.match is not None and self.match.score >= self.threshold and self.face.quality.passed
                and self.clear_winner)

    @property
    def clear_winner(self) -> bool:
        """The best person beats the second best by the margin (a face close to two people is nobody)."""
        if self.match is None or self.runner_up is None:
            return True
        return self.match.score - self.runner_up >= self.margin

    @property
    def live(self) -> bool | None:
        """This frame's liveness verdict; None when the face was not checked."""
        p = self.face.live_probability
        return None if p is None else p >= self.live_threshold

    @property
    def reason(self) -> Reason:
        if not self.face.quality.passed:
            return Reason.LOW_QUALITY
        if not self.known:
            return Reason.UNKNOWN
        if self.require_live and self.live is False:
            return Reason.SPOOF
        if self.require_mask and not self.masked:
            return Reason.NO_MASK
        return Reason.MATCH

    @property
    def granted(self) -> bool:
        return self.reason is Reason.MATCH

    @property
    def name(self) -> str:
        return self.match.name if self.known and self.match is not None else "unknown"

    @property
    def score(self) -> float | None:
        return None if self.match is None else self.match.score

    @property
    def mask_text(self) -> str:
        p = self.face.mask_probability
        if p is None:
            return "n/a"
        return f"{'yes' if self.masked else 'no'}({p:.2f})"

    @property
    def live_text(self) -> str:
        p = self.face.live_probability
        return "n/a" if p is None else f"{'yes' if self.live else 'no'}({p:.2f})"

    def as_dict(self) -> dict[str, object]:
        d = self.face.detection
        p = self.face.mask_probability
        pl = self.face.live_probability
        return {
            "name": self.name,
            "known": self.known,
            "granted": self.granted,
            "reason": self.reason.value,
            "person_id": self.match.person_id if self.known and self.match else None,
            "score": None if self.score is None else round(self.score, 4),
            "threshold": round(self.threshold, 4),
            "runner_up_score": None if self.runner_up is None else round(self.runner_up, 4),
            "margin": round(self.margin, 4),
            "best_candidate": self.match.name if self.match else None,
            "matched_masked_template": self.match.masked_template if self.match else None,
            "mask": None if p is None else {"worn": self.masked, "probability": round(p, 3)},
            "live": None if pl is None else {"live": self.live, "probability": round(pl, 4),
                                             "threshold": self.live_threshold},
            "box": [round(v, 1) for v in d.box],
            "detection_score": round(d.score, 3),
            "quality": self.face.quality.as_dict(),
        }


class Recognizer:
    def __init__(self, pipeline: Pipeline, matcher: Matcher, policy: RecognitionPolicy | float) -> None:
        self.pipeline = pipeline
        self.matcher = matcher
        # A bare number means one threshold for both (scripts and tests written before masks).
        self.policy = policy if isinstance(policy, RecognitionPolicy) else RecognitionPolicy(policy, policy)

    def match_face(self, face: Face) -> Recognition:
        masked = bool(face.masked)
        threshold = self.policy.masked_threshold if masked else self.policy.threshold
        margin = self.policy.masked_margin if masked else self.policy.margin
        match = runner_up = None
        if face.embedding is not None and self.matcher.n_templates:
            # Plain probes never see masked templates: those only exist to catch masked probes, and
            # comparing a bare face with them would raise the impostor scores the threshold is set for.
            # Masked probes meet them when calibration found that they help (MANIFEST "masked_gallery").
            all_templates = masked and self.policy.masked_gallery == "plain+masked"
            matcher, emb = self.matcher, face.embedding
            if masked:  # a fused embedder's masked face is its first network's embedding alone (vision/embedder.py)
                d = self.pipeline.embedder.primary_dim
                matcher, emb = matcher.prefix(d), emb[:d]
            best = matcher.match(emb, k=2, use_masked=None if all_templates else False)
            match = best[0] if best else None
            runner_up = best[1].score if len(best) > 1 else None
        return Recognition(face, match, threshold, self.policy.require_mask, runner_up, margin,
                           self.policy.live_threshold, self.policy.require_live)

    def recognize(self, frame: np.ndarray, max_faces: int | None = None) -> list[Recognition]:
        return [self.match_face(face) for face in self.pipeline.process(frame, max_faces)]
