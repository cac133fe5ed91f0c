"""Admin commands (already verified by edge_app.mqtt.security): validate, apply atomically, answer.

Every argument is checked before the gallery is touched, and each command is one SQLite
transaction: a bad command gets an error result naming the problem and changes nothing.

Commands (``type`` -> ``args``):
  ping             {}
  gallery.list     {}
  gallery.upsert   {"name", "active"?, "valid_from"?, "valid_until"?, "schedule"?, "note"?,
                    "templates"?: {"model_sha", "dim", "plain": [b64 float32], "masked": [b64 float32]},
                    "photos"?: [b64 image], "replace_templates"?: true}
                   A masked embedding may leave out its trailing zeros (a fused embedder's masked template has
                   zeros in its second part): the kiosk puts them back.
  gallery.delete   {"name"}
  gallery.replace  {"version": int, "persons": [gallery.upsert args without photos]}
  door.unlock      {"seconds"?}
  gallery.capture  {"name", "seconds"?: 5..120 (20), "shots"?: 1..5 (3)}: the running kiosk takes enrolment shots of
                   the person in front of its camera (edge_app.capture); answered at once, the outcome is an event
                   of kind "enrol" (reason "captured" or "capture_failed")
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from edge_app.access.policy import parse_schedule
from edge_app.enrol import lacks_bare_face
from edge_app.errors import EdgeAppError, GalleryInputError, PersonNotFoundError
from edge_app.gallery.fields import clean_name
from edge_app.gallery.outbox import CommandOrder
from edge_app.gallery.store import Gallery

log = logging.getLogger(__name__)

MAX_TEMPLATES: Final = 64  # per person: 5 photos x (1 plain + 3 masked) fits with room
MAX_PHOTOS: Final = 10
MAX_PHOTO_BYTES: Final = 4 * 1024 * 1024
MAX_PERSONS: Final = 10_000
MAX_UNLOCK_S: Final = 60.0
CAPTURE_SECONDS: Final = (5.0, 120.0, 20.0)  # min, max, default
CAPTURE_SHOTS: Final = (1, 5, 3)
# Whoever stands at the door when a capture arrives is enrolled: a broker must not be able to hold one back for the
# command window (minutes) and deliver it when someone else is there.
CAPTURE_MAX_AGE_S: Final = 15.0
PERSON_KEYS: Final = frozenset({"name", "active", "valid_from", "valid_until", "schedule", "note", "templates",
                                "photos", "replace_templates"})


class CommandError(EdgeAppError, ValueError):
    """A command that cannot be applied; ``reason`` is a short code for the result message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# photo bytes -> (plain embedding, or None for a photo that shows a mask; masked embeddings); raises CommandError
# naming what is wrong
PhotoEmbedder = Callable[[bytes], tuple[np.ndarray | None, list[np.ndarray]]]


@dataclass
class PersonSpec:
    name: str
    fields: dict[str, Any]  # only the fields given
    plain: list[np.ndarray] = field(default_factory=list)
    masked: list[np.ndarray] = field(default_factory=list)
    has_templates: bool = False
    replace_templates: bool = True


def _bad(message: str) -> CommandError:
    return CommandError("bad_args", message)


def _expect(args: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str,
            required: bool = True) -> Any:
    if key not in args:
        if required:
            raise _bad(f"{where}: '{key}' missing")
        return None
    value = args[key]
    if isinstance(value, bool) and kind in (int, float, (int, float)):
        raise _bad(f"{where}: '{key}' must be a number, got a boolean")
    if not isinstance(value, kind):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise _bad(f"{where}: '{key}' must be {names}, got {type(value).__name__}")
    return value


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str):
        raise _bad(f"{where}: expected base64 text, got {type(text).__name__}")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise _bad(f"{where}: not valid base64") from None


def _embeddings(items: Any, dim: int, where: str, zeros_left_out: bool = False) -> list[np.ndarray]:
    """``zeros_left_out``: a vector may stop before ``dim`` values, the rest being zeros (lossless; masked
    templates of a fused embedder are zero past the first embedder's part, 80 % of their bytes)."""
    if not isinstance(items, list):
        raise _bad(f"{where}: expected a list of base64 float32 vectors, got {type(items).__name__}")
    out = []
    for i, text in enumerate(items):
        raw = _b64(text, f"{where}[{i}]")
        short_ok = zeros_left_out and 0 < len(raw) < dim * 4 and len(raw) % 4 == 0
        if len(raw) != dim * 4 and not short_ok:
            allowed = " (or fewer, a multiple of 4, when trailing zeros are left out)" if zeros_left_out else ""
            raise _bad(f"{where}[{i}]: {len(raw)} bytes, a {dim}-d float32 embedding has {dim * 4}{allowed}")
        vec = np.zeros(dim, np.float32)
        vec[: len(raw) // 4] = np.frombuffer(raw, "<f4")
        if not np.isfinite(vec).all() or float(np.linalg.norm(vec)) < 1e-6:
            raise _bad(f"{where}[{i}]: embedding has NaN/inf values or is all zero")
        out.append(vec)
    return out


class CommandHandler:
    def __init__(self, gallery: Gallery, model_sha: str, dim: int, device_id: str,
                 embed_photo: PhotoEmbedder | None = None, unlock: Callable[[float | None], None] | None = None,
                 allow_remote_unlock: bool = False,
                 capture: Callable[[str, float, int], dict[str, Any]] | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.gallery, self.model_sha, self.dim, self.device_id = gallery, model_sha, dim, device_id
        self.embed_photo, self.unlock, self.allow_remote_unlock = embed_photo, unlock, allow_remote_unlock
        # (name, seconds, shots) -> result; raises CommandError("busy") while a capture runs. The daemon sets it.
        self.capture = capture
        self.clock = clock
        self.order = CommandOrder(gallery)
        self._issued_at: float | None = None  # of the command being handled (None: no order check)

    def handle(self, type_: str, args: Mapping[str, Any], issued_at: float | None = None) -> dict[str, Any]:
        """Run one command; returns its result, or raises CommandError (nothing changed). ``issued_at`` (the
        signed issue time) orders gallery changes: one older than a change already applied to the same person
        (or than a whole-gallery replace) is refused as ``stale``."""
        self._issued_at = issued_at
        handlers: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
            "ping": self._ping, "gallery.list": self._list, "gallery.upsert": self._upsert,
            "gallery.delete": self._delete, "gallery.replace": self._replace, "door.unlock": self._unlock,
            "gallery.capture": self._capture}
        fn = handlers.get(type_)
        if fn is None:
            raise CommandError("unknown_command", f"unknown command type {type_[:40]!r}; known: "
                               + ", ".join(sorted(handlers)))
        if not isinstance(args, Mapping):
            raise _bad(f"{type_}: 'args' must be an object")
        try:
            return fn(args)
        except PersonNotFoundError as exc:
            raise CommandError("not_found", str(exc)) from None
        except GalleryInputError as exc:
            raise _bad(str(exc)) from None

    # --- commands -------------------------------------------------------------------------------

    def _ping(self, _args: Mapping[str, Any]) -> dict[str, Any]:
        return {"pong": True, "device": self.device_id, "gallery_version": self.gallery.gallery_version,
                "model_sha": self.model_sha}

    def _list(self, _args: Mapping[str, Any]) -> dict[str, Any]:
        return {"gallery_version": self.gallery.gallery_version, "model_sha": self.model_sha, "persons": [
            {"id": p.id, "name": p.name, "active": p.active, "templates": p.n_templates,
             "masked_templates": p.n_masked, "valid_from": p.valid_from, "valid_until": p.valid_until,
             "schedule": p.schedule} for p in self.gallery.list_persons()]}

    def _delete(self, args: Mapping[str, Any]) -> dict[str, Any]:
        name = clean_name(_expect(args, "name", str, "gallery.delete"))
        with self.gallery.write_transaction():
            self._in_order(name, "gallery.delete")
            n = self.gallery.remove_person(name)
        return {"removed": name, "templates": n, "gallery_version": self.gallery.gallery_version}

    def _upsert(self, args: Mapping[str, Any]) -> dict[str, Any]:
        spec = self._person(args, "gallery.upsert", photos_allowed=True)
        with self.gallery.write_transaction():
            self._in_order(spec.name, "gallery.upsert")
            self._apply(spec)
        p = self.gallery.get_person(spec.name)
        return {"name": p.name, "templates": p.n_templates, "masked_templates": p.n_masked,
                "gallery_version": self.gallery.gallery_version}

    def _replace(self, args: Mapping[str, Any]) -> dict[str, Any]:
        version = _expect(args, "version", int, "gallery.replace")
        persons = _expect(args, "persons", list, "gallery.replace")
        if len(persons) > MAX_PERSONS:
            raise _bad(f"gallery.replace: {len(persons)} persons, the limit is {MAX_PERSONS}")
        specs = [self._person(p, f"gallery.replace persons[{i}]", photos_allowed=False)
                 for i, p in enumerate(persons)]
        names = [s.name for s in specs]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise _bad(f"gallery.replace: names appear twice: {dupes[:5]}")
        with self.gallery.write_transaction():
            self._in_order(None, "gallery.replace")
            for p in self.gallery.list_persons():
                self.gallery.remove_person(p.name)
            for s in specs:
                self._apply(s)
            self.gallery.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('replaced_version', ?)",
                                    [str(version)])
        return {"replaced_version": version, "persons": len(specs), "gallery_version": self.gallery.gallery_version}

    def _unlock(self, args: Mapping[str, Any]) -> dict[str, Any]:
        if not self.allow_remote_unlock or self.unlock is None:
            raise CommandError("forbidden", "remote unlock is disabled on this device ([mqtt] allow_remote_unlock)")
        seconds = _expect(args, "seconds", (int, float), "door.unlock", required=False)
        if seconds is not None and not 0.2 <= float(seconds) <= MAX_UNLOCK_S:
            raise _bad(f"door.unlock: 'seconds' must be 0.2..{MAX_UNLOCK_S:g}, got {seconds}")
        self.unlock(None if seconds is None else float(seconds))
        return {"unlocked": True, "seconds": seconds}

    def _capture(self, args: Mapping[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(args) - {"name", "seconds", "shots"})
        if unknown:
            raise _bad(f"gallery.capture: unknown field(s) {unknown}")
        name = clean_name(_expect(args, "name", str, "gallery.capture"))
        seconds = _expect(args, "seconds", (int, float), "gallery.capture", required=False)
        shots = _expect(args, "shots", int, "gallery.capture", required=False)
        lo, hi, default = CAPTURE_SECONDS
        if seconds is not None and not lo <= float(seconds) <= hi:
            raise _bad(f"gallery.capture: 'seconds' must be {lo:g}..{hi:g}, got {seconds}")
        s_lo, s_hi, s_default = CAPTURE_SHOTS
        if shots is not None and not s_lo <= shots <= s_hi:
            raise _bad(f"gallery.capture: 'shots' must be {s_lo}..{s_hi}, got {shots}")
        if self.capture is None:
            raise CommandError("unsupported", "gallery.capture: this device takes no camera shots (no camera loop)")
        age = None if self._issued_at is None else self.clock() - self._issued_at
        if age is not None and age > CAPTURE_MAX_AGE_S:
            raise CommandError("expired", f"gallery.capture: issued {age:.0f} s ago; a "
                                          f"capture must arrive within {CAPTURE_MAX_AGE_S:g} s (whoever stands at the "
                                          "door when it arrives is enrolled); send it again")
        return self.capture(name, default if seconds is None else float(seconds), s_default if shots is None else shots)

    # --- helpers --------------------------------------------------------------------------------

    def _in_order(self, subject: str | None, what: str) -> None:
        """Inside the change's transaction: refuse a change older than one already applied to the same person
        (None: every person), else record this one's issue time with it."""
        if self._issued_at is None:
            return
        newest = self.order.newest(subject)
        if newest is not None and self._issued_at < newest:
            about = "the gallery" if subject is None else repr(subject)
            raise CommandError("stale", f"{what}: a change to {about} issued {newest - self._issued_at:.0f} s "
                                        "after this command was already applied; this older command is refused")
        self.order.record(subject, self._issued_at)

    def _person(self, args: Any, where: str, photos_allowed: bool) -> PersonSpec:
        if not isinstance(args, Mapping):
            raise _bad(f"{where}: expected an object")
        unknown = set(args) - PERSON_KEYS - ({"photos"} if photos_allowed else set())
        if not photos_allowed and "photos" in args:
            raise _bad(f"{where}: 'photos' are not accepted here; send templates")
        if unknown:
            raise _bad(f"{where}: unknown field(s) {sorted(unknown)[:5]}")
        name = clean_name(_expect(args, "name", str, where))
        fields: dict[str, Any] = {}
        if "active" in args:
            fields["active"] = _expect(args, "active", bool, where)
        for key in ("valid_from", "valid_until", "note"):
            if key in args:
                fields[key] = _expect(args, key, (str, type(None)), where)
        if "schedule" in args:
            schedule = args["schedule"]
            parse_schedule(schedule)  # GalleryInputError names the window and field
            fields["schedule"] = schedule
        spec = PersonSpec(name, fields, replace_templates=bool(args.get("replace_templates", True)))
        if "templates" in args:
            t = _expect(args, "templates", Mapping, where)
            sha = _expect(t, "model_sha", str, f"{where} templates")
            if sha != self.model_sha:
                raise CommandError("model_mismatch", f"{where}: templates were made by embedder {sha[:12]}…, this "
                                   f"device uses {self.model_sha[:12]}…; enrol with the same models")
            dim = _expect(t, "dim", int, f"{where} templates")
            if dim != self.dim:
                raise _bad(f"{where} templates: dim {dim}, this device's embedder has {self.dim}")
            spec.plain = _embeddings(t.get("plain", []), dim, f"{where} templates.plain")
            spec.masked = _embeddings(t.get("masked", []), dim, f"{where} templates.masked",
                                      zeros_left_out=True)
            spec.has_templates = True
        if photos_allowed and "photos" in args:
            photos = _expect(args, "photos", list, where)
            if len(photos) > MAX_PHOTOS:
                raise _bad(f"{where}: {len(photos)} photos, the limit is {MAX_PHOTOS}")
            if self.embed_photo is None:
                raise CommandError("unsupported", f"{where}: this device cannot embed photos; send templates")
            for i, text in enumerate(photos):
                data = _b64(text, f"{where} photos[{i}]")
                if len(data) > MAX_PHOTO_BYTES:
                    raise _bad(f"{where} photos[{i}]: {len(data)} bytes, the limit is {MAX_PHOTO_BYTES}")
                try:
                    plain, masked = self.embed_photo(data)
                except CommandError as exc:
                    raise CommandError(exc.reason, f"{where} photos[{i}]: {exc}") from None
                if plain is not None:
                    spec.plain.append(plain)
                spec.masked.extend(masked)
            spec.has_templates = True
        if len(spec.plain) + len(spec.masked) > MAX_TEMPLATES:
            raise _bad(f"{where}: {len(spec.plain) + len(spec.masked)} templates, the limit is {MAX_TEMPLATES}")
        return spec

    def _apply(self, spec: PersonSpec) -> None:
        """Inside the caller's transaction."""
        if spec.has_templates and lacks_bare_face(self.gallery, spec.name, len(spec.plain),
                                                  replacing=spec.replace_templates):
            raise CommandError("bad_photo", f"{spec.name}: no face without a mask among the photos or templates, and "
                               "no bare-face template kept; send at least one photo without a mask")
        self.gallery.upsert_person(spec.name, **spec.fields)
        if not spec.has_templates:
            return
        emb = np.stack(spec.plain + spec.masked) if spec.plain or spec.masked else np.zeros((0, self.dim), np.float32)
        flags: Sequence[bool] = [False] * len(spec.plain) + [True] * len(spec.masked)
        if spec.replace_templates:
            if len(emb):
                self.gallery.replace_person_templates(spec.name, emb, model_sha=self.model_sha, masked=list(flags),
                                                      source="mqtt")
            else:
                raise _bad(f"{spec.name}: replacing templates with none would lock the person out; send templates")
        elif len(emb):
            self.gallery.add_templates(spec.name, emb, model_sha=self.model_sha, masked=list(flags), source="mqtt")
