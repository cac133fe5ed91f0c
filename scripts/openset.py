"""Open-set protocol on a folder of ``<person>/{masked,unmasked}/*.jpg`` (e.g. ../shared/data/real-masked-dev).

What a door sees: enrolled people walk up, masked or not, and so do strangers. People are split into
*enrolled* and *strangers* by a hash of their name (``salt`` picks another split, so every person is a
stranger in some splits). Enrolled people are enrolled from their first K unmasked photos (in hash
order) exactly as ``edge-app enroll`` does (plain + synthetic-masked templates); every other photo is a
probe. The gallery can be filled up with other faces (``filler``: each photo a person of its own) to the
size a site names, because the chance that a stranger resembles *somebody* grows with the gallery.

Each probe photo becomes a walk-up of ``FRAMES`` frames (the photo, then small shifts, scale, rotation,
exposure and noise, as consecutive camera frames differ), shown two ways: ``crop`` (the photo as it is:
for these data sets a tight face crop, a person stepping up to the kiosk) and ``framed`` (the photo placed
inside a 640x480 frame, a person further away). Every frame goes through the kiosk's own pipeline once;
embeddings are cached per model, so scoring, sweeps and calibration (scripts/openset_report.py) are numpy.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_app.enrol import PhotoStatus, embed_rgb, photo_seed, templates_of
from edge_app.imageio import is_image_path, read_image
from edge_app.vision.pipeline import Pipeline

FRAMES = 5  # a walk-up: the door votes over its last 5 frames
PRESENTATIONS = ("crop", "framed")
FRAME_SIZE = (640, 480)
ENROLLED_SHARE = 0.6  # of the people; the rest are strangers (the test: 101 enrolled, 74 strangers)
CACHE_VERSION = 2  # 2: an enrolment photo whose face is called masked is a masked template, as enroll does

Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]


def _h(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")


def is_enrolled(name: str, salt: int = 0) -> bool:
    """The split: fixed by the person's name (and the split's salt), never by the results."""
    return (_h(f"openset:{salt}:{name}") % 1000) < ENROLLED_SHARE * 1000


@dataclass
class Person:
    name: str
    unmasked: list[Path]  # in hash order: the first K are the enrolment photos
    masked: list[Path]


def load_people(root: Path) -> list[Person]:
    """``root/<person>/{masked,unmasked}/*``; folders without either subfolder are refused by name."""
    if not root.is_dir():
        raise FileNotFoundError(f"people folder not found: {root}")
    people = []
    for d in sorted(p for p in root.iterdir() if p.is_dir()):
        sub = {k: d / k for k in ("masked", "unmasked")}
        if not any(s.is_dir() for s in sub.values()):
            raise ValueError(f"{d}: expected subfolders masked/ and/or unmasked/")
        files = {k: sorted((f for f in s.glob("*") if f.is_file() and is_image_path(f)),
                           key=lambda f: _h(f"order:{f.name}")) if s.is_dir() else []
                 for k, s in sub.items()}
        if files["masked"] or files["unmasked"]:
            people.append(Person(d.name, files["unmasked"], files["masked"]))
    if len(people) < 4:
        raise ValueError(f"{root}: the open-set protocol needs at least 4 people, found {len(people)}")
    return people


# ---------------------------------------------------------------- frames of a walk-up

def _background(rng: np.random.Generator) -> np.ndarray:
    """A plain, smoothly shaded wall with sensor noise: no faces, nothing to confuse the detector."""
    w, h = FRAME_SIZE
    c0, c1 = rng.uniform(40, 220, 3), rng.uniform(40, 220, 3)
    t = np.linspace(0.0, 1.0, w)[None, :, None]
    bg = np.broadcast_to(c0 * (1 - t) + c1 * t, (h, w, 3)) + rng.normal(0, 3, (h, w, 3))
    return np.clip(bg, 0, 255).astype(np.uint8)


def present(rgb: np.ndarray, how: str, rng: np.random.Generator) -> np.ndarray:
    if how == "crop":
        return rgb
    if how != "framed":
        raise ValueError(f"unknown presentation {how!r}")
    frame = _background(rng)
    h, w = rgb.shape[:2]
    fw, fh = FRAME_SIZE
    if w > fw // 2 or h > fh // 2:  # a large photo: shrink it so it sits inside the frame with room around
        s = min(fw / 2 / w, fh / 2 / h)
        rgb = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
        h, w = rgb.shape[:2]
    x, y = int(rng.integers(0, fw - w + 1)), int(rng.integers(0, fh - h + 1))
    frame[y:y + h, x:x + w] = rgb
    return frame


def jitter(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The next camera frame of the same walk-up: a little shift, scale, roll, exposure and noise."""
    h, w = img.shape[:2]
    s = max(h, w)
    m = cv2.getRotationMatrix2D((w / 2, h / 2), float(rng.uniform(-4, 4)), float(rng.uniform(0.94, 1.06)))
    m[:, 2] += rng.uniform(-0.03, 0.03, 2) * s
    out = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    gain, bias = rng.uniform(0.88, 1.12), rng.uniform(-12, 12)
    noisy = out.astype(np.float32) * gain + bias + rng.normal(0, 2.0, out.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8)


def walkup(rgb: np.ndarray, how: str, seed: int, frames: int = FRAMES) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = present(rgb, how, rng)
    return [base] + [jitter(base, rng) for _ in range(frames - 1)]


# ---------------------------------------------------------------- embedding (cached)

@dataclass
class FrameSet:
    """Per probe photo and presentation: FRAMES rows (found, masked, quality, p_mask, embedding)."""

    found: np.ndarray  # (n, F) bool
    masked: np.ndarray  # (n, F) bool: the classifier's call
    quality: np.ndarray  # (n, F) bool: quality gates passed
    emb: np.ndarray  # (n, F, d) float32, zero where not found


@dataclass
class Enrolment:
    """Per enrolment photo: plain template and synthetic-masked ones (None: the photo was refused)."""

    plain: list[np.ndarray | None]
    masked: list[tuple[np.ndarray, ...]]
    status: list[str]


@dataclass
class Embedded:
    files: list[str]  # every photo, index into the arrays below
    index: dict[str, int] = field(default_factory=dict)
    frames: dict[str, FrameSet] = field(default_factory=dict)  # by presentation
    enrolment: Enrolment | None = None


def _frames_of(pipeline: Pipeline, rgb: np.ndarray, how: str, seed: int, dim: int) -> tuple[list[Any], ...]:
    found, masked, quality, emb = [], [], [], []
    for frame in walkup(rgb, how, seed):
        faces = pipeline.process(frame, max_faces=1)
        f = faces[0] if faces else None
        ok = f is not None and f.embedding is not None
        found.append(ok)
        masked.append(bool(f.masked) if ok and f is not None else False)
        quality.append(bool(f.quality.passed) if ok and f is not None else False)
        emb.append(f.embedding if ok and f is not None else np.zeros(dim, np.float32))
    return found, masked, quality, emb


def _no_frames(dim: int) -> tuple[list[Any], ...]:
    return [False] * FRAMES, [False] * FRAMES, [False] * FRAMES, [np.zeros(dim, np.float32)] * FRAMES


def embed_files(pipeline: Pipeline, files: Sequence[Path], probe_files: set[Path], enrol_files: set[Path],
                n_masked: int, cache: Path | None, model_key: str, progress: Progress) -> Embedded:
    """Walk-up frames of ``probe_files`` in both presentations, enrolment templates of ``enrol_files``."""
    listing = "\n".join(f"{f}|{f in probe_files:d}{f in enrol_files:d}" for f in files)
    key = hashlib.sha256(f"{CACHE_VERSION}|{model_key}|{n_masked}|{FRAMES}|{PRESENTATIONS}|{listing}".encode()
                         ).hexdigest()[:16]
    path = None if cache is None else cache / f"openset-{key}.npz"
    if path is not None and path.is_file():
        return _load(path, files)
    dim = pipeline.embedder.dim
    per: dict[str, tuple[list[Any], ...]] = {how: ([], [], [], []) for how in PRESENTATIONS}
    plain: list[np.ndarray | None] = []
    masked_t: list[tuple[np.ndarray, ...]] = []
    status: list[str] = []
    for f in progress(files, "photos", len(files)):
        rgb = read_image(f)
        seed = _h(f"walkup:{f.name}")
        for how in PRESENTATIONS:
            vals = _frames_of(pipeline, rgb, how, seed, dim) if f in probe_files else _no_frames(dim)
            for acc, v in zip(per[how], vals, strict=True):
                acc.append(v)
        if f in enrol_files:
            # As `edge-app enroll`: the photo as it is, its seed from its bytes (re-enrolment is reproducible).
            r = embed_rgb(pipeline, rgb, f, n_masked, photo_seed(f.read_bytes()))
            # Filed as enroll files it: a photo that shows a mask is one masked template and no bare one.
            bare, masked = templates_of(r) if r.status is PhotoStatus.OK else (None, [])
            plain.append(None if bare is None else np.asarray(bare, np.float32))
            masked_t.append(tuple(np.asarray(m, np.float32) for m in masked))
            status.append("ok_masked" if bare is None and masked else r.status.value)
        else:
            plain.append(None)
            masked_t.append(())
            status.append("not_enrolled")
    out = Embedded([str(f) for f in files])
    out.index = {s: i for i, s in enumerate(out.files)}
    for how, (fo, ma, qu, em) in per.items():
        out.frames[how] = FrameSet(np.array(fo, bool).reshape(len(files), FRAMES),
                                   np.array(ma, bool).reshape(len(files), FRAMES),
                                   np.array(qu, bool).reshape(len(files), FRAMES),
                                   np.asarray(em, np.float32).reshape(len(files), FRAMES, dim))
    out.enrolment = Enrolment(plain, masked_t, status)
    if path is not None:
        _save(path, out, dim, n_masked)
    return out


def _save(path: Path, e: Embedded, dim: int, n_masked: int) -> None:
    assert e.enrolment is not None
    arrays: dict[str, np.ndarray] = {}
    for how, fs in e.frames.items():
        arrays |= {f"{how}_found": fs.found, f"{how}_masked": fs.masked, f"{how}_quality": fs.quality,
                   f"{how}_emb": fs.emb}
    n = len(e.files)
    has = np.array([p is not None for p in e.enrolment.plain])
    plain = np.stack([p if p is not None else np.zeros(dim, np.float32) for p in e.enrolment.plain])
    nm = np.array([len(m) for m in e.enrolment.masked])
    width = max(1, int(nm.max()) if n else 1, n_masked)
    masked = np.zeros((n, width, dim), np.float32)
    for i, m in enumerate(e.enrolment.masked):
        if m:
            masked[i, :len(m)] = np.stack(m)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez_compressed(tmp, plain=plain, has=has, masked=masked, n_masked=nm,
                        status=np.array(e.enrolment.status), **arrays)
    tmp.replace(path)


def _load(path: Path, files: Sequence[Path]) -> Embedded:
    z = np.load(path)
    out = Embedded([str(f) for f in files])
    out.index = {s: i for i, s in enumerate(out.files)}
    for how in PRESENTATIONS:
        out.frames[how] = FrameSet(z[f"{how}_found"], z[f"{how}_masked"], z[f"{how}_quality"], z[f"{how}_emb"])
    plain = [z["plain"][i] if z["has"][i] else None for i in range(len(files))]
    masked = [tuple(z["masked"][i, :k]) for i, k in enumerate(z["n_masked"])]
    out.enrolment = Enrolment(plain, masked, [str(s) for s in z["status"]])
    return out
