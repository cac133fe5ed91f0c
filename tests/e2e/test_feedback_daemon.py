"""The door daemon drives the feedback outputs: a grant lights green and beeps once, never the relay's pins."""

from __future__ import annotations

from gpiozero.pins.mock import MockFactory

from edge_app.config import parse_config
from edge_app.daemon import Daemon
from edge_app.gallery.matcher import Matcher
from edge_app.gallery.store import Gallery
from edge_app.hardware.camera import OpenCVSource
from edge_app.hardware.door import Door, DoorConfig
from edge_app.hardware.feedback import Feedback
from edge_app.recognizer import RecognitionPolicy, Recognizer
from tests.e2e.test_daemon import RELAY, write_video

GREEN, RED, BUZZER = 5, 6, 13


def test_a_grant_lights_green_and_beeps_once(tmp_path, scenes, gallery_db, pipeline, model_set):
    hall, walk = scenes["hall"], scenes["walk"]
    video = write_video(tmp_path / "door.avi", [hall] * 2 + walk("obama2.jpg") + [hall] * 2)
    cfg = parse_config(f'[door]\npins = "mock"\n[feedback]\ngreen_pin = {GREEN}\nred_pin = {RED}\n'
                       f'buzzer_pin = {BUZZER}\nshow_seconds = 0.2\n')
    factory = MockFactory()
    door = Door(DoorConfig(relay_pin=RELAY, pulse_seconds=0.2), pin_factory=factory)
    feedback = Feedback(cfg.feedback, factory)
    try:
        with Gallery(gallery_db) as g:
            t = model_set.thresholds()
            rec = Recognizer(pipeline, Matcher.from_gallery(g, model_set.embedder_sha),
                             RecognitionPolicy(t.plain, t.masked, False, t.masked_gallery))
            daemon = Daemon(cfg, OpenCVSource(str(video)), rec, g, door, model_set.embedder_sha, feedback=feedback)
            assert daemon.run() == 0
            reasons = [e["reason"] for e in g.events(10) if e["kind"] == "access"]
        feedback.wait(10.0)
    finally:
        feedback.close()
    assert reasons == ["granted"]
    assert [s.state for s in factory.pin(GREEN).states] == [False, True, False]
    assert [s.state for s in factory.pin(BUZZER).states] == [False, True, False]
    assert [s.state for s in factory.pin(RED).states] == [False]
    assert [s.state for s in factory.pin(RELAY).states] == [False, True, False]  # the door's own pulse, once
