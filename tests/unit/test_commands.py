"""Admin commands applied to a real SQLite gallery: valid ones change it atomically, bad ones change nothing."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from edge_app.gallery.store import Gallery
from edge_app.mqtt.commands import CommandError, CommandHandler

SHA = "cd" * 32
DIM = 128


def b64(v: np.ndarray) -> str:
    return base64.b64encode(np.asarray(v, "<f4").tobytes()).decode()


def vec(seed: int) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def templates(*seeds: int, masked: tuple[int, ...] = ()) -> dict[str, object]:
    return {"model_sha": SHA, "dim": DIM, "plain": [b64(vec(s)) for s in seeds],
            "masked": [b64(vec(s)) for s in masked]}


@pytest.fixture
def handler(tmp_path):  # type: ignore[no-untyped-def]
    unlocked: list[float | None] = []
    with Gallery(tmp_path / "g.db") as g:
        h = CommandHandler(g, SHA, DIM, "kiosk-1", unlock=unlocked.append, allow_remote_unlock=True)
        h.unlocked = unlocked  # type: ignore[attr-defined]
        yield h


def snapshot(g: Gallery) -> tuple[int, list[tuple[str, int, bool, str | None]]]:
    return g.gallery_version, [(p.name, p.n_templates, p.active, p.valid_until) for p in g.list_persons()]


def test_upsert_list_delete(handler):
    r = handler.handle("gallery.upsert", {"name": "Ana", "templates": templates(1, masked=(2, 3)),
                                          "valid_until": "2027-01-31", "schedule": [
                                              {"days": ["mon"], "start": "08:00", "end": "18:00"}]})
    assert r["templates"] == 3 and r["masked_templates"] == 2
    listed = handler.handle("gallery.list", {})
    assert [(p["name"], p["templates"], p["valid_until"]) for p in listed["persons"]] == [("Ana", 3, "2027-01-31")]
    # Fields only: templates stay; replace_templates false adds.
    handler.handle("gallery.upsert", {"name": "Ana", "active": False})
    handler.handle("gallery.upsert", {"name": "Ana", "templates": templates(4), "replace_templates": False})
    assert handler.gallery.get_person("Ana").n_templates == 4 and not handler.gallery.get_person("Ana").active
    assert handler.handle("gallery.delete", {"name": "Ana"})["templates"] == 4
    assert handler.handle("ping", {})["gallery_version"] == handler.gallery.gallery_version


@pytest.mark.parametrize("type_,args,reason,message", [
    ("gallery.upsert", {"templates": templates(1)}, "bad_args", "'name' missing"),
    ("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "model_sha": "ee" * 32}}, "model_mismatch",
     "made by embedder eeeeeeeeeeee"),
    ("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "dim": 512}}, "bad_args", "dim 512"),
    ("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "plain": ["AAAA"]}}, "bad_args",
     "3 bytes, a 128-d float32 embedding has 512"),
    ("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "plain": ["%%%"]}}, "bad_args",
     "not valid base64"),
    ("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "plain": [b64(np.full(DIM, np.nan))]}},
     "bad_args", "NaN"),
    ("gallery.upsert", {"name": "Ana", "active": "yes"}, "bad_args", "'active' must be bool"),
    ("gallery.upsert", {"name": "Ana", "valid_until": "someday"}, "bad_args", "valid_until is not an ISO-8601"),
    ("gallery.upsert", {"name": "Ana", "schedule": [{"days": ["funday"], "start": "8", "end": "9"}]}, "bad_args",
     "unknown day"),
    ("gallery.upsert", {"name": "Ana", "colour": "red"}, "bad_args", "unknown field"),
    ("gallery.upsert", {"name": "\x07bell"}, "bad_args", "control characters"),
    ("gallery.upsert", {"name": "Ana", "templates": templates(*range(70))}, "bad_args", "the limit is 64"),
    ("gallery.upsert", {"name": "Ana", "photos": ["aGk="]}, "unsupported", "cannot embed photos"),
    ("gallery.delete", {"name": "Nobody"}, "not_found", "no person named 'Nobody'"),
    ("gallery.replace", {"version": 3, "persons": [{"name": "A", "templates": templates(1)},
                                                   {"name": "A", "templates": templates(2)}]}, "bad_args",
     "names appear twice"),
    ("gallery.replace", {"version": 3, "persons": [{"name": "A", "photos": []}]}, "bad_args",
     "'photos' are not accepted here"),
    ("gallery.replace", {"version": "3", "persons": []}, "bad_args", "'version' must be int"),
    ("door.unlock", {"seconds": 600}, "bad_args", "'seconds' must be 0.2..60"),
    ("self.destruct", {}, "unknown_command", "unknown command type 'self.destruct'"),
])
def test_bad_commands_change_nothing(handler, type_, args, reason, message):
    handler.handle("gallery.upsert", {"name": "Ana", "templates": templates(1), "valid_until": "2027-01-01"})
    before = snapshot(handler.gallery)
    with pytest.raises(CommandError, match=message) as e:
        handler.handle(type_, args)
    assert e.value.reason == reason
    assert snapshot(handler.gallery) == before


def test_replace_is_atomic_and_versioned(handler):
    handler.handle("gallery.upsert", {"name": "Old", "templates": templates(9)})
    r = handler.handle("gallery.replace", {"version": 7, "persons": [
        {"name": "Ana", "templates": templates(1, masked=(2,))}, {"name": "Bo", "templates": templates(3)}]})
    assert r["replaced_version"] == 7 and r["persons"] == 2
    assert [p.name for p in handler.gallery.list_persons()] == ["Ana", "Bo"]
    before = snapshot(handler.gallery)
    with pytest.raises(CommandError, match=r"persons\[1\].*'name' missing"):
        handler.handle("gallery.replace", {"version": 8, "persons": [{"name": "Cy", "templates": templates(4)},
                                                                     {"templates": templates(5)}]})
    assert snapshot(handler.gallery) == before


def test_remote_unlock_only_when_enabled(handler, tmp_path):
    assert handler.handle("door.unlock", {"seconds": 2})["unlocked"]
    assert handler.unlocked == [2.0]
    with Gallery(tmp_path / "other.db") as g:
        off = CommandHandler(g, SHA, DIM, "kiosk-2", unlock=handler.unlocked.append, allow_remote_unlock=False)
        with pytest.raises(CommandError, match="remote unlock is disabled") as e:
            off.handle("door.unlock", {})
        assert e.value.reason == "forbidden" and handler.unlocked == [2.0]


def test_photos_are_embedded_on_the_device(tmp_path, pipeline, model_set, faces_dev):
    from edge_app.cli.run import photo_embedder
    from edge_app.mqtt.commands import CommandError as CE

    embed = photo_embedder(pipeline, 3)  # the daemon's own
    with Gallery(tmp_path / "g.db") as g:
        h = CommandHandler(g, model_set.embedder_sha, pipeline.embedder.dim, "k", embed_photo=embed)
        photo = base64.b64encode((faces_dev / "obama.jpg").read_bytes()).decode()
        r = h.handle("gallery.upsert", {"name": "Obama", "photos": [photo]})
        assert (r["templates"], r["masked_templates"]) == (4, 3)
        group = base64.b64encode((faces_dev / "dlib_2008_002506.jpg").read_bytes()).decode()
        with pytest.raises(CE, match=r"photos\[1\]: 3 faces found") as e:
            h.handle("gallery.upsert", {"name": "Biden", "photos": [photo, group]})
        assert e.value.reason == "bad_photo" and [p.name for p in g.list_persons()] == ["Obama"]
        junk = base64.b64encode(b"not an image").decode()
        with pytest.raises(CE, match=r"photos\[0\]: cannot decode image"):
            h.handle("gallery.upsert", {"name": "Biden", "photos": [junk]})


def test_a_photo_that_shows_a_mask_is_a_masked_template_and_never_a_persons_only_face(tmp_path, pipeline, model_set,
                                                                                   faces_dev, masked_photo):
    """Filed as `edge-app enroll` files it (a masked template, no synthetic masks drawn over a real one), and
    a person known only from masked faces is refused: the thresholds are calibrated for bare enrolment photos."""
    from edge_app.cli.run import photo_embedder

    embed = photo_embedder(pipeline, 3)
    masked = base64.b64encode(masked_photo.read_bytes()).decode()
    bare = base64.b64encode((faces_dev / "obama.jpg").read_bytes()).decode()
    with Gallery(tmp_path / "g.db") as g:
        h = CommandHandler(g, model_set.embedder_sha, pipeline.embedder.dim, "k", embed_photo=embed)
        with pytest.raises(CommandError, match="no face without a mask") as e:
            h.handle("gallery.upsert", {"name": "Ann", "photos": [masked]})
        assert e.value.reason == "bad_photo" and g.list_persons() == []
        r = h.handle("gallery.upsert", {"name": "Ann", "photos": [masked, bare]})
        assert (r["templates"], r["masked_templates"]) == (5, 4)  # 1 bare + its 3 synthetic + the real masked one
        rows = g.db.execute("SELECT masked FROM templates ORDER BY id").fetchall()
        assert [int(x[0]) for x in rows] == [0, 1, 1, 1, 1]
        # Added to a person who keeps a bare template: fine; replacing all of them with it: refused.
        r = h.handle("gallery.upsert", {"name": "Ann", "photos": [masked], "replace_templates": False})
        assert (r["templates"], r["masked_templates"]) == (6, 5)
        with pytest.raises(CommandError, match="no face without a mask"):
            h.handle("gallery.upsert", {"name": "Ann", "photos": [masked]})
        assert g.get_person("Ann").n_templates == 6
        # Templates sent by an admin tool: the same rule.
        with pytest.raises(CommandError, match="no face without a mask"):
            h.handle("gallery.upsert", {"name": "Bo", "templates": {
                "model_sha": model_set.embedder_sha, "dim": pipeline.embedder.dim, "plain": [],
                "masked": [b64(np.eye(1, pipeline.embedder.dim, dtype=np.float32)[0])]}})
