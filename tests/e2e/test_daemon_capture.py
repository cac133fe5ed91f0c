"""gallery.capture in the running door daemon: enrolment shots of the person in front of the camera, taken from the
frames the door looks at anyway. Real models, a real SQLite gallery, a real video played in real time."""

from __future__ import annotations

import pytest

from edge_app.gallery.store import Gallery
from edge_app.mqtt.commands import CommandError
from tests.e2e.test_daemon import run_daemon, write_video


def persons(db):  # type: ignore[no-untyped-def]
    with Gallery(db) as g:
        return {p.name: (p.n_templates, p.n_masked) for p in g.list_persons()}


def test_a_capture_enrols_the_person_in_front_of_the_door_and_says_so(tmp_path, scenes, gallery_db, pipeline,
                                                                     model_set):
    frames = [scenes["hall"]] * 3 + scenes["walk"]("biden.jpg", 24) + [scenes["hall"]] * 3
    asked = []

    def start(daemon):  # type: ignore[no-untyped-def]
        asked.append(daemon.start_capture("Joe Biden", 30.0, 2))
        with pytest.raises(CommandError, match="a capture of 'Joe Biden' is running") as e:
            daemon.start_capture("Someone Else", 30.0, 1)
        assert e.value.reason == "busy"

    code, daemon, relay, events = run_daemon(write_video(tmp_path / "walk.avi", frames), gallery_db, pipeline,
                                             model_set, before=start, realtime=True)
    assert code == 0 and asked == [{"capturing": "Joe Biden", "seconds": 30.0, "shots": 2}]
    enrol = [e for e in events if e["kind"] == "enrol"]
    assert [(e["reason"], e["person_name"]) for e in enrol] == [("captured", "Joe Biden")]
    d = enrol[0]["details"]
    assert (d["shots"], d["plain_templates"], d["masked_templates"], d["new_person"]) == (2, 2, 6, True)
    assert d["passed_over"] == {"no_face": 3} and d["device"] == "test-kiosk"
    assert persons(gallery_db) == {"Obama": (1, 0), "Joe Biden": (8, 6)}
    # The door went on deciding while it took the shots: Biden, unknown then, was refused, never granted.
    relay.assert_states([False])
    assert daemon._capture is None


def test_a_capture_with_nobody_in_view_fails_by_its_deadline_and_changes_nothing(tmp_path, scenes, gallery_db,
                                                                                 pipeline, model_set):
    frames = [scenes["hall"]] * 70  # 7 s in real time, the capture gives up after 5
    code, _, _, events = run_daemon(write_video(tmp_path / "hall.avi", frames), gallery_db, pipeline, model_set,
                                    before=lambda d: d.start_capture("Ana", 5.0, 3), realtime=True)
    assert code == 0
    [e] = [e for e in events if e["kind"] == "enrol"]
    assert (e["reason"], e["person_name"]) == ("capture_failed", "Ana")
    assert e["details"]["shots"] == 0 and e["details"]["passed_over"]["no_face"] >= 40
    assert "no usable frame of 'Ana'" in e["details"]["why"]
    assert persons(gallery_db) == {"Obama": (1, 0)}


def test_a_capture_never_enrols_somebody_the_door_recognises_as_another_person(tmp_path, scenes, gallery_db,
                                                                               pipeline, model_set):
    """Obama (enrolled) stands at the door when a capture of "Joe Biden" was asked for: passed over, nothing
    enrolled, the failure says why; the door still lets Obama in."""
    frames = scenes["walk"]("obama2.jpg", 24) + [scenes["hall"]] * 40  # the capture gives up after 5 s
    code, _, relay, events = run_daemon(write_video(tmp_path / "obama.avi", frames), gallery_db, pipeline, model_set,
                                        before=lambda d: d.start_capture("Joe Biden", 5.0, 2), realtime=True)
    assert code == 0
    [e] = [e for e in events if e["kind"] == "enrol"]
    assert (e["reason"], e["person_name"], e["details"]["shots"]) == ("capture_failed", "Joe Biden", 0)
    assert e["details"]["passed_over"]["someone_else"] >= 15
    assert "recognised as another enrolled person" in e["details"]["why"]
    assert persons(gallery_db) == {"Obama": (1, 0)}
    relay.assert_states([False, True, False])
