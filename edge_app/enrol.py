"""Photos -> enrolment templates. Shared by `edge-app enroll` and (later) `edge-admin`.

A photo is accepted only when it holds exactly one face that passes the quality gates: a
template from a blurred, tiny or turned face would make every later match of that person worse.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from edge_app.errors import EdgeAppError, InputNotFoundError
from edge_app.imageio import IMAGE_EXTS, decode_image, read_image_file
from edge_app.vision.align import align
from edge_app.vision.pipeline import Face, Pipeline
from edge_app.vision.synth_mask import draw_mask, random_style

if TYPE_CHECKING:
    from edge_app.gallery.store import Gallery


class PhotoStatus(enum.Enum):
    OK = "ok"
    UNREADABLE = "unreadable"
    NO_FACE = "no_face"
    MULTIPLE_FACES = "multiple_faces"
    LOW_QUALITY = "low_quality"


@dataclass(frozen=True)
class PhotoResult:
    path: Path
    status: PhotoStatus
    detail: str
    face: Face | None = None
    masked_embeddings: tuple[np.ndarray, ...] = ()  # synthetic-masked templates of the face

    @property
    def embedding(self) -> np.ndarray | None:
        return None if self.face is None else self.face.embedding


def expand_photos(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders expanded to their images (sorted). Missing paths are an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise InputNotFoundError(f"no such file or folder: {p}")
        if p.is_dir():
            out.extend(sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_EXTS))
        else:
            out.append(p)
    return out


def subfolders(folder: Path) -> list[Path]:
    """The sub-folders of a folder input (sorted): not read unless asked, and reported as skipped."""
    return sorted(p for p in folder.iterdir() if p.is_dir())


def embed_photo(pipeline: Pipeline, path: Path, n_masked: int = 0) -> PhotoResult:
    """One enrolment photo -> its face and, when ``n_masked`` > 0, that many synthetic-masked templates."""
    try:
        data = read_image_file(path)  # read once: decoded and hashed for the masks' seed
    except EdgeAppError as exc:
        return PhotoResult(path, PhotoStatus.UNREADABLE, str(exc))
    return embed_photo_bytes(pipeline, data, n_masked, str(path))


def embed_photo_bytes(pipeline: Pipeline, data: bytes, n_masked: int = 0, name: str = "photo") -> PhotoResult:
    """The same for an encoded image received over the network."""
    try:
        rgb = decode_image(data, name)
    except EdgeAppError as exc:
        return PhotoResult(Path(name), PhotoStatus.UNREADABLE, str(exc))
    return embed_rgb(pipeline, rgb, Path(name), n_masked, photo_seed(data))


def embed_rgb(pipeline: Pipeline, rgb: np.ndarray, path: Path, n_masked: int, seed: int,
              faces: Sequence[Face] | None = None) -> PhotoResult:
    """``faces``: what ``pipeline.process(rgb)`` already gave (a camera frame the caller has looked at)."""
    faces = pipeline.process(rgb) if faces is None else faces
    if not faces:
        return PhotoResult(path, PhotoStatus.NO_FACE, "no face found")
    if len(faces) > 1:
        return PhotoResult(path, PhotoStatus.MULTIPLE_FACES,
                           f"{len(faces)} faces found; an enrolment photo must show one person")
    face = faces[0]
    if not face.quality.passed:
        return PhotoResult(path, PhotoStatus.LOW_QUALITY,
                           "face fails quality gates: " + ", ".join(face.quality.reasons), face)
    masked: tuple[np.ndarray, ...] = ()
    if n_masked:
        if face.masked:
            # A photo of someone already wearing a mask gives masked templates on its own.
            return PhotoResult(path, PhotoStatus.OK, "ok (photo shows a mask)", face)
        masked = tuple(masked_embeddings(pipeline, rgb, face.detection.keypoints, n_masked, seed))
    return PhotoResult(path, PhotoStatus.OK, "ok", face, masked)


def templates_of(r: PhotoResult) -> tuple[np.ndarray | None, list[np.ndarray]]:
    """An accepted photo's templates as every enrolment path files them: a photo that shows a mask gives one
    masked template and no bare one; any other its bare template plus its synthetic-masked ones."""
    if r.embedding is None:
        return None, []
    if r.face is not None and r.face.masked:
        return None, [r.embedding]
    return r.embedding, list(r.masked_embeddings)


@dataclass(frozen=True)
class PhotoTemplates:
    """The templates of accepted photos or shots, filed as templates_of files each: plain rows first."""

    plain: list[np.ndarray]
    masked: list[np.ndarray]

    @classmethod
    def of(cls, results: Iterable[PhotoResult]) -> PhotoTemplates:
        files = [templates_of(r) for r in results]
        return cls([b for b, _ in files if b is not None], [m for _, ms in files for m in ms])

    @property
    def embeddings(self) -> np.ndarray:
        return np.stack(self.plain + self.masked)

    @property
    def masked_flags(self) -> list[bool]:
        return [False] * len(self.plain) + [True] * len(self.masked)


def lacks_bare_face(gallery: Gallery, name: str, plain: int, replacing: bool) -> bool:
    """True when enrolling ``plain`` bare-face templates would leave ``name`` known only from masked faces.

    Every enrolment path refuses that (enroll, camera capture, MQTT; a gallery file's import checks its
    persons the same way): the thresholds are calibrated for bare enrolment photos plus their synthetic
    masks, so a person known only from masked faces would be matched outside the calibrated stranger rates
    (docs/accuracy.md)."""
    return plain == 0 and (replacing or not gallery.has_bare_template(name))


# Kinds cycled through for the synthetic-masked templates of one photo: the masks people wear most.
MASK_CYCLE = ("surgical", "kn95", "cloth", "n95")


def masked_embeddings(pipeline: Pipeline, rgb: np.ndarray, keypoints: np.ndarray, n: int,
                      seed: int) -> list[np.ndarray]:
    """Embeddings of ``n`` synthetic-masked versions of one enrolment face.

    Each masked image goes through the detector again and is aligned on the eyes it finds there,
    exactly as a masked face at the door is: BlazeFace places the eyes of a masked face a little
    higher, and a template aligned the same way matches that probe better. Deterministic for a seed,
    so re-enrolling the same photo gives the same templates."""
    rng = np.random.default_rng(seed)
    kps = np.asarray(keypoints, np.float64)
    out = []
    for i in range(n):
        img = draw_mask(rgb, kps, random_style(rng, MASK_CYCLE[i % len(MASK_CYCLE)]), rng)
        use = redetect(pipeline, img, kps)
        chip = align(img, kps if use is None else use, pipeline.geometry, eyes_only=True)
        out.append(pipeline.embedder.embed(chip, masked=True))  # the teacher: no student was shipped (masked_kd.md)
    return out


def redetect(pipeline: Pipeline, image: np.ndarray, keypoints: np.ndarray) -> np.ndarray | None:
    """Keypoints of the same face found again in an edited copy of its photo (the detection whose eyes
    are nearest the given eyes, within one eye distance); None when the detector loses it."""
    kps = np.asarray(keypoints, np.float64)
    eye_dist = float(np.linalg.norm(kps[1] - kps[0]))
    found = pipeline.detector.detect(image)
    if not found:
        return None
    near = min(found, key=lambda d: float(np.linalg.norm(d.keypoints[:2] - kps[:2])))
    if float(np.linalg.norm(near.keypoints[:2] - kps[:2], axis=1).max()) < eye_dist:
        return np.asarray(near.keypoints, np.float64)
    return None


def photo_seed(data: bytes) -> int:
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little")
