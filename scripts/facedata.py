"""Faces from the shared data set for training and evaluation: detection, identity labels, splits.

../shared/data/masks-chandrikadeb7 (``$EDGE_APP_DATA``) mixes three sources (see its SOURCE.md):
photos with masks pasted on (``0_0_0 copy 12.jpg`` are copies of one photo), web photos, and the
Real-World Masked Face Dataset (RMFRD: unmasked ``<n>_<n>_<pinyin name>_<nnnn>.jpg``, masked
``<n>_<n>_<n>[ copy N].jpg``). RMFRD is the dataset of real-masked-dev, and its other people judge the
product, so mask_set_files leaves those photos out (scripts/common.RMFRD_NAME); identity-labelled people
come from real-masked-dev (dev_files, dev_identity).

Splits must share no image and no near-copy of one: faces are grouped by identity, by the stem of
``... copy N`` names, and by a perceptual hash of the upper half of the aligned face (eyes and brow,
so the masked and unmasked versions of one photo fall in one group); whole groups go to one side.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edge_app.errors import EdgeAppError
from edge_app.imageio import IMAGE_EXTS, read_image
from edge_app.vision.align import ChipGeometry, align
from edge_app.vision.pipeline import Pipeline
from scripts.common import DATA_ROOT, image_files, not_rmfrd

MASKS_DIR = Path("masks-chandrikadeb7") / "dataset"
IDENTITY_RE = re.compile(r"^\d+_\d+_([a-z]+)_\d+\.")
COPY_RE = re.compile(r"^(.*?) copy(?: \d+)*(?: \d+)?\.", re.IGNORECASE)


@dataclass
class FaceRecord:
    path: Path
    masked: bool  # folder label (with_mask / without_mask)
    identity: str | None  # RMFD person name, None when unknown
    rgb: np.ndarray  # the whole image (RGB uint8): synthetic masks are drawn on it, not on the chip
    keypoints: np.ndarray  # (6, 2) BlazeFace keypoints of the largest face
    quality_ok: bool
    chip: np.ndarray  # eyes-aligned 150x150 chip (what the mask classifier sees)
    embedding: np.ndarray | None = None  # the pipeline's own embedding of the face (its alignment)


def identity_of(name: str) -> str | None:
    m = IDENTITY_RE.match(name)
    return m.group(1) if m else None


def mask_folders(data: Path = DATA_ROOT) -> tuple[Path, Path]:
    root = data / MASKS_DIR
    with_mask, without = root / "with_mask", root / "without_mask"
    for folder in (with_mask, without):
        if not folder.is_dir():
            raise FileNotFoundError(f"data folder not found: {folder} (set EDGE_APP_DATA)")
    return with_mask, without


def collect(pipeline: Pipeline, geometry: ChipGeometry, files: Sequence[tuple[Path, bool]],
            progress: Callable[[Iterable[tuple[Path, bool]]], Iterable[tuple[Path, bool]]] = iter,
            identity: Callable[[Path], str | None] = lambda p: identity_of(p.name),
            ) -> tuple[list[FaceRecord], list[tuple[Path, str]]]:
    """Largest face of each image; returns the faces and (path, reason) of the images without one.
    ``identity`` labels a file (default: the data set's file names)."""
    faces: list[FaceRecord] = []
    skipped: list[tuple[Path, str]] = []
    for path, masked in progress(files):
        try:
            rgb = read_image(path)
        except EdgeAppError as exc:
            skipped.append((path, str(exc)))
            continue
        found = pipeline.process(rgb, max_faces=1)
        if not found:
            skipped.append((path, "no face found"))
            continue
        f = found[0]
        kps = np.asarray(f.detection.keypoints, np.float64)
        chip = align(rgb, kps, geometry, eyes_only=True)
        faces.append(FaceRecord(path, masked, identity(path), rgb, kps, f.quality.passed, chip, f.embedding))
    return faces, skipped


def mask_set_files(data: Path = DATA_ROOT, step: int = 1) -> list[tuple[Path, bool]]:
    """(photo, masked) of the mask set, without RMFRD's photos (scripts/common.RMFRD_NAME)."""
    with_mask, without = mask_folders(data)
    return ([(p, True) for p in not_rmfrd(image_files(with_mask, step))]
            + [(p, False) for p in not_rmfrd(image_files(without, step))])


DEV_DIR = "real-masked-dev"


def dev_files(data: Path = DATA_ROOT, kinds: Sequence[str] = ("masked", "unmasked")) -> list[tuple[Path, bool]]:
    """(photo, masked) of real-masked-dev, person by person; ``kinds``: its masked/ and/or unmasked/ folders."""
    root = data / DEV_DIR
    if not root.is_dir():
        raise FileNotFoundError(f"data folder not found: {root} (set EDGE_APP_DATA)")
    people = sorted(d for d in root.iterdir() if d.is_dir())
    return [(p, kind == "masked") for d in people for kind in kinds for p in image_files(d / kind)]


def dev_identity(path: Path) -> str | None:
    """The person of a real-masked-dev photo (its person folder); None for any other photo."""
    return path.parent.parent.name if DEV_DIR in path.parts else None


def upper_bits(chip: np.ndarray) -> np.ndarray:
    """256-bit difference hash of the eyes-and-brow region of an aligned chip (unaffected by a mask)."""
    top = chip[10:80, 20:130]
    grey = cv2.cvtColor(top, cv2.COLOR_RGB2GRAY)
    small = cv2.resize(grey, (17, 16), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.asarray((small[:, 1:] > small[:, :-1]).ravel(), np.float32)


def group_keys(faces: Sequence[FaceRecord], max_hamming: int = 24) -> list[str]:
    """A key per face such that near-copies share a key (union-find over three relations).

    24 of 256 bits: augmented copies (shifted, re-coloured, masked) of one photo measured 10-20 apart,
    different photos of one person 30 and more (the identity relation joins those anyway)."""
    parent = list(range(len(faces)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def union(i: int, j: int) -> None:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)

    first: dict[str, int] = {}
    for i, f in enumerate(faces):
        m = COPY_RE.match(f.path.name)
        for key in (f"id:{f.identity}" if f.identity else None, f"copy:{m.group(1)}" if m else None):
            if key is not None:
                union(i, first.setdefault(key, i))
    bits = np.array([upper_bits(f.chip) for f in faces], np.float32).reshape(len(faces), -1)
    # Hamming distance of 0/1 vectors as one matrix product.
    dist = bits.shape[1] - (bits @ bits.T + (1 - bits) @ (1 - bits).T)
    for i, j in zip(*np.nonzero(np.triu(dist <= max_hamming, k=1)), strict=True):
        union(int(i), int(j))
    roots = [find(i) for i in range(len(faces))]
    return [faces[r].path.name for r in roots]


def split_by_group(keys: Sequence[str], val_fraction: float, salt: str = "edge-app") -> np.ndarray:
    """True for the validation side; whole groups, decided by a hash of the group key."""
    def side(key: str) -> bool:
        h = int.from_bytes(hashlib.sha256(f"{salt}:{key}".encode()).digest()[:4], "little")
        return h / 2**32 < val_fraction

    return np.array([side(k) for k in keys], bool)


def people_folder_files(folder: Path) -> tuple[list[tuple[Path, bool]], Callable[[Path], str | None]]:
    """A site's own labelled photos: FOLDER/<person>/<photo>; files directly in FOLDER are strangers."""
    files = [(p, False) for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix.lower() in IMAGE_EXTS
             and len(p.relative_to(folder).parts) <= 2]

    def identity(path: Path) -> str | None:
        rel = path.relative_to(folder).parts
        return rel[0] if len(rel) == 2 else None

    return files, identity
