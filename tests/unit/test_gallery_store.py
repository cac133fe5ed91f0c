"""The SQLite gallery, on real files under tmp_path."""

from __future__ import annotations

import base64
import json
import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from edge_app.errors import (
    EdgeAppError,
    GalleryError,
    GalleryInputError,
    PersonNotFoundError,
    TemplateModelMismatch,
)
from edge_app.gallery.fields import MAX_NAME_LEN
from edge_app.gallery.schema import SCHEMA_VERSION
from edge_app.gallery.store import Gallery

SHA_A = "a" * 64
SHA_B = "0123456789abcdef" * 4
DIM = 128


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20240601)


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    with Gallery(tmp_path / "gallery.db") as g:
        yield g


def unit_f32(x: np.ndarray) -> bytes:
    x = np.asarray(x, np.float64)
    return bytes((x / np.linalg.norm(x, axis=1, keepdims=True)).astype("<f4").tobytes())


def raw_count(path: Path, sql: str) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute(sql).fetchone()[0])
    finally:
        conn.close()


# --- opening --------------------------------------------------------------------------------------


def test_open_creates_parent_dirs_wal_and_meta(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "g.db"
    with Gallery(path) as g:
        assert g.schema_version == SCHEMA_VERSION
        assert g.gallery_version == 0
    assert path.is_file()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    finally:
        conn.close()
    assert {"persons", "templates", "events", "meta"} <= tables


def test_reopen_keeps_data_and_versions(tmp_path: Path, rng: np.random.Generator) -> None:
    path = tmp_path / "g.db"
    with Gallery(path) as g:
        g.add_person("Alice")
        g.add_templates("Alice", rng.normal(size=(2, DIM)), model_sha=SHA_A, masked=False)
        version = g.gallery_version
    with Gallery(path) as g:
        assert g.gallery_version == version == 2
        assert g.schema_version == SCHEMA_VERSION
        assert [p.name for p in g.list_persons()] == ["Alice"]
        assert g.get_person("Alice").n_templates == 2


def test_non_sqlite_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    junk = b"\xff\xd8\xff\xe0 definitely not a database " * 100
    path.write_bytes(junk)
    with pytest.raises(GalleryError, match=re.escape(str(path))):
        Gallery(path)
    assert path.read_bytes() == junk  # not touched


def test_foreign_sqlite_database_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE songs (title TEXT)")
    conn.commit()
    conn.close()
    with pytest.raises(GalleryError, match=r"other\.db.*not an edge-app gallery.*songs"):
        Gallery(path)


def test_schema_newer_than_code_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    Gallery(path).close()
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", [str(SCHEMA_VERSION + 5)])
    conn.commit()
    conn.close()
    with pytest.raises(GalleryError) as exc:
        Gallery(path)
    msg = str(exc.value)
    assert str(path) in msg
    assert f"version {SCHEMA_VERSION + 5}" in msg
    assert f"({SCHEMA_VERSION})" in msg


# --- persons --------------------------------------------------------------------------------------


def test_person_round_trip(gallery: Gallery) -> None:
    schedule = {"mon": [["08:00", "18:00"]], "sat": []}
    added = gallery.add_person("  Alice Smith ", active=False, valid_from="2024-01-01",
                               valid_until="2024-12-31T23:59:59+00:00", schedule=schedule, note="contractor")
    got = gallery.get_person("Alice Smith")
    assert got == added
    assert got.name == "Alice Smith"
    assert got.active is False
    assert (got.valid_from, got.valid_until) == ("2024-01-01", "2024-12-31T23:59:59+00:00")
    assert got.schedule is not None and json.loads(got.schedule) == schedule
    assert got.note == "contractor"
    assert got.n_templates == 0
    assert got.created_at == got.updated_at and got.created_at.endswith("+00:00")
    gallery.add_person("Bob")
    assert [p.name for p in gallery.list_persons()] == ["Alice Smith", "Bob"]
    assert gallery.get_person(" Bob ").active is True


def test_duplicate_name_is_refused(gallery: Gallery) -> None:
    gallery.add_person("Alice")
    version = gallery.gallery_version
    with pytest.raises(GalleryError, match=r"Alice.*already exists"):
        gallery.add_person(" Alice")
    assert gallery.gallery_version == version
    assert len(gallery.list_persons()) == 1


@pytest.mark.parametrize(("name", "problem"), [
    ("", "empty"),
    ("   \t", "empty"),
    ("x" * (MAX_NAME_LEN + 1), "limit is 128"),
    ("Ali\nce", "control characters"),
    (42, "must be a string"),
])
def test_bad_names(gallery: Gallery, name: object, problem: str) -> None:
    with pytest.raises(GalleryInputError, match=problem) as exc:
        gallery.add_person(name)  # type: ignore[arg-type]
    assert isinstance(exc.value, ValueError)
    assert gallery.list_persons() == []


def test_longest_allowed_name(gallery: Gallery) -> None:
    assert gallery.add_person("y" * MAX_NAME_LEN).name == "y" * MAX_NAME_LEN


def test_bad_dates_and_schedule(gallery: Gallery) -> None:
    with pytest.raises(GalleryInputError, match="valid_from"):
        gallery.add_person("A", valid_from="next tuesday")
    with pytest.raises(GalleryInputError, match="after valid_until"):
        gallery.add_person("A", valid_from="2024-06-01", valid_until="2024-05-01")
    with pytest.raises(GalleryInputError, match="schedule is not valid JSON"):
        gallery.add_person("A", schedule="{mon: 8-18")
    assert gallery.list_persons() == []


def test_missing_person_names_the_person(gallery: Gallery, rng: np.random.Generator) -> None:
    for call in (lambda: gallery.get_person("Zed"), lambda: gallery.remove_person("Zed"),
                 lambda: gallery.add_templates("Zed", rng.normal(size=(1, DIM)), model_sha=SHA_A,
                                               masked=False)):
        with pytest.raises(PersonNotFoundError, match="'Zed'") as exc:
            call()
        assert isinstance(exc.value, KeyError)
        assert isinstance(exc.value, EdgeAppError)


def test_upsert_creates_then_updates_only_given_fields(gallery: Gallery) -> None:
    created = gallery.upsert_person("Carol", note="night shift")
    assert (created.active, created.note) == (True, "night shift")
    v = gallery.gallery_version
    updated = gallery.upsert_person("Carol", active=False)
    assert (updated.active, updated.note) == (False, "night shift")
    assert updated.created_at == created.created_at
    assert gallery.gallery_version == v + 1
    same = gallery.upsert_person("Carol", active=False)  # no change, no bump
    assert same == updated
    assert gallery.gallery_version == v + 1
    assert gallery.upsert_person("Carol", note=None).note is None
    with pytest.raises(GalleryInputError, match="after valid_until"):
        gallery.upsert_person("Carol", valid_from="2030-01-01", valid_until="2029-01-01")


# --- templates ------------------------------------------------------------------------------------


def test_template_round_trip(gallery: Gallery, rng: np.random.Generator) -> None:
    alice = gallery.add_person("Alice")
    bob = gallery.add_person("Bob")
    ea = rng.normal(size=(3, DIM)) * 7.0  # not unit length on purpose
    eb = rng.normal(size=(2, DIM)).astype(np.float32)
    ids_a = gallery.add_templates("Alice", ea, model_sha=SHA_A, masked=[False, True, False], source="a.jpg",
                                  quality=[0.9, 0.8, 0.7])
    ids_b = gallery.add_templates("Bob", eb, model_sha=SHA_A.upper(), masked=True)
    ts = gallery.load_templates(SHA_A)
    assert ts.model_sha == SHA_A
    assert ts.embeddings.dtype == np.float32 and ts.embeddings.shape == (5, DIM) and ts.dim == DIM
    assert ts.embeddings.tobytes() == unit_f32(ea) + unit_f32(eb)
    np.testing.assert_allclose(np.linalg.norm(ts.embeddings, axis=1), 1.0, rtol=1e-6)
    assert ts.template_ids.tolist() == ids_a + ids_b
    assert ts.person_ids.tolist() == [alice.id] * 3 + [bob.id] * 2
    assert ts.masked.tolist() == [False, True, False, True, True]
    assert ts.names == {alice.id: "Alice", bob.id: "Bob"}
    assert ts.gallery_version == gallery.gallery_version
    assert gallery.get_person("Alice").n_templates == 3
    with pytest.raises(ValueError, match="read-only"):
        ts.embeddings[0, 0] = 1.0


def test_masked_and_quality_lengths_must_match(gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.add_person("Alice")
    e = rng.normal(size=(3, DIM))
    with pytest.raises(GalleryInputError, match="masked has 2 values for 3"):
        gallery.add_templates("Alice", e, model_sha=SHA_A, masked=[True, False])
    with pytest.raises(GalleryInputError, match="quality has 1 values for 3"):
        gallery.add_templates("Alice", e, model_sha=SHA_A, masked=False, quality=[0.5])
    assert len(gallery.load_templates(SHA_A)) == 0


@pytest.mark.parametrize(("make", "problem"), [
    (lambda r: np.vstack([r.normal(size=(2, DIM)), np.full((1, DIM), np.nan)]), r"rows \[2\].*NaN"),
    (lambda r: np.where(np.arange(DIM) == 5, np.inf, r.normal(size=(2, DIM))), r"rows \[0, 1\].*inf"),
    (lambda r: r.normal(size=DIM), "must be 2-D"),
    (lambda r: r.normal(size=(1, 2, DIM)), "must be 2-D"),
    (lambda r: np.vstack([r.normal(size=(1, DIM)), np.zeros((1, DIM))]), r"rows \[1\] are all zeros"),
    (lambda r: np.zeros((0, DIM)), "empty"),
    (lambda r: r.integers(1, 5, size=(2, DIM)), "floating point"),
])
def test_bad_embeddings_store_nothing(gallery: Gallery, rng: np.random.Generator,
                                      make: Callable[[np.random.Generator], np.ndarray],
                                      problem: str) -> None:
    gallery.add_person("Alice")
    version = gallery.gallery_version
    with pytest.raises(GalleryInputError, match=problem):
        gallery.add_templates("Alice", make(rng), model_sha=SHA_A, masked=False)
    assert gallery.gallery_version == version
    assert gallery.get_person("Alice").n_templates == 0


@pytest.mark.parametrize("sha", ["abc", "g" * 64, "a" * 63, "a" * 65, ""])
def test_bad_model_sha(gallery: Gallery, rng: np.random.Generator, sha: str) -> None:
    gallery.add_person("Alice")
    with pytest.raises(GalleryInputError, match="64 hex"):
        gallery.add_templates("Alice", rng.normal(size=(1, DIM)), model_sha=sha, masked=False)


def test_dim_mismatch_within_a_model(gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.add_person("Alice")
    gallery.add_person("Bob")
    gallery.add_templates("Alice", rng.normal(size=(2, DIM)), model_sha=SHA_A, masked=False)
    with pytest.raises(TemplateModelMismatch, match=rf"dim {DIM}.*dim 64") as exc:
        gallery.add_templates("Bob", rng.normal(size=(1, 64)), model_sha=SHA_A, masked=False)
    assert isinstance(exc.value, ValueError)
    # Another model may have another size.
    gallery.add_templates("Bob", rng.normal(size=(1, 64)), model_sha=SHA_B, masked=False)
    assert gallery.load_templates(SHA_B).dim == 64


def test_other_model_templates_are_never_loaded_and_count_as_stale(
        gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.add_person("Alice")
    gallery.add_person("Bob")
    gallery.add_templates("Alice", rng.normal(size=(2, DIM)), model_sha=SHA_A, masked=False)
    old = gallery.add_templates("Bob", rng.normal(size=(3, 64)), model_sha=SHA_B, masked=True)
    ts = gallery.load_templates(SHA_A)
    assert len(ts) == 2
    assert not set(ts.template_ids.tolist()) & set(old)
    assert set(ts.names.values()) == {"Alice"}
    assert gallery.stale_template_counts(SHA_A) == {SHA_B: 3}
    assert gallery.stale_template_counts(SHA_B) == {SHA_A: 2}
    unknown = "f" * 64
    assert len(gallery.load_templates(unknown)) == 0
    assert gallery.load_templates(unknown).embeddings.shape == (0, 0)
    assert gallery.stale_template_counts(unknown) == {SHA_A: 2, SHA_B: 3}


def test_remove_person_cascades_to_templates(gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.add_person("Alice")
    gallery.add_person("Bob")
    gallery.add_templates("Alice", rng.normal(size=(3, DIM)), model_sha=SHA_A, masked=False)
    gallery.add_templates("Alice", rng.normal(size=(1, 64)), model_sha=SHA_B, masked=False)
    kept = gallery.add_templates("Bob", rng.normal(size=(2, DIM)), model_sha=SHA_A, masked=False)
    assert gallery.remove_person("Alice") == 4
    assert [p.name for p in gallery.list_persons()] == ["Bob"]
    assert gallery.load_templates(SHA_A).template_ids.tolist() == kept
    assert raw_count(gallery.path, "SELECT count(*) FROM templates") == 2


def test_removed_person_id_is_never_reused(gallery: Gallery) -> None:
    gallery.add_person("Alice")
    bob = gallery.add_person("Bob")
    gallery.remove_person("Bob")
    assert gallery.add_person("Carol").id > bob.id


def test_gallery_version_bumps_on_every_person_or_template_change(
        gallery: Gallery, rng: np.random.Generator) -> None:
    steps: list[Callable[[], object]] = [
        lambda: gallery.add_person("Alice"),
        lambda: gallery.upsert_person("Bob"),
        lambda: gallery.upsert_person("Bob", note="x"),
        lambda: gallery.add_templates("Alice", rng.normal(size=(2, DIM)), model_sha=SHA_A, masked=False),
        lambda: gallery.replace_person_templates("Alice", rng.normal(size=(1, DIM)), model_sha=SHA_A,
                                                 masked=True),
        lambda: gallery.remove_person("Bob"),
    ]
    for i, step in enumerate(steps, start=1):
        step()
        assert gallery.gallery_version == i
    # Reads and events leave it alone.
    gallery.get_person("Alice")
    gallery.list_persons()
    gallery.load_templates(SHA_A)
    gallery.record_event("access", reason="granted")
    assert gallery.gallery_version == len(steps)


def test_version_change_is_visible_to_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    with Gallery(path) as kiosk, Gallery(path) as enrol:
        before = kiosk.gallery_version
        enrol.add_person("Dave")
        assert kiosk.gallery_version == before + 1
        assert kiosk.get_person("Dave").name == "Dave"


def test_replace_is_atomic(gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.add_person("Alice")
    gallery.add_person("Bob")
    gallery.add_templates("Alice", rng.normal(size=(3, DIM)), model_sha=SHA_A, masked=False)
    gallery.add_templates("Bob", rng.normal(size=(1, DIM)), model_sha=SHA_A, masked=False)
    before = gallery.load_templates(SHA_A)
    version = gallery.gallery_version
    bad = rng.normal(size=(2, DIM))
    bad[1, 3] = np.nan
    # The old templates are deleted before the new rows are checked; both failures must roll back.
    with pytest.raises(GalleryInputError, match="NaN"):
        gallery.replace_person_templates("Alice", bad, model_sha=SHA_A, masked=False)
    with pytest.raises(TemplateModelMismatch):
        gallery.replace_person_templates("Alice", rng.normal(size=(2, 64)), model_sha=SHA_A, masked=False)
    after = gallery.load_templates(SHA_A)
    assert after.template_ids.tolist() == before.template_ids.tolist()
    assert after.embeddings.tobytes() == before.embeddings.tobytes()
    assert gallery.gallery_version == version


def test_replace_swaps_all_templates_of_the_person(gallery: Gallery, rng: np.random.Generator) -> None:
    gallery.add_person("Alice")
    gallery.add_templates("Alice", rng.normal(size=(3, DIM)), model_sha=SHA_A, masked=False)
    gallery.add_templates("Alice", rng.normal(size=(2, 64)), model_sha=SHA_B, masked=False)
    new = rng.normal(size=(2, DIM))
    ids = gallery.replace_person_templates("Alice", new, model_sha=SHA_A, masked=[True, False])
    ts = gallery.load_templates(SHA_A)
    assert ts.template_ids.tolist() == ids
    assert ts.embeddings.tobytes() == unit_f32(new)
    assert ts.masked.tolist() == [True, False]
    assert gallery.stale_template_counts(SHA_A) == {}
    assert gallery.get_person("Alice").n_templates == 2


# --- events and export ----------------------------------------------------------------------------


def test_events_round_trip_newest_first(gallery: Gallery) -> None:
    first = gallery.record_event("access", person_id=7, person_name="Alice", score=np.float32(0.83),
                                 mask="masked", reason="granted", details={"cam": 0, "d": np.float64(0.5)})
    second = gallery.record_event("unknown", reason="no match", details=None)
    assert re.fullmatch(r"[0-9a-f]{32}", first) and first != second
    events = gallery.events()
    assert [e["id"] for e in events] == [second, first]
    e = events[1]
    assert (e["kind"], e["person_id"], e["person_name"], e["mask"], e["reason"]) == (
        "access", 7, "Alice", "masked", "granted")
    assert e["score"] == pytest.approx(0.83, abs=1e-6)
    assert e["details"] == {"cam": 0, "d": 0.5}
    assert events[0]["details"] is None
    assert gallery.events(limit=1)[0]["id"] == second
    with pytest.raises(GalleryInputError, match="kind"):
        gallery.record_event("  ", reason="x")
    with pytest.raises(GalleryInputError, match="details"):
        gallery.record_event("access", reason="x", details={"f": object()})
    assert len(gallery.events()) == 2


def test_export_json(gallery: Gallery, tmp_path: Path, rng: np.random.Generator) -> None:
    gallery.add_person("Alice", schedule={"mon": [["08:00", "18:00"]]}, note="n")
    gallery.add_person("Bob", active=False)
    e = rng.normal(size=(2, DIM))
    gallery.add_templates("Alice", e, model_sha=SHA_A, masked=[False, True], source="alice.jpg",
                          quality=0.75)
    out = gallery.export(tmp_path / "exports" / "g.json")
    doc = json.loads(out.read_text(encoding="utf-8"))
    assert doc["format"] == "edge-app-gallery"
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["gallery_version"] == gallery.gallery_version
    alice, bob = doc["persons"]
    assert (alice["name"], alice["active"], alice["note"]) == ("Alice", True, "n")
    assert alice["schedule"] == {"mon": [["08:00", "18:00"]]}
    assert (bob["name"], bob["active"], bob["templates"]) == ("Bob", False, [])
    ts = alice["templates"]
    assert [t["masked"] for t in ts] == [False, True]
    assert {t["model_sha"] for t in ts} == {SHA_A}
    assert {(t["dim"], t["source"], t["quality"]) for t in ts} == {(DIM, "alice.jpg", 0.75)}
    decoded = b"".join(base64.b64decode(t["embedding"]) for t in ts)
    assert decoded == unit_f32(e)
    assert not list(out.parent.glob("*.tmp"))


def test_event_ids_times_and_retention(tmp_path):
    from datetime import UTC, datetime, timedelta

    from edge_app.errors import GalleryInputError

    with Gallery(tmp_path / "g.db") as g:
        old = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
        g.record_event("access", reason="granted", event_id="abc", ts=old)
        g.record_event("access", reason="unknown_face")
        assert [e["id"] for e in g.events()][-1] == "abc"
        with pytest.raises(GalleryInputError, match="timezone-aware"):
            g.record_event("access", reason="x", ts=datetime(2026, 1, 1))
        assert g.prune_events(old + timedelta(days=1)) == 1
        assert [e["reason"] for e in g.events()] == ["unknown_face"]
        with pytest.raises(GalleryInputError, match="timezone-aware"):
            g.prune_events(datetime(2026, 1, 1))


def test_nested_operations_are_one_transaction(tmp_path):
    import numpy as np

    sha = "ab" * 32
    with Gallery(tmp_path / "g.db") as g:
        g.add_person("Ana")
        g.add_templates("Ana", np.ones((1, 4), np.float32), model_sha=sha, masked=False)
        version = g.gallery_version
        with pytest.raises(GalleryInputError), g.write_transaction():
            g.upsert_person("Ana", note="moved to building B")
            g.replace_person_templates("Ana", np.full((1, 4), np.nan, np.float32), model_sha=sha, masked=False)
        # The failed template swap took the note change with it.
        assert g.get_person("Ana").note is None and g.get_person("Ana").n_templates == 1
        assert g.gallery_version == version
        with g.write_transaction():
            g.upsert_person("Ana", note="moved")
            g.replace_person_templates("Ana", np.ones((2, 4), np.float32), model_sha=sha, masked=False)
        assert g.get_person("Ana").note == "moved" and g.get_person("Ana").n_templates == 2


# --- file modes, change detection, read-only filesystems ------------------------------------------


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_gallery_files_and_new_folders_are_private_whatever_the_umask(tmp_path: Path, umask: int) -> None:
    import stat

    path = tmp_path / "new" / "sub" / "gallery.db"
    old = os.umask(umask)
    try:
        with Gallery(path) as g:
            g.add_person("Ann")  # the -wal and -shm files exist while it is open
            modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in path.parent.iterdir()}
            assert modes == {"gallery.db": 0o600, "gallery.db-wal": 0o600, "gallery.db-shm": 0o600}
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "new").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "new" / "sub").stat().st_mode) == 0o700


def test_existing_folders_keep_their_mode(tmp_path: Path) -> None:
    import stat

    shared = tmp_path / "var-lib"
    shared.mkdir(mode=0o750)
    os.chmod(shared, 0o750)  # as systemd-tmpfiles makes /var/lib/edge-app
    with Gallery(shared / "gallery.db"):
        pass
    assert stat.S_IMODE(shared.stat().st_mode) == 0o750


def test_data_version_moves_only_when_another_connection_commits(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as kiosk, Gallery(tmp_path / "g.db") as admin:
        v0 = kiosk.data_version()
        kiosk.add_person("Own")  # our own commits do not count: the kiosk knows about them
        assert kiosk.data_version() == v0
        admin.remove_person("Own")
        v1 = kiosk.data_version()
        assert v1 != v0
        assert kiosk.data_version() == v1  # stable until the next foreign commit


def test_read_only_filesystem_opens_read_only_and_refuses_writes(tmp_path: Path, read_only_bind) -> None:
    from edge_app.gallery.kiosk import open_for_kiosk, storage_read_only

    src = tmp_path / "src"
    with Gallery(src / "gallery.db") as g:
        g.add_person("Ann", valid_until="2030-01-01")
    ro = read_only_bind(src) / "gallery.db"
    with pytest.raises(GalleryError, match="unable to open database file"):
        Gallery(ro)  # what the kiosk met before: it refused to start
    assert storage_read_only(ro) and not storage_read_only(src / "gallery.db")
    with open_for_kiosk(ro) as g:
        assert g.read_only
        assert [(p.name, p.valid_until) for p in g.list_persons()] == [("Ann", "2030-01-01")]
        with pytest.raises(GalleryError, match="open read-only"):
            g.record_event("access", reason="granted")
        with pytest.raises(GalleryError, match="open read-only"):
            g.add_person("Bob")
    assert sorted(p.name for p in ro.parent.iterdir()) == ["gallery.db"]  # nothing was written beside it


def test_open_for_kiosk_does_not_hide_other_errors(tmp_path: Path) -> None:
    from edge_app.gallery.kiosk import open_for_kiosk

    bad = tmp_path / "g.db"
    bad.write_bytes(b"not sqlite at all" * 100)
    with pytest.raises(GalleryError, match="g.db"):
        open_for_kiosk(bad)


def test_has_bare_template_counts_only_faces_without_a_mask(tmp_path: Path, rng: np.random.Generator) -> None:
    with Gallery(tmp_path / "g.db") as g:
        g.add_person("Ann")
        assert not g.has_bare_template("Ann") and not g.has_bare_template("Nobody")
        g.add_templates("Ann", rng.normal(size=(2, 8)), model_sha=SHA_A, masked=True)
        assert not g.has_bare_template(" Ann ")
        g.add_templates("Ann", rng.normal(size=(1, 8)), model_sha=SHA_B, masked=False)  # any embedder counts
        assert g.has_bare_template(" Ann ")


def test_the_bare_face_rule_every_enrolment_path_keeps(tmp_path: Path, rng: np.random.Generator) -> None:
    from edge_app.enrol import lacks_bare_face

    with Gallery(tmp_path / "g.db") as g:
        assert lacks_bare_face(g, "Ann", plain=0, replacing=False)  # new person, masked shots only
        assert not lacks_bare_face(g, "Ann", plain=1, replacing=False)
        g.add_person("Ann")
        g.add_templates("Ann", rng.normal(size=(1, 8)), model_sha=SHA_A, masked=False)
        assert not lacks_bare_face(g, "Ann", plain=0, replacing=False)  # masked shots next to a kept bare face
        assert lacks_bare_face(g, "Ann", plain=0, replacing=True)  # replacing would drop the bare face
        assert not lacks_bare_face(g, "Ann", plain=2, replacing=True)
