"""Reading back a gallery export (the JSON `edge-app gallery export` / `Gallery.export` writes).

The whole file is read and checked before the gallery is touched, and the import is one
transaction: a corrupt file, a wrong version or templates of another embedder change nothing.
Every error names the file and what in it is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_app.access.policy import parse_schedule
from edge_app.errors import GalleryError, GalleryInputError, InputNotFoundError, TemplateModelMismatch
from edge_app.gallery.fields import clean_name
from edge_app.gallery.schema import SCHEMA_VERSION
from edge_app.gallery.store import EXPORT_FORMAT, Gallery

log = logging.getLogger(__name__)

_PERSON_FIELDS = ("active", "valid_from", "valid_until", "schedule", "note")


@dataclass(frozen=True)
class ImportedPerson:
    name: str
    fields: dict[str, Any]  # active, valid_from, valid_until, schedule, note
    embeddings: np.ndarray  # (n, dim) float32; (0, 0) when the person has no template
    masked: tuple[bool, ...]
    quality: tuple[float | None, ...]
    source: str | None  # the templates' common source, if they share one
    model_shas: frozenset[str]


@dataclass(frozen=True)
class GalleryFile:
    origin: str
    schema_version: int
    gallery_version: int | None
    persons: tuple[ImportedPerson, ...]

    @property
    def n_templates(self) -> int:
        return sum(len(p.masked) for p in self.persons)

    @property
    def model_shas(self) -> frozenset[str]:
        return frozenset().union(*(p.model_shas for p in self.persons))


@dataclass(frozen=True)
class ImportResult:
    persons: int
    templates: int
    removed: int  # persons dropped by a replace
    gallery_version: int


def _fail(origin: str, message: str) -> GalleryInputError:
    return GalleryInputError(f"{origin}: {message}; nothing imported")


def read_export(path: str | Path, text: str | None = None) -> GalleryFile:
    """Parse and check an export file (or its ``text``, e.g. from stdin, named ``path``)."""
    origin = str(path)
    if text is None:
        p = Path(path)
        if not p.exists():
            raise InputNotFoundError(f"gallery file not found: {p}")
        if p.is_dir():
            raise GalleryInputError(f"{p} is a folder; give the .json file written by `edge-app gallery export`")
        try:
            text = p.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise _fail(origin, "not UTF-8 text, so not a gallery export") from None
        except OSError as exc:
            raise GalleryError(f"cannot read {p}: {exc.strerror or exc}") from exc
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _fail(origin, f"not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}); "
                            "the file is corrupt or truncated") from None
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise _fail(origin, f"not an edge-app gallery export (format {found!r}, expected {EXPORT_FORMAT!r})")
    version = doc.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise _fail(origin, f"schema_version must be a positive integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise _fail(origin, f"written by a newer edge-app (schema_version {version}; this one reads up to "
                            f"{SCHEMA_VERSION}); upgrade edge-app")
    persons = doc.get("persons")
    if not isinstance(persons, list):
        raise _fail(origin, f"'persons' must be a list, got {type(persons).__name__}")
    parsed = tuple(_person(origin, i, p) for i, p in enumerate(persons))
    names = [p.name for p in parsed]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(origin, f"names appear more than once: {', '.join(map(repr, dupes[:5]))}")
    gv = doc.get("gallery_version")
    return GalleryFile(origin, version, gv if isinstance(gv, int) else None, parsed)


def _person(origin: str, i: int, p: Any) -> ImportedPerson:
    where = f"persons[{i}]"
    if not isinstance(p, Mapping):
        raise _fail(origin, f"{where} must be an object")
    try:
        name = clean_name(p.get("name"))  # type: ignore[arg-type]
    except GalleryInputError as exc:
        raise _fail(origin, f"{where}: {exc}") from None
    where = f"{where} ({name!r})"
    fields = {k: p.get(k) for k in _PERSON_FIELDS if k in p}
    if not isinstance(fields.get("active", True), bool):
        raise _fail(origin, f"{where}: 'active' must be true or false")
    for key in ("valid_from", "valid_until", "note"):
        if not isinstance(fields.get(key), str | None):
            raise _fail(origin, f"{where}: '{key}' must be a string or null")
    try:
        parse_schedule(fields.get("schedule"))
    except (GalleryInputError, ValueError) as exc:
        raise _fail(origin, f"{where}: bad schedule: {exc}") from None
    templates = p.get("templates", [])
    if not isinstance(templates, list):
        raise _fail(origin, f"{where}: 'templates' must be a list")
    rows, masked, shas = [], [], set()
    for j, t in enumerate(templates):
        row, flag, sha = _template(origin, f"{where} templates[{j}]", t)
        rows.append(row)
        masked.append(flag)
        shas.add(sha)
    quality = tuple(q if isinstance(q, int | float) and not isinstance(q, bool) else None
                    for q in (t.get("quality") for t in templates))
    sources = {src if isinstance(src, str) else None for src in (t.get("source") for t in templates)}
    source = sources.pop() if len(sources) == 1 else None
    dims = {len(r) for r in rows}
    if len(dims) > 1:
        raise _fail(origin, f"{where}: templates of different sizes {sorted(dims)}")
    emb = np.stack(rows) if rows else np.zeros((0, 0), np.float32)
    return ImportedPerson(name, fields, emb, tuple(masked), quality, source if isinstance(source, str) else None,
                          frozenset(shas))


def _template(origin: str, where: str, t: Any) -> tuple[np.ndarray, bool, str]:
    if not isinstance(t, Mapping):
        raise _fail(origin, f"{where} must be an object")
    sha, dim, masked, text = t.get("model_sha"), t.get("dim"), t.get("masked"), t.get("embedding")
    if not isinstance(sha, str) or len(sha) != 64:
        raise _fail(origin, f"{where}: 'model_sha' must be the embedder's sha256 (64 hex), got {sha!r}")
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= 4096:
        raise _fail(origin, f"{where}: 'dim' must be an integer in 1..4096, got {dim!r}")
    if not isinstance(masked, bool):
        raise _fail(origin, f"{where}: 'masked' must be true or false")
    try:
        raw = base64.b64decode(text if isinstance(text, str) else b"!", validate=True)
    except (binascii.Error, ValueError):
        raise _fail(origin, f"{where}: 'embedding' is not base64 text") from None
    if len(raw) != 4 * dim:
        raise _fail(origin, f"{where}: 'embedding' has {len(raw)} bytes, a {dim}-d float32 vector has {4 * dim}")
    vec = np.frombuffer(raw, "<f4").astype(np.float32)
    norm = float(np.linalg.norm(vec.astype(np.float64)))
    if not np.isfinite(vec).all() or norm == 0.0:
        raise _fail(origin, f"{where}: 'embedding' has NaN/inf values or is all zero")
    return vec, masked, sha.lower()


def check_embedder(doc: GalleryFile, model_sha: str, dim: int | None = None) -> None:
    """TemplateModelMismatch unless every template was made by the embedder ``model_sha`` (and has its ``dim``);
    GalleryInputError for a person with masked templates only."""
    foreign = sorted(doc.model_shas - {model_sha})
    if foreign:
        n = sum(1 for p in doc.persons if p.model_shas - {model_sha})
        raise TemplateModelMismatch(
            f"{doc.origin}: templates of {n} person(s) were made by another embedder "
            f"({', '.join(s[:12] + '…' for s in foreign)}); this edge-app uses {model_sha[:12]}…. "
            "Import it where the same models are installed, or re-enrol from photos; nothing imported")
    wrong = sorted({p.embeddings.shape[1] for p in doc.persons if p.embeddings.size} - {dim}) if dim else []
    if wrong:
        # Loaded, such templates would make every probe fail: nobody recognised, the door shut for everyone.
        raise TemplateModelMismatch(f"{doc.origin}: templates of {wrong} values, the embedder {model_sha[:12]}… "
                                    f"gives {dim}; nothing imported")
    masked_only = [p.name for p in doc.persons if p.masked and all(p.masked)]
    if masked_only:
        # The rule of enrol.lacks_bare_face, for a file's persons.
        raise GalleryInputError(f"{doc.origin}: {len(masked_only)} person(s) with masked templates only: "
                                f"{', '.join(map(repr, masked_only[:5]))}; each needs a bare-face template; "
                                "nothing imported")


def import_gallery(gallery: Gallery, doc: GalleryFile, model_sha: str, *, replace: bool,
                   dim: int | None = None) -> ImportResult:
    """Add the file's persons (a name already in the gallery is an error), or with ``replace`` make the
    gallery exactly the file's persons. One transaction either way; templates must be ``model_sha``'s."""
    check_embedder(doc, model_sha, dim)
    try:
        with gallery.write_transaction():
            existing = [p.name for p in gallery.list_persons()]
            if replace:
                for name in existing:
                    gallery.remove_person(name)
            else:
                clash = sorted(set(existing) & {p.name for p in doc.persons})
                if clash:
                    raise GalleryError(
                        f"{doc.origin}: {len(clash)} person(s) already in gallery {gallery.path}: "
                        f"{', '.join(map(repr, clash[:5]))}{' …' if len(clash) > 5 else ''}; use --replace to "
                        "replace the whole gallery, or `edge-app gallery remove NAME` first; nothing imported")
            for p in doc.persons:
                gallery.add_person(p.name, **p.fields)
                known = [q for q in p.quality if q is not None]
                if p.masked:
                    gallery.add_templates(p.name, p.embeddings, model_sha=model_sha, masked=list(p.masked),
                                          quality=known if len(known) == len(p.quality) else None,
                                          source=p.source or f"import {Path(doc.origin).name}"[:500])
            version = gallery.gallery_version
    except GalleryInputError as exc:
        raise GalleryInputError(f"{doc.origin}: {exc}; nothing imported") from None
    log.info("gallery: imported %d persons from %s (replace=%s)", len(doc.persons), doc.origin, replace)
    return ImportResult(len(doc.persons), doc.n_templates, len(existing) if replace else 0, version)
