"""Find the model files, check them against MANIFEST.json and build the vision pipeline.

The models ship inside the package (edge_app/models_tflite in a wheel, models_tflite/ in a
checkout); EDGE_APP_MODELS points elsewhere, e.g. at models compiled for a Coral.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.config import DEFAULT_EMBEDDER
from edge_app.errors import ModelError, ModelNotFoundError
from edge_app.vision.align import TEMPLATE_POINTS, ChipGeometry
from edge_app.vision.cascade import CascadeOptions, FaceCascade
from edge_app.vision.detector import FaceDetector
from edge_app.vision.embedder import Embedder, FaceEmbedder, FusedEmbedder
from edge_app.vision.eyes import EyeLandmarks
from edge_app.vision.liveness import LivenessChecker, LivenessNet
from edge_app.vision.mask import MaskClassifier
from edge_app.vision.pipeline import Pipeline
from edge_app.vision.quality import QualityConfig
from edge_app.vision.runtime import TFLiteModel

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
DETECTOR_KINDS = {"short": "face_detector", "full": "face_detector_full"}
MASK_CLASSIFIER = "mask_classifier"
EYE_LANDMARKS = "eye_landmarks"  # MediaPipe Iris: eye centres for alignment (vision/eyes.py)
# The anti-spoofing networks whose scores are averaged (scripts/modelbuild/minifasnet.py).
LIVENESS = ("liveness_v2", "liveness_v1se")
# Embedders by the name config and command line use -> the manifest entries they run. "sface+edgeface+reid" (the
# default, config.DEFAULT_EMBEDDER) runs EdgeFace-XS and Intel's face-reidentification-retail-0095 beside SFace on
# bare faces and averages the three scores; "sface+edgeface" (the default until 2026-12-02) the first two
# (vision/embedder.py FusedEmbedder); masked faces keep SFace alone. dlib's ResNet reaches about half SFace's
# rank-1 on East-Asian faces (docs/accuracy.md).
EMBEDDERS: dict[str, tuple[str, ...]] = {
    "sface": ("face_embedder",), "dlib": ("face_embedder_dlib",),
    "sface+edgeface": ("face_embedder", "face_embedder_edgeface"),
    "sface+edgeface+reid": ("face_embedder", "face_embedder_edgeface", "face_embedder_reid")}
# SFace's share of a bare face's fused score (the rest is EdgeFace-XS's). Bare walk-ups granted on real-masked-dev,
# pooled, each weight calibrated to the same stranger target: float32 EdgeFace 0.3 / 0.4 / 0.5 / 0.6: 24.9 / 29.0 /
# 27.4 / 27.6 %; the shipped int8-weight build 0.4 / 0.5: 27.2 / 28.1 % (0.4 also let 0.8 % of enrolled bare walk-ups
# in as somebody else at K=3) — a plateau from 0.4 to 0.6 (docs/accuracy.md). Part of the fused model's identity.
FUSION_WEIGHT = 0.5
MASKED_GALLERIES = ("plain", "plain+masked")
DEFAULT_CASCADE = CascadeOptions()


def fusion_weights(n_parts: int) -> tuple[float, ...]:
    """Each network's share of a fused score: SFace's FUSION_WEIGHT with one other network, equal shares with more
    (three: bare walk-ups granted K=3 49.7 -> 54.7 % at the same stranger target, docs/accuracy.md)."""
    if n_parts == 2:
        return FUSION_WEIGHT, 1.0 - FUSION_WEIGHT
    return (1.0 / n_parts,) * n_parts


def embedder_identity(shas: list[str]) -> str:
    """The sha templates and thresholds of an embedder made of these model files are filed under."""
    if len(shas) == 1:
        return shas[0]
    # Two networks keep the form their templates have been filed under since 2026-12-01.
    weights = str(FUSION_WEIGHT) if len(shas) == 2 else ",".join(f"{w:.6f}" for w in fusion_weights(len(shas)))
    return hashlib.sha256(f"fused:{'+'.join(shas)}:{weights}".encode()).hexdigest()


def embedder_identities(models: dict[str, Any]) -> dict[str, str]:
    """{identity: embedder name} of the embedders whose model files are all listed in a manifest's "models"."""
    return {embedder_identity([str(models[p]["sha256"]) for p in parts]): name
            for name, parts in EMBEDDERS.items() if all(p in models for p in parts)}


def read_manifest(directory: Path) -> dict[str, Any]:
    """A models folder's MANIFEST.json, checked to have its "models"; errors name the file."""
    path = directory / MANIFEST
    if not path.is_file():
        raise ModelNotFoundError(f"model manifest not found: {path} "
                                 "(set EDGE_APP_MODELS or run scripts/build_models.py)")
    try:
        manifest: dict[str, Any] = json.loads(path.read_text())
        _ = manifest["models"]  # a manifest without its models is not one
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ModelError(f"{path}: not a valid model manifest ({exc})") from exc
    return manifest


def entry_chip_geometry(entry: dict[str, Any], where: Path) -> ChipGeometry:
    """The aligned-chip geometry a manifest entry's input names (chip_size and chip_template)."""
    try:
        inp = entry["input"]
        template = np.array([inp["chip_template"][p] for p in TEMPLATE_POINTS], np.float64)
        return ChipGeometry(int(inp["chip_size"]), template)
    except (KeyError, ValueError) as exc:
        raise ModelError(f"{where}: bad chip template ({exc})") from exc


def embedder_for_gallery(directory: str | Path | None, template_counts: dict[str, int]) -> tuple[str, str | None]:
    """What "auto" means for a gallery whose templates per model sha are ``template_counts``: the default
    embedder, unless the gallery holds none of its templates and all of its templates belong to one other embedder
    of this model set (a gallery enrolled before the default changed): then that one, and a warning saying how to
    move to the default. Returns (embedder name, warning or None)."""
    if not template_counts:
        return DEFAULT_EMBEDDER, None
    owners = embedder_identities(read_manifest(Path(directory) if directory is not None else default_models_dir())
                                 ["models"])
    found = {owners.get(sha) for sha in template_counts}
    name = found.pop() if len(found) == 1 else None
    if name is None or name == DEFAULT_EMBEDDER:
        return DEFAULT_EMBEDDER, None
    return name, (f"the gallery's {sum(template_counts.values())} templates were made by the {name} embedder, so it "
                  f"is used (embedder = \"auto\"); the default {DEFAULT_EMBEDDER} grants more people: enrol everyone "
                  f"again with [recognition] embedder = \"{DEFAULT_EMBEDDER}\" to move to it, or set embedder = "
                  f"\"{name}\" to keep this one without this warning")


@dataclass(frozen=True)
class Thresholds:
    """Cosine thresholds of one embedder: plain probes against plain templates, masked probes
    against plain + synthetic-masked templates; both set for the same target false accept rate."""

    plain: float
    masked: float
    target_far: float
    embedder_sha256: str
    masked_gallery: str = "plain+masked"  # templates a masked probe meets: "plain" or "plain+masked"
    # The best person must beat the second best by this much: in a gallery of many people a stranger
    # is often close to several of them at once, an enrolled person to one.
    margin: float = 0.0
    masked_margin: float = 0.0


# Used only with a manifest that has no calibration (a hand-built model set): conservative values.
FALLBACK_THRESHOLDS = Thresholds(0.93, 0.93, 1e-3, "")


def default_models_dir() -> Path:
    env = os.environ.get("EDGE_APP_MODELS")
    if env:
        return Path(env)
    packaged = Path(__file__).resolve().parent / "models_tflite"
    if (packaged / MANIFEST).is_file():
        return packaged
    return Path(__file__).resolve().parents[1] / "models_tflite"  # source checkout


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: Path
    sha256: str
    entry: dict[str, Any]


class ModelSet:
    """The manifest of one models directory and the embedder chosen from it; every file is verified
    before it is loaded."""

    def __init__(self, directory: str | Path | None = None, embedder: str = DEFAULT_EMBEDDER) -> None:
        if embedder not in EMBEDDERS:
            raise ModelError(f"unknown embedder {embedder!r}; choose one of {sorted(EMBEDDERS)}")
        self.embedder = embedder
        self.embedder_parts = EMBEDDERS[embedder]
        # The key of the embedder's thresholds in the manifest's "recognition" (a fused one names both parts).
        self.embedder_entry = "+".join(self.embedder_parts)
        self.dir = Path(directory) if directory is not None else default_models_dir()
        manifest_path = self.dir / MANIFEST
        self.manifest = read_manifest(self.dir)
        self._entries: dict[str, dict[str, Any]] = self.manifest["models"]
        self._verified: dict[str, tuple[int, int]] = {}  # model name -> (size, mtime) when its sha256 last matched
        missing = [p for p in self.embedder_parts if p not in self._entries]
        if missing:
            raise ModelNotFoundError(f"{manifest_path}: no {embedder} embedder ({', '.join(map(repr, missing))}) in "
                                     f"this model set; it has {sorted(self._entries)}")

    def info(self, name: str, verify: bool = True) -> ModelInfo:
        entry = self._entries.get(name)
        if entry is None:
            raise ModelNotFoundError(f"{self.dir / MANIFEST}: no model named {name!r}")
        path = self.dir / entry["file"]
        if not path.is_file():
            raise ModelNotFoundError(f"model file not found: {path} (listed as {name!r} in {MANIFEST})")
        if verify:
            # Hashed once while the file stays as it was: a pipeline loads some models twice (the eyes' and the
            # fused embedder's one-thread copies), and 13 MB hashed again is start-up time on a Pi for nothing.
            st = path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
            if self._verified.get(name) != stamp:
                actual = file_sha256(path)
                if actual != entry["sha256"]:
                    raise ModelError(f"{path}: sha256 {actual[:12]}… does not match the manifest "
                                     f"({entry['sha256'][:12]}…); the file is corrupt or from another build")
                self._verified[name] = stamp
        return ModelInfo(name, path, entry["sha256"], entry)

    def load(self, name: str, num_threads: int = 2, delegate: str | None = None) -> TFLiteModel:
        info = self.info(name)
        try:
            return TFLiteModel(info.path, num_threads=num_threads, delegate=delegate)
        except (ValueError, OSError) as exc:
            raise ModelError(f"cannot load {info.path}: {exc}") from exc

    @property
    def embedder_sha(self) -> str:
        """The identity templates and thresholds are filed under: the model file's sha256, or for a fused
        embedder a sha256 of both files' and the fusion weight (a change to any of them makes new templates)."""
        return embedder_identity([str(self._entries[p]["sha256"]) for p in self.embedder_parts])

    @property
    def embedder_dim(self) -> int:
        """Length of the embedder's vectors (the sum of the parts' for a fused one)."""
        try:
            return sum(int(self._entries[p]["output"]["dim"]) for p in self.embedder_parts)
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{self.dir / MANIFEST}: no usable output.dim for {self.embedder_entry} ({exc})") from exc

    def chip_geometry(self, entry: str | None = None) -> ChipGeometry:
        """The aligned-chip geometry of the chosen embedder (or of another manifest entry that has one)."""
        return entry_chip_geometry(self._entries[entry or self.embedder_parts[0]], self.dir / MANIFEST)

    @property
    def has_mask_classifier(self) -> bool:
        return MASK_CLASSIFIER in self._entries

    @property
    def has_liveness(self) -> bool:
        return all(n in self._entries for n in LIVENESS)

    def liveness(self, num_threads: int = 1) -> LivenessChecker:
        """Both anti-spoofing networks with the crop scale each was trained on (manifest input.crop_scale)."""
        if not self.has_liveness:
            raise ModelNotFoundError(f"{self.dir / MANIFEST}: liveness needs {', '.join(LIVENESS)}; this model set "
                                     f"has {sorted(self._entries)} (run scripts/build_models.py --only liveness, or "
                                     "set [liveness] enabled = false)")
        nets = []
        for name in LIVENESS:
            try:
                scale = float(self._entries[name]["input"]["crop_scale"])
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelError(f"{self.dir / MANIFEST}: {name}: no usable input.crop_scale ({exc})") from exc
            try:
                nets.append(LivenessNet(self.load(name, num_threads), scale))
            except ValueError as exc:
                raise ModelError(str(exc)) from exc
        return LivenessChecker(nets)

    def thresholds(self) -> Thresholds:
        """The cosine thresholds calibrated for the chosen embedder (scripts/evaluate.py --masked --calibrate)."""
        rec = self.manifest.get("recognition", {}).get(self.embedder_entry)
        if rec is None:
            log.warning("%s has no calibrated thresholds for %s; using the built-in fallback", self.dir / MANIFEST,
                        self.embedder_entry)
            return FALLBACK_THRESHOLDS
        try:
            t = Thresholds(float(rec["threshold"]), float(rec["masked_threshold"]),
                           float(rec.get("target_far", 1e-3)), str(rec["embedder_sha256"]),
                           str(rec.get("masked_gallery", "plain+masked")), float(rec.get("margin", 0.0)),
                           float(rec.get("masked_margin", 0.0)))
            if t.masked_gallery not in MASKED_GALLERIES:
                raise ValueError(f"masked_gallery {t.masked_gallery!r} is not one of {MASKED_GALLERIES}")
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"{self.dir / MANIFEST}: bad 'recognition' thresholds ({exc})") from exc
        if t.embedder_sha256 != self.embedder_sha:
            raise ModelError(f"{self.dir / MANIFEST}: thresholds were calibrated for embedder "
                             f"{t.embedder_sha256[:12]}…, not {self.embedder_sha[:12]}…; recalibrate")
        return t

    def detector(self, kind: str = "short", num_threads: int = 2, min_score: float | None = None,
                 cascade: CascadeOptions | None = DEFAULT_CASCADE) -> FaceDetector | FaceCascade:
        """The face detector alone, as pipeline() builds it: with the short-range model, ``cascade`` adds the
        passes of vision/cascade.py (refinement of small faces, close-ups, the full-range model for small
        faces); None: one pass."""
        if kind not in DETECTOR_KINDS:
            raise ModelError(f"unknown detector {kind!r}; choose one of {sorted(DETECTOR_KINDS)}")
        try:
            first = FaceDetector(self.load(DETECTOR_KINDS[kind], num_threads), min_score=min_score)
            if kind != "short" or cascade is None:
                return first
            far = FaceDetector(self.load(DETECTOR_KINDS["full"], num_threads)) if cascade.small_faces else None
            return FaceCascade(first, far, cascade)
        except ValueError as exc:  # shape checks in vision/
            raise ModelError(str(exc)) from exc

    def pipeline(self, detector: str = "short", num_threads: int = 2, quality: QualityConfig | None = None,
                 eyes_only: bool = False, embed_low_quality: bool = True,
                 min_score: float | None = None, mask: bool = True, mask_threshold: float = 0.5,
                 cascade: CascadeOptions | None = DEFAULT_CASCADE, liveness: bool = False,
                 eyes: bool = True, embed_side_by_side: bool = True) -> Pipeline:
        """The vision pipeline; with ``mask`` (and a classifier in the manifest) faces get a mask status,
        with ``liveness`` a p(live) (ModelNotFoundError when the manifest lacks the networks), with ``eyes``
        (and an eye-landmark model in the manifest) eye centres from that model instead of the detector's.

        With the short-range detector, ``cascade`` adds the passes of vision/cascade.py (refinement of small
        faces, close-ups, the full-range model for small faces); None: one short-range pass, as before.
        ``embed_side_by_side`` (with 2+ threads and a fused embedder): a bare face's two networks at the same time
        on one-thread interpreters (same embeddings, 0.6-1.3 ms sooner per face on 2 cores, docs/speed.md); False: in
        turn, as before (for comparisons)."""
        det = self.detector(detector, num_threads, min_score, cascade)
        try:
            first = FaceEmbedder(self.load(self.embedder_parts[0], num_threads))
            emb: Embedder = first
            if len(self.embedder_parts) >= 2:
                # One-thread copies for bare faces, side by side; the masked face's lone first network keeps its
                # threads. The copies cost memory (XNNPACK's packed weights, ~40 MB for SFace and EdgeFace):
                # threads = 1 goes without. Side by side, the other networks run only as copies, so they are
                # loaded once, as those.
                parallel = embed_side_by_side and num_threads >= 2
                others = [FaceEmbedder(self.load(p, 1 if parallel else num_threads)) for p in self.embedder_parts[1:]]
                copies = (FaceEmbedder(self.load(self.embedder_parts[0], 1)), *others) if parallel else None
                emb = FusedEmbedder([first, *others], fusion_weights(len(self.embedder_parts)), side_by_side=copies)
            clf = None
            mask_geometry = None
            if mask and self.has_mask_classifier:
                # One thread: the model is tiny and a second thread costs more than it saves.
                clf = MaskClassifier(self.load(MASK_CLASSIFIER, 1))
                if "chip_template" in self._entries[MASK_CLASSIFIER]["input"]:
                    mask_geometry = self.chip_geometry(MASK_CLASSIFIER)
            elif mask:
                log.warning("%s lists no %s: faces get no mask status", self.dir / MANIFEST, MASK_CLASSIFIER)
            # One thread each, like the mask classifier: 80x80 inputs gain nothing from a second.
            live = self.liveness(1) if liveness else None
            eye_model = None
            if eyes and EYE_LANDMARKS in self._entries:
                # With two threads to spend: two one-thread interpreters, the eyes side by side (faster than
                # one interpreter of two threads in the pipeline, 3.8 -> 3.3 ms per face).
                side = self.load(EYE_LANDMARKS, 1) if num_threads >= 2 else None
                eye_model = EyeLandmarks(self.load(EYE_LANDMARKS, 1), side_model=side)
            elif eyes:
                log.warning("%s lists no %s: faces are aligned on the detector's eye points", self.dir / MANIFEST,
                            EYE_LANDMARKS)
            return Pipeline(det, emb, self.chip_geometry(), quality, eyes_only, embed_low_quality, clf,
                            mask_threshold, mask_geometry, live, eye_model)
        except ValueError as exc:  # shape checks in vision/
            raise ModelError(str(exc)) from exc
