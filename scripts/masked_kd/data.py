"""Training material for the masked student: unlabelled face photos -> (plain chip, masked chips).

Sources (never the RMFRD people the product is judged on, nor the 63 of real-masked-dev):
  - masks-chandrikadeb7/dataset/without_mask, less every file named like RMFRD's AFDB photos
    (<n>_<n>_<pinyin name>_<nnnn>.jpg): those are RMFRD people, and the held-apart judges are RMFRD
    people too;
  - faces-dev;
  - optional extra folders given on the command line (e.g. an LFW subset; docs/masked_kd.md).

For every photo with a face: the plain chip exactly as the pipeline cuts it for an unmasked face
(the teacher's target comes from it), and VARIANTS student inputs: the photo with a synthetic mask
(random kind, colour, height), degraded like a small web photo, detected again and aligned on the
eyes as the pipeline does for a masked face; plus one degraded bare face aligned on all points.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_app.enrol import redetect
from edge_app.vision.align import align
from edge_app.vision.pipeline import Pipeline
from edge_app.vision.synth_mask import draw_mask, random_style
from scripts.common import RMFRD_NAME, image_files
from scripts.modelbuild.faces import read_rgb


def training_files(data: Path, extra: list[Path]) -> list[tuple[Path, str]]:
    """(photo, source name) of every training photo, sorted within a source."""
    dev_people = {p.name.lower() for p in (data / "real-masked-dev").iterdir() if p.is_dir()}
    out = []
    for f in image_files(data / "masks-chandrikadeb7" / "dataset" / "without_mask"):
        low = f.name.lower()
        if RMFRD_NAME.match(f.name) or any(name in low for name in dev_people):
            continue
        out.append((f, "chandrikadeb7/without_mask"))
    out += [(f, "faces-dev") for f in image_files(data / "faces-dev")]
    for folder in extra:
        out += [(f, folder.name) for f in sorted(folder.rglob("*")) if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    return out


def degrade(img: np.ndarray, face_width: float, rng: np.random.Generator) -> np.ndarray:
    """The look of a small web photo: the face brought to 40-110 px wide and back, colour jitter,
    sometimes blur, JPEG quality 30-90."""
    h, w = img.shape[:2]
    s = min(1.0, float(rng.uniform(40, 110)) / max(face_width, 1.0))
    small = cv2.resize(img, (max(8, round(w * s)), max(8, round(h * s))), interpolation=cv2.INTER_AREA)
    f = small.astype(np.float32)
    f = (f - 128.0) * rng.uniform(0.75, 1.25) + 128.0 + rng.uniform(-25, 25)
    grey = f.mean(2, keepdims=True)
    f = grey + (f - grey) * rng.uniform(0.6, 1.3)
    small = np.clip(f, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        small = cv2.GaussianBlur(small, (0, 0), float(rng.uniform(0.3, 1.0)))
    _, buf = cv2.imencode(".jpg", small[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(30, 91))])
    small = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) if s < 1.0 else np.ascontiguousarray(small)


@dataclass
class ChipData:
    plain: np.ndarray  # (n, S, S, 3) uint8: the teacher's inputs
    student: np.ndarray  # (m, S, S, 3) uint8: the student's inputs
    photo: np.ndarray  # (m,) index into plain of each student chip
    masked: np.ndarray  # (m,) bool: a synthetic mask was drawn
    sources: list[str]  # per plain chip

    def save(self, path: Path) -> None:
        np.savez(path, plain=self.plain, student=self.student, photo=self.photo, masked=self.masked,
                 sources=np.array(self.sources))

    @staticmethod
    def load(path: Path) -> ChipData:
        z = np.load(path)
        return ChipData(z["plain"], z["student"], z["photo"], z["masked"], [str(s) for s in z["sources"]])


def photo_rng(path: Path, seed: int) -> np.random.Generator:
    return np.random.default_rng([int.from_bytes(hashlib.sha256(path.name.encode()).digest()[:4], "little"), seed])


def make_chips(pipeline: Pipeline, files: list[tuple[Path, str]], variants: int, seed: int) -> ChipData:
    geometry = pipeline.geometry
    plain, student, photo, masked, sources = [], [], [], [], []
    for path, source in files:
        rgb = read_rgb(path)
        if rgb is None:
            continue
        found = pipeline.detector.detect(rgb)
        if not found:
            continue
        det = max(found, key=lambda d: d.width * d.height)
        kps = np.asarray(det.keypoints, np.float64)
        rng = photo_rng(path, seed)
        chips, kinds = [], []
        for v in range(variants + 1):
            is_masked = v < variants
            img = draw_mask(rgb, kps, random_style(rng), rng) if is_masked else rgb
            img = degrade(img, det.width, rng)
            use = redetect(pipeline, img, kps)
            if use is None:  # the door would not see this face either
                continue
            chips.append(align(img, use, geometry, eyes_only=is_masked))
            kinds.append(is_masked)
        if not any(kinds):
            continue
        idx = len(plain)
        plain.append(align(rgb, kps, geometry, eyes_only=False))
        sources.append(source)
        student += chips
        photo += [idx] * len(chips)
        masked += kinds
    size = geometry.size
    return ChipData(np.array(plain, np.uint8).reshape(-1, size, size, 3), np.array(student, np.uint8).reshape(
        -1, size, size, 3), np.array(photo, np.int64), np.array(masked, bool), sources)
