"""The SQLite gallery: persons, their face templates (embeddings) and the access-event log.

Transactions are opened by hand (``BEGIN IMMEDIATE`` ... ``COMMIT``) rather than with
``with db.conn:``: sqlite-utils 4 ``Database.execute()`` commits any implicit transaction a
write opens, so ``with db.conn:`` around it is not atomic. ``IMMEDIATE`` takes the write lock
up front, so a kiosk and an enrolment CLI writing the same file wait (busy_timeout) instead
of failing on a lock upgrade.
"""

from __future__ import annotations

import base64
import enum
import json
import logging
import sqlite3
import urllib.parse
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self, SupportsFloat

import numpy as np
import numpy.typing as npt
import sqlite_utils

from edge_app.errors import GalleryError, GalleryInputError, PersonNotFoundError, TemplateModelMismatch
from edge_app.fsutil import create_private_file, private_dir, write_private
from edge_app.gallery.fields import (
    DateLike,
    ScheduleLike,
    check_sha,
    check_window,
    clean_name,
    iso_or_none,
    json_default,
    per_row,
    schedule_json,
    unit_rows,
)
from edge_app.gallery.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

BUSY_TIMEOUT_MS: Final = 5000
EXPORT_FORMAT: Final = "edge-app-gallery"


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET: Final = _Unset.UNSET


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Person:
    id: int
    name: str
    active: bool
    valid_from: str | None
    valid_until: str | None
    schedule: str | None  # JSON text, interpreted by the access policy, not here
    note: str | None
    created_at: str
    updated_at: str
    n_templates: int  # across all embedder models
    n_masked: int = 0  # of those, synthetic-masked (or photographed in a mask)


@dataclass(frozen=True, eq=False)
class TemplateSet:
    """Templates of one embedder model, read in one snapshot.

    Row i of ``embeddings`` (unit float32 rows; shape (0, 0) when empty) belongs to person
    ``person_ids[i]``; ``names`` maps every person id present to its name. Arrays are read-only.
    """

    model_sha: str
    embeddings: npt.NDArray[np.float32]
    person_ids: npt.NDArray[np.int64]
    masked: npt.NDArray[np.bool_]
    template_ids: npt.NDArray[np.int64]
    names: Mapping[int, str]
    gallery_version: int

    @property
    def dim(self) -> int:
        """Embedding size; 0 for an empty set."""
        return int(self.embeddings.shape[1])

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])


# --- validation helpers -------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def _freeze(a: npt.NDArray[Any]) -> npt.NDArray[Any]:
    a.flags.writeable = False
    return a


def _open_read_only(path: Path) -> sqlite3.Connection:
    """A connection to a gallery on a read-only filesystem. mode=ro still needs the -shm file of a WAL
    database, which cannot be created there; immutable=1 reads the main file alone (after a clean stop
    SQLite has checkpointed the -wal into it)."""
    if not path.is_file():
        raise sqlite3.OperationalError(f"no gallery file {path}")
    quoted = urllib.parse.quote(str(path.resolve()))
    last: sqlite3.Error | None = None
    for flags in ("mode=ro", "immutable=1"):
        conn = sqlite3.connect(f"file:{quoted}?{flags}", uri=True, check_same_thread=True)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.Error as e:
            conn.close()
            last = e
    assert last is not None
    raise last


def _why(e: BaseException) -> str:
    return e.strerror or str(e) if isinstance(e, OSError) else str(e)


# --- the gallery --------------------------------------------------------------------------------


class Gallery:
    """One gallery file. Not thread-safe: use one Gallery per thread (SQLite handles processes)."""

    def __init__(self, path: str | Path, *, read_only: bool = False) -> None:
        """Open (or create) the gallery. ``read_only``: for a gallery on a read-only filesystem; every
        write raises GalleryError, and changes made elsewhere are not seen (SQLite's immutable mode)."""
        self.path = Path(path).expanduser()
        self.read_only = read_only
        self._depth = 0  # nesting of _txn
        try:
            if read_only:
                self._db = sqlite_utils.Database(_open_read_only(self.path), execute_plugins=False)
            else:
                # 0600 file in a 0700 folder whatever the umask; SQLite gives -wal and -shm the file's mode.
                private_dir(self.path.parent)
                create_private_file(self.path)
                self._db = sqlite_utils.Database(self.path, execute_plugins=False)
        except (sqlite3.Error, OSError) as e:
            raise GalleryError(f"{self.path}: cannot open gallery: {_why(e)}") from e
        try:
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            if read_only:
                self._check_read_only_schema()
            else:
                self._db.enable_wal()
                self._migrate()
        except sqlite3.Error as e:
            self._db.close()
            raise GalleryError(f"{self.path}: not a usable SQLite gallery: {e}") from e
        except BaseException:
            self._db.close()
            raise

    def _check_read_only_schema(self) -> None:
        found = self._stored_schema_version()
        if found != SCHEMA_VERSION:
            raise GalleryError(f"{self.path}: read-only gallery has schema version {found}, this edge-app needs "
                               f"{SCHEMA_VERSION} and cannot migrate a read-only file")

    def data_version(self) -> int:
        """SQLite's PRAGMA data_version: changes when another connection (another process, or another
        thread's Gallery) committed to the file. Cheap: no disk read."""
        return int(self._db.execute("PRAGMA data_version").fetchone()[0])

    # context manager / lifetime

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Gallery({str(self.path)!r})"

    # transactions

    @contextmanager
    def _txn(self, begin: str) -> Iterator[None]:
        # Nested use joins the outer transaction, so several operations can be made atomic together
        # (an admin command that updates a person and swaps their templates).
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        conn = self._db.conn
        try:
            conn.execute(begin)
        except sqlite3.Error as e:
            raise GalleryError(f"{self.path}: cannot start a transaction: {e}") from e
        self._depth = 1
        try:
            yield
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise GalleryError(f"{self.path}: {exc}") from exc
            raise
        finally:
            self._depth = 0

    def _write(self) -> AbstractContextManager[None]:
        if self.read_only:
            raise GalleryError(f"{self.path}: the gallery is open read-only (read-only filesystem)")
        return self._txn("BEGIN IMMEDIATE")

    def write_transaction(self) -> AbstractContextManager[None]:
        """One atomic write (BEGIN IMMEDIATE ... COMMIT, rolled back on any exception); for the sibling
        modules that keep their own tables in this file (outbox, seen commands)."""
        return self._write()

    @property
    def db(self) -> sqlite_utils.Database:
        return self._db

    def _read(self) -> AbstractContextManager[None]:
        return self._txn("BEGIN")  # a snapshot, so multi-query reads are consistent

    # schema / meta

    def _stored_schema_version(self) -> int:
        tables = set(self._db.table_names())
        if "meta" not in tables:
            if tables:  # refuse to add our tables to somebody else's database
                raise GalleryError(f"{self.path}: SQLite file is not an edge-app gallery "
                                   f"(tables: {', '.join(sorted(tables))})")
            return 0
        return self._meta_int("schema_version", default=0)

    def _meta_int(self, key: str, default: int | None = None) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        if row is None:
            if default is None:
                raise GalleryError(f"{self.path}: meta key {key!r} is missing")
            return default
        try:
            return int(row[0])
        except (TypeError, ValueError):
            raise GalleryError(f"{self.path}: meta {key!r} is not an integer: {row[0]!r}") from None

    def _migrate(self) -> None:
        found = self._stored_schema_version()
        if found == SCHEMA_VERSION:
            return
        if found > SCHEMA_VERSION:
            raise GalleryError(f"{self.path}: gallery schema version {found} is newer than this edge-app "
                               f"supports ({SCHEMA_VERSION}); upgrade edge-app")
        with self._write():
            found = self._stored_schema_version()  # another process may have migrated meanwhile
            for version in range(found, SCHEMA_VERSION):
                MIGRATIONS[version](self._db)
            self._db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)",
                             [str(SCHEMA_VERSION)])
        log.info("%s: gallery schema migrated from version %d to %d", self.path, found, SCHEMA_VERSION)

    def _bump(self) -> None:
        self._db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'gallery_version'")

    @property
    def schema_version(self) -> int:
        return self._meta_int("schema_version")

    @property
    def gallery_version(self) -> int:
        """Increases with every change to persons or templates; poll it to know when to reload."""
        return self._meta_int("gallery_version")

    # persons

    _PERSON_SQL: Final = ("SELECT p.*, (SELECT count(*) FROM templates t WHERE t.person_id = p.id) "
                          "AS n_templates, (SELECT count(*) FROM templates t WHERE t.person_id = p.id "
                          "AND t.masked = 1) AS n_masked FROM persons p")

    @staticmethod
    def _person(row: Mapping[str, Any]) -> Person:
        return Person(id=row["id"], name=row["name"], active=bool(row["active"]),
                      valid_from=row["valid_from"], valid_until=row["valid_until"],
                      schedule=row["schedule"], note=row["note"], created_at=row["created_at"],
                      updated_at=row["updated_at"], n_templates=row["n_templates"], n_masked=row["n_masked"])

    def _person_row(self, name: str) -> dict[str, Any] | None:
        rows = list(self._db.query(self._PERSON_SQL + " WHERE p.name = ?", [name.strip()]))
        return rows[0] if rows else None

    def _person_id(self, name: str) -> int:
        row = self._db.execute("SELECT id FROM persons WHERE name = ?", [name.strip()]).fetchone()
        if row is None:
            raise PersonNotFoundError(f"no person named {name.strip()!r} in gallery {self.path}")
        return int(row[0])

    def add_person(self, name: str, *, active: bool = True, valid_from: DateLike = None,
                   valid_until: DateLike = None, schedule: ScheduleLike = None,
                   note: str | None = None) -> Person:
        """Create a person; GalleryError if the name is taken."""
        name = clean_name(name)
        fields: dict[str, Any] = {"active": int(bool(active)), "valid_from": iso_or_none(valid_from, "valid_from"),
                  "valid_until": iso_or_none(valid_until, "valid_until"), "schedule": schedule_json(schedule),
                  "note": note}
        check_window(fields["valid_from"], fields["valid_until"])
        with self._write():
            if self._person_row(name) is not None:
                raise GalleryError(f"a person named {name!r} already exists in gallery {self.path}")
            now = _now()
            self._db.table("persons").insert({"name": name, **fields, "created_at": now, "updated_at": now})
            self._bump()
        log.info("gallery: added person %r", name)
        return self.get_person(name)

    def upsert_person(self, name: str, *, active: bool | _Unset = _UNSET,
                      valid_from: DateLike | _Unset = _UNSET, valid_until: DateLike | _Unset = _UNSET,
                      schedule: ScheduleLike | _Unset = _UNSET, note: str | _Unset | None = _UNSET) -> Person:
        """Create the person, or update only the fields given; the version bumps only on a change."""
        name = clean_name(name)
        given: dict[str, Any] = {}
        if not isinstance(active, _Unset):
            given["active"] = int(bool(active))
        if not isinstance(valid_from, _Unset):
            given["valid_from"] = iso_or_none(valid_from, "valid_from")
        if not isinstance(valid_until, _Unset):
            given["valid_until"] = iso_or_none(valid_until, "valid_until")
        if not isinstance(schedule, _Unset):
            given["schedule"] = schedule_json(schedule)
        if not isinstance(note, _Unset):
            given["note"] = note
        with self._write():
            row = self._person_row(name)
            if row is None:
                fields = {"active": 1, "valid_from": None, "valid_until": None, "schedule": None,
                          "note": None, **given}
                check_window(fields["valid_from"], fields["valid_until"])
                now = _now()
                self._db.table("persons").insert({"name": name, **fields, "created_at": now,
                                                  "updated_at": now})
                self._bump()
                log.info("gallery: added person %r", name)
            else:
                changed = {k: v for k, v in given.items() if row[k] != v}
                merged = {**row, **changed}
                check_window(merged["valid_from"], merged["valid_until"])
                if changed:
                    self._db.table("persons").update(row["id"], {**changed, "updated_at": _now()})
                    self._bump()
                    log.info("gallery: updated person %r: %s", name, ", ".join(sorted(changed)))
        return self.get_person(name)

    def get_person(self, name: str) -> Person:
        """The person with that name (surrounding spaces ignored); PersonNotFoundError if none."""
        row = self._person_row(name)
        if row is None:
            raise PersonNotFoundError(f"no person named {name.strip()!r} in gallery {self.path}")
        return self._person(row)

    def has_bare_template(self, name: str) -> bool:
        """Whether the person has a template of a face without a mask (any embedder); False when there is none
        of that name. Enrolment keeps everybody known by at least one such face (the thresholds are calibrated
        for bare enrolment photos)."""
        row = self._db.execute("SELECT 1 FROM templates t JOIN persons p ON p.id = t.person_id "
                               "WHERE p.name = ? AND t.masked = 0 LIMIT 1", [name.strip()]).fetchone()
        return row is not None

    def list_persons(self) -> list[Person]:
        """All persons, sorted by name."""
        return [self._person(r) for r in self._db.query(self._PERSON_SQL + " ORDER BY p.name")]

    def remove_person(self, name: str) -> int:
        """Delete a person and (by cascade) their templates; returns how many templates went."""
        with self._write():
            pid = self._person_id(name)
            n = self._db.execute("SELECT count(*) FROM templates WHERE person_id = ?", [pid]).fetchone()[0]
            self._db.execute("DELETE FROM persons WHERE id = ?", [pid])
            self._bump()
        log.info("gallery: removed person %r and %d templates", name.strip(), n)
        return int(n)

    # templates

    def _insert_templates(self, person_id: int, embeddings: npt.ArrayLike, model_sha: str,
                          masked: bool | Sequence[bool] | npt.NDArray[np.bool_], source: str | None,
                          quality: float | Sequence[float] | None) -> list[int]:
        # Validates inside the caller's transaction, so a bad input after a delete rolls it back.
        unit = unit_rows(embeddings)
        n, dim = unit.shape
        flags = [bool(m) for m in per_row(masked, n, "masked")]
        qualities = [None if q is None else float(q) for q in per_row(quality, n, "quality")]
        if any(q is not None and not np.isfinite(q) for q in qualities):
            raise GalleryInputError(f"quality values must be finite, got {qualities}")
        dims = [r[0] for r in self._db.execute(
            "SELECT DISTINCT dim FROM templates WHERE model_sha = ?", [model_sha]).fetchall()]
        if dims and dims != [dim]:
            raise TemplateModelMismatch(f"gallery {self.path}: templates of model {model_sha[:12]}... have "
                                        f"dim {dims[0]}, the new embeddings have dim {dim}")
        table, now, ids = self._db.table("templates"), _now(), []
        for row, flag, q in zip(unit, flags, qualities, strict=True):
            table.insert({"person_id": person_id, "model_sha": model_sha, "masked": int(flag), "dim": dim,
                          "embedding": row.tobytes(), "source": source, "quality": q, "created_at": now})
            if table.last_rowid is None:
                raise GalleryError(f"gallery {self.path}: template insert returned no row id")
            ids.append(int(table.last_rowid))
        self._db.execute("UPDATE persons SET updated_at = ? WHERE id = ?", [now, person_id])
        self._bump()
        return ids

    def add_templates(self, person_name: str, embeddings: npt.ArrayLike, *, model_sha: str,
                      masked: bool | Sequence[bool] | npt.NDArray[np.bool_], source: str | None = None,
                      quality: float | Sequence[float] | None = None) -> list[int]:
        """Store (n, d) embeddings, L2-normalised, for a person; returns the new template ids."""
        sha = check_sha(model_sha)
        with self._write():
            ids = self._insert_templates(self._person_id(person_name), embeddings, sha, masked, source,
                                         quality)
        log.info("gallery: added %d templates for %r (model %s)", len(ids), person_name.strip(), sha[:12])
        return ids

    def replace_person_templates(self, person_name: str, embeddings: npt.ArrayLike, *, model_sha: str,
                                 masked: bool | Sequence[bool] | npt.NDArray[np.bool_],
                                 source: str | None = None,
                                 quality: float | Sequence[float] | None = None) -> list[int]:
        """Atomically drop all the person's templates (every model) and store these instead."""
        sha = check_sha(model_sha)
        with self._write():
            pid = self._person_id(person_name)
            removed = self._db.execute("DELETE FROM templates WHERE person_id = ?", [pid]).rowcount
            ids = self._insert_templates(pid, embeddings, sha, masked, source, quality)
        log.info("gallery: replaced %d templates of %r with %d (model %s)", removed, person_name.strip(),
                 len(ids), sha[:12])
        return ids

    def load_templates(self, model_sha: str) -> TemplateSet:
        """Every template made by this embedder model (all persons, active or not)."""
        sha = check_sha(model_sha)
        with self._read():
            version = self._meta_int("gallery_version")
            rows = self._db.execute(
                "SELECT t.id, t.person_id, t.masked, t.dim, t.embedding, p.name FROM templates t "
                "JOIN persons p ON p.id = t.person_id WHERE t.model_sha = ? ORDER BY t.id", [sha]).fetchall()
        dims = {r[3] for r in rows}
        if len(dims) > 1:
            raise GalleryError(f"gallery {self.path}: model {sha[:12]}... has templates of several dims "
                               f"{sorted(dims)}")
        dim = dims.pop() if dims else 0
        blob = b"".join(r[4] for r in rows)
        if len(blob) != len(rows) * dim * 4:
            raise GalleryError(f"gallery {self.path}: corrupt template blobs for model {sha[:12]}...")
        emb = np.frombuffer(blob, dtype="<f4").astype(np.float32).reshape(len(rows), dim)
        return TemplateSet(
            model_sha=sha, embeddings=_freeze(emb),
            person_ids=_freeze(np.array([r[1] for r in rows], dtype=np.int64)),
            masked=_freeze(np.array([bool(r[2]) for r in rows], dtype=np.bool_)),
            template_ids=_freeze(np.array([r[0] for r in rows], dtype=np.int64)),
            names={int(r[1]): str(r[5]) for r in rows}, gallery_version=version)

    def template_counts(self) -> dict[str, int]:
        """{model sha: number of templates} over the whole gallery."""
        rows = self._db.execute("SELECT model_sha, count(*) FROM templates GROUP BY model_sha ORDER BY model_sha")
        return {str(r[0]): int(r[1]) for r in rows.fetchall()}

    def stale_template_counts(self, model_sha: str) -> dict[str, int]:
        """{other model sha: number of templates} for templates this model cannot use."""
        sha = check_sha(model_sha)
        rows = self._db.execute("SELECT model_sha, count(*) FROM templates WHERE model_sha != ? "
                                "GROUP BY model_sha ORDER BY model_sha", [sha]).fetchall()
        return {str(r[0]): int(r[1]) for r in rows}

    # events

    def record_event(self, kind: str, *, reason: str, person_id: int | None = None,
                     person_name: str | None = None, score: SupportsFloat | None = None,
                     mask: str | None = None, details: Mapping[str, Any] | None = None,
                     event_id: str | None = None, ts: datetime | None = None) -> str:
        """Append an access event; returns its id (a new uuid4 hex unless given). Does not change
        gallery_version. ``ts`` (aware) defaults to now."""
        if not isinstance(kind, str) or not kind.strip():
            raise GalleryInputError(f"event kind must be a non-empty string, got {kind!r}")
        if ts is not None and ts.tzinfo is None:
            raise GalleryInputError(f"event time must be timezone-aware, got {ts.isoformat()}")
        try:
            details_json = None if details is None else json.dumps(dict(details), default=json_default,
                                                                   sort_keys=True)
        except (TypeError, ValueError) as e:
            raise GalleryInputError(f"event details are not JSON-serialisable: {e}") from None
        event_id = event_id or uuid.uuid4().hex
        stamp = _now() if ts is None else ts.astimezone(UTC).isoformat(timespec="milliseconds")
        with self._write():
            self._db.table("events").insert({
                "id": event_id, "ts": stamp, "kind": kind.strip(), "person_id": person_id,
                "person_name": person_name, "score": None if score is None else float(score), "mask": mask,
                "reason": reason, "details": details_json})
        return event_id

    def prune_events(self, before: datetime) -> int:
        """Delete events older than ``before`` (aware); returns how many went."""
        if before.tzinfo is None:
            raise GalleryInputError(f"prune time must be timezone-aware, got {before.isoformat()}")
        cutoff = before.astimezone(UTC).isoformat(timespec="milliseconds")
        with self._write():
            n = int(self._db.execute("DELETE FROM events WHERE ts < ?", [cutoff]).rowcount)
        if n:
            log.info("gallery: pruned %d events older than %s", n, cutoff)
        return n

    def events(self, limit: int = 100) -> list[dict[str, Any]]:
        """The newest events first; ``details`` decoded back to a dict (or None)."""
        if limit < 0:
            raise GalleryInputError(f"limit must be >= 0, got {limit}")
        rows = self._db.query("SELECT id, ts, kind, person_id, person_name, score, mask, reason, details "
                              "FROM events ORDER BY ts DESC, rowid DESC LIMIT ?", [limit])
        return [{**r, "details": None if r["details"] is None else json.loads(r["details"])} for r in rows]

    # export

    def export(self, path: str | Path) -> Path:
        """Write persons and templates (base64 float32 little-endian) as JSON; returns the path."""
        out = Path(path).expanduser()
        with self._read():
            version = self._meta_int("gallery_version")
            persons = self.list_persons()
            templates: dict[int, list[dict[str, Any]]] = {}
            for t in self._db.query("SELECT * FROM templates ORDER BY person_id, id"):
                templates.setdefault(t["person_id"], []).append({
                    "model_sha": t["model_sha"], "masked": bool(t["masked"]), "dim": t["dim"],
                    "embedding": base64.b64encode(t["embedding"]).decode("ascii"),
                    "source": t["source"], "quality": t["quality"], "created_at": t["created_at"]})
        doc = {
            "format": EXPORT_FORMAT, "schema_version": SCHEMA_VERSION, "gallery_version": version,
            "exported_at": _now(), "embedding_encoding": "base64 float32 little-endian",
            "persons": [{
                "name": p.name, "active": p.active, "valid_from": p.valid_from, "valid_until": p.valid_until,
                "schedule": None if p.schedule is None else json.loads(p.schedule), "note": p.note,
                "created_at": p.created_at, "updated_at": p.updated_at, "templates": templates.get(p.id, []),
            } for p in persons],
        }
        # Templates are biometric data: 0600 like the gallery itself, whatever the umask; atomic, never half-written.
        write_private(out, (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        log.info("gallery: exported %d persons to %s", len(persons), out)
        return out
