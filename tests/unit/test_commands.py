"""Admin commands applied to a real SQLite gallery: valid ones change it atomically, bad ones change nothing."""

from __future__ import annotations

import base64
import json

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
    # Only a masked template may leave out trailing zeros; a short bare one is a broken sender.
    ("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "plain": [b64(vec(1)[:100])]}}, "bad_args",
     r"plain\[0\]: 400 bytes, a 128-d float32 embedding has 512$"),
    ("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "masked": [b64(np.ones(DIM + 1))]}},
     "bad_args", "516 bytes, a 128-d float32 embedding has 512 \\(or fewer, a multiple of 4"),
    ("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "masked": ["AAAAAA=="]}}, "bad_args",
     r"masked\[0\]: embedding has NaN/inf values or is all zero"),
    ("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "masked": ["AAAAAAA="]}}, "bad_args",
     r"masked\[0\]: 5 bytes"),
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


def test_a_masked_template_may_leave_out_its_trailing_zeros(handler):
    """A fused embedder's masked template is zero past its first part: sent without those zeros it must
    arrive whole, value for value (the kiosk puts the zeros back)."""
    fused_masked = np.zeros(DIM, np.float32)
    fused_masked[:32] = vec(5)[:32]
    short = base64.b64encode(fused_masked[:32].astype("<f4").tobytes()).decode()
    assert len(short) < len(b64(fused_masked)) / 3
    handler.handle("gallery.upsert", {"name": "Ana", "templates": {**templates(1), "masked": [short]}})
    stored = handler.gallery.load_templates(SHA)
    assert stored.masked.tolist() == [False, True]
    np.testing.assert_allclose(stored.embeddings[1], fused_masked / np.linalg.norm(fused_masked), atol=1e-7)
    assert not stored.embeddings[1][32:].any()


def test_edge_admin_replace_sends_masked_templates_short_and_the_kiosk_stores_them_exactly(handler, tmp_path):
    from edge_app.admin import _replace_args, build_parser

    rng = np.random.default_rng(3)
    plain = rng.normal(size=(3, DIM)).astype(np.float32)
    masked = np.zeros((9, DIM), np.float32)
    masked[:, :24] = rng.normal(size=(9, 24))  # a fused embedder's masked templates: zeros past the first part
    with Gallery(tmp_path / "site.db") as g:
        g.add_person("Ana")
        g.add_templates("Ana", np.concatenate([plain, masked]), model_sha=SHA, masked=[False] * 3 + [True] * 9)
        g.export(tmp_path / "site.json")
        exported = g.load_templates(SHA).embeddings

    def replace_args(*extra: str) -> dict[str, object]:
        return _replace_args(build_parser().parse_args(["replace", str(tmp_path / "site.json"), *extra]))

    short, whole = replace_args(), replace_args("--full-templates")
    assert len(json.dumps(short)) < 0.6 * len(json.dumps(whole))  # 9 of 12 templates: 24 of 128 values sent
    handler.handle("gallery.replace", {**whole, "version": 1})
    from_whole = handler.gallery.load_templates(SHA).embeddings
    handler.handle("gallery.replace", {**short, "version": 2})
    from_short = handler.gallery.load_templates(SHA).embeddings
    np.testing.assert_array_equal(from_short, from_whole)
    np.testing.assert_allclose(from_short, exported, atol=1e-7)
    assert not from_short[3:, 24:].any()


def test_gallery_capture_checks_its_arguments_then_asks_the_camera_loop(handler):
    with pytest.raises(CommandError, match="takes no camera shots") as e:
        handler.handle("gallery.capture", {"name": "Ana"})
    assert e.value.reason == "unsupported"
    asked: list[tuple[str, float, int]] = []

    def capture(name: str, seconds: float, shots: int) -> dict[str, object]:
        if asked:
            raise CommandError("busy", "gallery.capture: a capture of 'Ana' is running (12 s left)")
        asked.append((name, seconds, shots))
        return {"capturing": name, "seconds": seconds, "shots": shots}

    handler.capture = capture
    for args, message in [({}, "'name' missing"), ({"name": "Ana", "seconds": 2}, "'seconds' must be 5..120, got 2"),
                          ({"name": "Ana", "shots": 9}, "'shots' must be 1..5, got 9"),
                          ({"name": "Ana", "shots": True}, "must be a number, got a boolean"),
                          ({"name": "Ana", "photos": []}, "unknown field"), ({"name": " "}, "name")]:
        with pytest.raises(CommandError, match=message) as e:
            handler.handle("gallery.capture", args)
        assert e.value.reason == "bad_args"
    assert asked == []
    assert handler.handle("gallery.capture", {"name": " Ana "}) == {"capturing": "Ana", "seconds": 20.0, "shots": 3}
    with pytest.raises(CommandError, match="running") as e:
        handler.handle("gallery.capture", {"name": "Bo", "seconds": 60, "shots": 1})
    assert e.value.reason == "busy" and asked == [("Ana", 20.0, 3)]


def test_a_capture_held_back_on_the_way_is_refused(handler):
    """Whoever stands at the door when a capture arrives is enrolled: one issued more than 15 s ago (a broker that
    held it back inside the command window) is refused as expired, a fresh one goes through."""
    import time

    handler.capture = lambda name, seconds, shots: {"capturing": name}
    with pytest.raises(CommandError, match=r"issued 2\d s ago; a capture must arrive within 15 s") as e:
        handler.handle("gallery.capture", {"name": "Ana"}, issued_at=time.time() - 25)
    assert e.value.reason == "expired"
    assert handler.handle("gallery.capture", {"name": "Ana"}, issued_at=time.time() - 2) == {"capturing": "Ana"}
