"""Door safety against old and repeated pictures: votes never span a stalled camera, a frozen camera that
repeats one picture opens nothing (and is reported lost), and a gallery reload that fails half way never
leaves new templates with old person rules. The real daemon loop, the real models on real faces, a real
SQLite gallery and gpiozero's MockFactory; the camera is a scripted live source (the same FrameSource
interface a USB or Pi camera is read through)."""

from __future__ import annotations

import itertools
import shutil
import sqlite3
import time
from collections.abc import Callable
from typing import Any

import pytest
from gpiozero.pins.mock import MockFactory

from edge_app.config import parse_config
from edge_app.daemon import Daemon
from edge_app.errors import ConfigError
from edge_app.gallery.matcher import Matcher
from edge_app.gallery.store import Gallery
from edge_app.hardware.camera import Frame, FrameSource, OpenCVSource
from edge_app.hardware.door import Door, DoorConfig
from edge_app.recognizer import RecognitionPolicy, Recognizer
from tests import conftest

RELAY = 17
RUNS = itertools.count()
NO_LIVENESS = "[liveness]\nenabled = false\n"  # photos of faces: the votes, not the liveness check, are tested


class ScriptedCamera(FrameSource):
    """A live camera whose frames come from a script: ("frame", image) delivers it, ("stall", s) delivers
    nothing for s seconds. Frames are stamped with time.monotonic(), as a live source stamps them."""

    live = True
    description = "scripted camera"

    def __init__(self, script: list[tuple[str, Any]], interval: float = 0.05, sensor: bool = True) -> None:
        self.script, self.interval, self.index, self.sensor = list(script), interval, 0, sensor

    def read(self) -> Frame | None:
        while self.script:
            kind, value = self.script.pop(0)
            if kind == "stall":
                time.sleep(value)
                continue
            time.sleep(self.interval)
            self.index += 1
            return Frame(value, self.index, time.monotonic(), self.description)
        time.sleep(0.3)  # let the daemon take the last frame, then end the run
        assert self.stop_event is not None
        self.stop_event.set()
        return None


def run(script: list[tuple[str, Any]], gallery_db, pipeline, model_set, config: str = NO_LIVENESS,  # type: ignore[no-untyped-def]
        prepare: Callable[[Daemon, Gallery], None] | None = None,
        sensor: bool = True) -> tuple[Daemon, list[bool], list[dict[str, Any]]]:
    """One daemon run on a fresh copy of the gallery (each run's events only)."""
    gallery_db = shutil.copy(gallery_db, gallery_db.with_name(f"run-{next(RUNS)}.db"))
    factory = MockFactory()
    door = Door(DoorConfig(relay_pin=RELAY, pulse_seconds=0.2), pin_factory=factory)
    with Gallery(gallery_db) as g:
        t = model_set.thresholds()
        policy = RecognitionPolicy(t.plain, t.masked)
        rec = Recognizer(pipeline, Matcher.from_gallery(g, model_set.embedder_sha), policy)
        camera = ScriptedCamera(script, sensor=sensor)
        daemon = Daemon(parse_config('[door]\npins = "mock"\n' + config), camera, rec, g, door, model_set.embedder_sha)
        if prepare is not None:
            prepare(daemon, g)
        assert daemon.run() == 0
        events = g.events(100)[::-1]
    door.close()
    return daemon, [s.state for s in factory.pin(RELAY).states], events


def access(events: list[dict[str, Any]]) -> list[tuple[str | None, str]]:
    return [(e["person_name"], e["reason"]) for e in events if e["kind"] == "access"]


def test_votes_from_before_a_camera_stall_do_not_count_after_it(scenes, gallery_db, pipeline, model_set):
    walk = scenes["walk"]("obama2.jpg")
    frames = [("frame", f) for f in walk[:3]]
    # Control: three consecutive frames of Obama open the door (so the stalled run below could open it).
    _, relay, events = run(frames, gallery_db, pipeline, model_set)
    assert relay == [False, True, False] and access(events) == [("Obama", "granted")]
    # Two frames, the camera stalls for 2 s (shorter than [camera] no_frame_seconds: not even "lost"), one
    # frame: the votes start again after the gap, so nothing opens; two more frames complete a new vote.
    stalled = [*frames[:2], ("stall", 2.0), frames[2]]
    daemon, relay, events = run(stalled, gallery_db, pipeline, model_set)
    assert relay == [False] and access(events) == [] and daemon.stats.faces == 3
    daemon, relay, events = run(stalled + [("frame", f) for f in walk[3:5]], gallery_db, pipeline, model_set)
    assert relay == [False, True, False] and access(events) == [("Obama", "granted")]


def test_a_frozen_camera_repeating_one_picture_opens_nothing_and_is_reported_lost(scenes, gallery_db, pipeline,
                                                                                   model_set):
    walk = scenes["walk"]("obama2.jpg")
    frozen = walk[2]
    # The same picture 15 times (the last two as fresh copies of the same pixels), then the camera comes
    # back with three new frames of the person.
    script = [("frame", frozen)] * 13 + [("frame", frozen.copy()), ("frame", frozen.copy())]
    script += [("frame", f) for f in walk[3:6]]
    daemon, relay, events = run(script, gallery_db, pipeline, model_set,
                                NO_LIVENESS + "[camera]\nno_frame_seconds = 0.5\n")
    assert daemon.stats.repeated_frames == 14 and daemon.stats.frames == 18
    camera = [(e["reason"], e["details"].get("error", "")) for e in events if e["kind"] == "camera"]
    assert [r for r, _ in camera] == ["lost", "recovered"] and "frozen" in camera[0][1], camera
    # Granted once, and only after the new frames: the frozen picture gave one vote, not fifteen.
    assert relay == [False, True, False] and access(events) == [("Obama", "granted")]
    granted = next(e for e in events if e["kind"] == "access")
    assert granted["details"]["frames"] == 3  # the track of the three new frames
    # Without the new frames, the frozen picture alone opens nothing.
    _, relay, events = run([("frame", frozen)] * 8, gallery_db, pipeline, model_set)
    assert relay == [False] and access(events) == []
    # A network stream (rtsp://) of a still scene may decode to identical frames: they vote nothing either, but
    # the stream is not reported lost for it.
    daemon, relay, events = run([("frame", frozen)] * 15, gallery_db, pipeline, model_set,
                                NO_LIVENESS + "[camera]\nno_frame_seconds = 0.5\n", sensor=False)
    assert daemon.stats.repeated_frames == 14 and relay == [False] and access(events) == []
    assert [e for e in events if e["kind"] == "camera"] == []


def test_a_reload_that_fails_half_way_is_tried_again_and_never_mixes_templates_and_rules(
        scenes, gallery_db, pipeline, model_set):
    """Obama is deactivated by an admin tool while the kiosk runs; the first read of the persons after it
    fails (an I/O error). The door must still refuse Obama: the reload is tried again, not half applied."""
    walk = [("frame", f) for f in scenes["walk"]("obama2.jpg")]
    failures: list[str] = []

    def prepare(daemon: Daemon, g: Gallery) -> None:
        real = g.list_persons

        def flaky(*a: Any, **kw: Any) -> Any:
            if not failures:
                failures.append("disk I/O error")
                raise sqlite3.OperationalError("disk I/O error")
            return real(*a, **kw)

        with Gallery(g.path) as admin:  # another connection, as an admin tool: the file's data_version moves
            admin.upsert_person("Obama", active=False)  # a new gallery_version
        g.list_persons = flaky  # type: ignore[method-assign]

    daemon, relay, events = run(walk, gallery_db, pipeline, model_set, prepare=prepare)
    assert failures == ["disk I/O error"]
    assert daemon.controller.persons and not any(p.active for p in daemon.controller.persons.values())
    assert relay == [False] and access(events) == [("Obama", "inactive")]


def test_a_reload_asked_for_over_mqtt_is_retried_until_it_succeeds(scenes, gallery_db, pipeline, model_set):
    """The daemon's own connection writes MQTT changes (data_version does not move for it): a failed reload
    must be retried from the reload flag, not forgotten."""
    failures: list[int] = []

    def prepare(daemon: Daemon, g: Gallery) -> None:
        real = daemon.reload

        def flaky() -> None:
            if not failures:
                failures.append(1)
                raise sqlite3.OperationalError("database is locked")
            real()

        g.upsert_person("Obama", active=False)  # as an MQTT command would, on the daemon's connection
        daemon.reload = flaky  # type: ignore[method-assign]
        daemon.request_reload()

    walk = [("frame", f) for f in scenes["walk"]("obama2.jpg")]
    _, relay, events = run(walk, gallery_db, pipeline, model_set, prepare=prepare)
    assert failures == [1] and relay == [False] and access(events) == [("Obama", "inactive")]


def test_a_frame_interval_longer_than_the_gap_limit_is_a_config_error_naming_the_keys(tmp_path, scenes, gallery_db,
                                                                                      pipeline, model_set):
    video = conftest.write_video(tmp_path / "v.avi", [scenes["hall"]] * 3, fps=10)
    cfg = parse_config('[door]\npins = "mock"\n[access]\nevery_nth_frame = 20\n')
    factory = MockFactory()
    with Gallery(gallery_db) as g:
        t = model_set.thresholds()
        policy = RecognitionPolicy(t.plain, t.masked)
        rec = Recognizer(pipeline, Matcher.from_gallery(g, model_set.embedder_sha), policy)
        door = Door(DoorConfig(relay_pin=RELAY), pin_factory=factory)
        daemon = Daemon(cfg, OpenCVSource(str(video)), rec, g, door, model_set.embedder_sha)
        with pytest.raises(ConfigError, match=r"max_gap_seconds .*every_nth_frame 20 at 10 frames/s is 2.00"):
            daemon.run()
    assert door.locked and [s.state for s in factory.pin(RELAY).states] == [False]


