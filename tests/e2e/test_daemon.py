"""The door daemon end to end: a video built from real face photos, the real models, a real SQLite
gallery and gpiozero's MockFactory for the relay pin."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
from gpiozero.pins.mock import MockFactory

from edge_app.config import parse_config
from edge_app.daemon import Daemon
from edge_app.gallery.matcher import Matcher
from edge_app.gallery.store import Gallery
from edge_app.hardware.camera import OpenCVSource
from edge_app.hardware.door import Door, DoorConfig
from edge_app.recognizer import RecognitionPolicy, Recognizer
from tests import conftest
from tests.conftest import fill_disk

RELAY = 17
FPS = 10


def write_video(path: Path, frames: list[np.ndarray]) -> Path:
    return conftest.write_video(path, frames, FPS)


def run_daemon(video: Path, gallery_db: Path, pipeline, model_set, config: str = "",  # type: ignore[no-untyped-def]
               before=None, realtime: bool = False):
    """``before(daemon)`` runs just before daemon.run() (e.g. to start a capture)."""
    cfg = parse_config("[door]\npins = \"mock\"\npulse_seconds = 0.2\n[device]\nid = \"test-kiosk\"\n" + config)
    factory = MockFactory()
    door = Door(DoorConfig(relay_pin=RELAY, pulse_seconds=0.2), pin_factory=factory)
    with Gallery(gallery_db) as g:
        t = model_set.thresholds()
        rec = Recognizer(pipeline, Matcher.from_gallery(g, model_set.embedder_sha),
                         RecognitionPolicy(t.plain, t.masked, False, t.masked_gallery))
        daemon = Daemon(cfg, OpenCVSource(str(video)), rec, g, door, model_set.embedder_sha, realtime=realtime)
        if before is not None:
            before(daemon)
        code = daemon.run()
        events = g.events(100)[::-1]
    return code, daemon, factory.pin(RELAY), events


def test_enrolled_person_is_granted_once_and_a_stranger_denied(tmp_path, scenes, gallery_db, pipeline, model_set):
    hall, walk = scenes["hall"], scenes["walk"]
    frames = [hall] * 3 + walk("obama2.jpg") + [hall] * 8 + walk("biden.jpg") + [hall] * 3
    code, daemon, relay, events = run_daemon(write_video(tmp_path / "door.avi", frames), gallery_db, pipeline,
                                             model_set)
    assert code == 0
    # Locked at start, one pulse, locked again: exactly once for a person seen in 8 frames.
    relay.assert_states([False, True, False])
    access = [e for e in events if e["kind"] == "access"]
    assert [(e["person_name"], e["reason"], e["details"]["decision"]) for e in access] == [
        ("Obama", "granted", "granted"), (None, "unknown_face", "denied")]
    assert access[0]["mask"] == "no" and access[0]["details"]["device"] == "test-kiosk"
    assert len(access[0]["id"]) == 36  # the decision's UUID
    s = daemon.stats
    # Face in view at frame 4; 3 agreeing frames are needed: granted on the 3rd frame with a face.
    assert s.first_face_frame == 4 and s.first_grant_frame == 6
    assert len(s.grant_latency_ms) == 1 and 0 < s.grant_latency_ms[0] < 2000
    assert s.frames == len(frames)


def test_stranger_alone_never_moves_the_relay(tmp_path, scenes, gallery_db, pipeline, model_set):
    frames = [scenes["hall"]] * 2 + scenes["walk"]("biden.jpg", 10)
    code, _, relay, events = run_daemon(write_video(tmp_path / "s.avi", frames), gallery_db, pipeline, model_set)
    assert code == 0
    relay.assert_states([False])
    assert [(e["kind"], e["reason"]) for e in events] == [("access", "unknown_face")]


def test_require_mask_refuses_a_bare_face_with_its_reason(tmp_path, scenes, gallery_db, pipeline, model_set):
    frames = scenes["walk"]("obama2.jpg")
    code, _, relay, events = run_daemon(write_video(tmp_path / "m.avi", frames), gallery_db, pipeline, model_set,
                                        "[recognition]\nrequire_mask = true\n")
    assert code == 0
    relay.assert_states([False])
    assert [(e["person_name"], e["reason"], e["mask"]) for e in events] == [("Obama", "no_mask", "no")]


def test_sigterm_during_a_pulse_leaves_the_relay_locked(tmp_path, scenes, gallery_db):
    """The real `edge-app run` in a subprocess: a 30 s pulse is running when SIGTERM arrives."""
    frames = [scenes["hall"]] * 2 + scenes["walk"]("obama2.jpg", 6) + [scenes["hall"]] * 100
    video = write_video(tmp_path / "sig.avi", frames)
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(f'[door]\npins = "mock"\npulse_seconds = 30\n[camera]\nsource = "{video}"\n')
    exe = Path(sys.executable).parent / "edge-app"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(exe), "run", "--config", str(cfg), "--db", str(gallery_db), "--realtime", "-v"],
                            stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stderr is not None
    lines: list[str] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        if "granted Obama" in line:
            break
    assert any("granted Obama" in x for x in lines), "".join(lines)
    time.sleep(0.3)  # well inside the 30 s pulse
    proc.send_signal(signal.SIGTERM)
    out = proc.stderr.read()
    assert proc.wait(timeout=30) == 0, out
    log = "".join(lines) + out
    assert "signal SIGTERM: stopping" in log
    relay_lines = [x for x in log.splitlines() if "door: unlocked" in x or "door: locked" in x]
    assert relay_lines[-1].split("door: ")[1].startswith("locked"), relay_lines
    assert "door closed (relay locked)" in log
    with Gallery(gallery_db) as g:
        assert [e["reason"] for e in g.events()] == ["granted"]


def test_check_config_prints_effective_settings_and_names_bad_keys(tmp_path, capsys, gallery_db):
    from edge_app.cli import EXIT_ERROR, EXIT_OK, main

    good = tmp_path / "good.toml"
    good.write_text('[door]\nrelay_pin = 22\npins = "mock"\n[device]\ntimezone = "Europe/Berlin"\n')
    assert main(["run", "--check-config", "--config", str(good), "--db", str(gallery_db)]) == EXIT_OK
    out = capsys.readouterr().out
    assert "relay_pin = 22" in out and 'timezone = "Europe/Berlin"' in out and "# models:" in out
    bad = tmp_path / "bad.toml"
    bad.write_text("[door]\nrelay_pin = 22\ncontact_pin = 22\n")
    assert main(["run", "--check-config", "--config", str(bad)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "bad.toml: [door] relay_pin, contact_pin and exit_button_pin must differ" in err
    bad.write_text("[camera]\nsorce = \"0\"\n")
    assert main(["run", "--config", str(bad)]) == EXIT_ERROR
    assert 'bad.toml: [camera] sorce: unknown key, did you mean "source"?' in capsys.readouterr().err


def test_events_are_json_serialisable_for_the_outbox(tmp_path, scenes, gallery_db, pipeline, model_set):
    frames = scenes["walk"]("obama2.jpg")
    _, _, _, events = run_daemon(write_video(tmp_path / "j.avi", frames), gallery_db, pipeline, model_set)
    assert json.loads(json.dumps(events))[0]["reason"] == "granted"


def test_camera_loss_and_recovery_are_reported_and_the_daemon_keeps_running(tmp_path, scenes, gallery_db, pipeline,
                                                                            model_set):
    """A live source (a video file read as a camera) is unplugged and plugged back while the daemon runs
    (on this thread, as in production; the "technician" is another thread)."""
    import threading

    video = write_video(tmp_path / "cam.avi", [scenes["hall"]] * 4)
    away = tmp_path / "unplugged.avi"
    source = OpenCVSource(str(video), live=True, no_frame_timeout=0.3, backoff_initial=0.05, backoff_max=0.1)
    cfg = parse_config('[door]\npins = "mock"\n')
    door = Door(DoorConfig(relay_pin=RELAY), pin_factory=MockFactory())

    with Gallery(gallery_db) as g:
        t = model_set.thresholds()
        policy = RecognitionPolicy(t.plain, t.masked)
        rec = Recognizer(pipeline, Matcher.from_gallery(g, model_set.embedder_sha), policy)
        daemon = Daemon(cfg, source, rec, g, door, model_set.embedder_sha)

        def technician() -> None:
            def wait(pred, timeout=10.0):  # type: ignore[no-untyped-def]
                deadline = time.monotonic() + timeout
                while not pred() and time.monotonic() < deadline:
                    time.sleep(0.02)
                return pred()

            with Gallery(gallery_db) as watch:  # its own connection, as an admin tool would have
                def camera_events() -> list[str]:
                    return [e["reason"] for e in watch.events() if e["kind"] == "camera"][::-1]

                try:
                    wait(lambda: daemon.stats.frames > 0)
                    video.rename(away)  # unplugged: the live source ends, reopening fails
                    wait(lambda: camera_events()[-1:] == ["lost"])
                    frames = daemon.stats.frames
                    away.rename(video)  # plugged back in
                    wait(lambda: camera_events()[-1:] == ["recovered"] and daemon.stats.frames > frames)
                finally:
                    daemon.stop.set()

        helper = threading.Thread(target=technician, name="technician")
        helper.start()
        code = daemon.run()
        helper.join(timeout=20)
        assert code == 0 and door.locked
        camera = [e for e in g.events() if e["kind"] == "camera"][::-1]
        assert [e["reason"] for e in camera][:2] == ["lost", "recovered"], camera
        assert "no frame for" in camera[0]["details"]["error"]


def test_forced_door_and_exit_button_become_events(tmp_path, scenes, gallery_db, pipeline, model_set):
    """Door callbacks come from gpiozero's threads; the daemon stores them from its own loop."""
    import threading

    video = write_video(tmp_path / "hall.avi", [scenes["hall"]] * 15)  # 1.5 s at 10 fps, played in real time
    factory = MockFactory()
    cfg = parse_config('[door]\npins = "mock"\n')
    with Gallery(gallery_db) as g:
        t = model_set.thresholds()
        policy = RecognitionPolicy(t.plain, t.masked)
        rec = Recognizer(pipeline, Matcher.from_gallery(g, model_set.embedder_sha), policy)
        daemon_ref: list[Daemon] = []
        door = Door(DoorConfig(relay_pin=RELAY, contact_pin=27, exit_button_pin=22, pulse_seconds=0.2),
                    pin_factory=factory, on_event=lambda e, i: daemon_ref[0].on_door_event(e, i))
        contact, button = factory.pin(27), factory.pin(22)
        contact.drive_low()  # NC reed closed: the door is shut (pull-up, switch to ground)
        daemon = Daemon(cfg, OpenCVSource(str(video)), rec, g, door, model_set.embedder_sha, realtime=True)
        daemon_ref.append(daemon)

        def intruder() -> None:
            time.sleep(0.3)
            contact.drive_high()  # opened while locked, nobody granted: forced
            time.sleep(0.2)
            contact.drive_low()
            time.sleep(0.2)
            button.drive_low()  # request to exit
            time.sleep(0.1)
            button.drive_high()

        th = threading.Thread(target=intruder, name="intruder")
        th.start()
        assert daemon.run() == 0
        th.join()
        door_events = [e["reason"] for e in g.events() if e["kind"] == "door"][::-1]
    assert door_events == ["forced_open", "exit_request"]
    factory.pin(RELAY).assert_states([False, True, False])  # the exit request pulsed the relay once


def test_systemd_hears_ready_watchdog_and_stopping(tmp_path, scenes, gallery_db, pipeline, model_set, monkeypatch):
    import socket

    sock_path = tmp_path / "notify.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(sock_path))
    server.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(sock_path))
    monkeypatch.setenv("WATCHDOG_USEC", "200000")  # 0.2 s: a ping at least every 0.1 s
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    video = write_video(tmp_path / "w.avi", [scenes["hall"]] * 6)  # 0.6 s in real time
    with Gallery(gallery_db) as g:
        t = model_set.thresholds()
        rec = Recognizer(pipeline, Matcher.from_gallery(g, model_set.embedder_sha),
                         RecognitionPolicy(t.plain, t.masked))
        door = Door(DoorConfig(relay_pin=RELAY), pin_factory=MockFactory())
        daemon = Daemon(parse_config('[door]\npins = "mock"\n'), OpenCVSource(str(video)), rec, g, door,
                        model_set.embedder_sha, realtime=True)
        assert daemon.run() == 0
    messages = []
    try:
        while True:
            messages.append(server.recv(4096).decode())
    except TimeoutError:
        pass
    finally:
        server.close()
    assert messages[0].startswith("READY=1\nSTATUS=watching")
    assert messages.count("WATCHDOG=1") >= 3
    assert messages[-1] == "STOPPING=1"


def test_sighup_reloads_the_gallery_without_a_restart(tmp_path, scenes, gallery_db, pipeline, model_set, rgb):
    """Biden is enrolled by another process while the daemon runs; SIGHUP makes the daemon see him."""
    import threading

    frames = [scenes["hall"]] * 10 + scenes["walk"]("biden.jpg", 8)
    video = write_video(tmp_path / "h.avi", frames)
    biden = pipeline.process(rgb("biden.jpg"), max_faces=1)[0].embedding
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)}
    try:
        with Gallery(gallery_db) as g:
            t = model_set.thresholds()
            rec = Recognizer(pipeline, Matcher.from_gallery(g, model_set.embedder_sha),
                             RecognitionPolicy(t.plain, t.masked))
            door = Door(DoorConfig(relay_pin=RELAY, pulse_seconds=0.2), pin_factory=MockFactory())
            daemon = Daemon(parse_config('[door]\npins = "mock"\n'), OpenCVSource(str(video)), rec, g, door,
                            model_set.embedder_sha, realtime=True)
            daemon.install_signal_handlers()

            def admin() -> None:
                time.sleep(0.2)  # the hall frames are playing
                with Gallery(gallery_db) as other:
                    other.add_person("Biden")
                    other.add_templates("Biden", biden[None], model_sha=model_set.embedder_sha, masked=False)
                os.kill(os.getpid(), signal.SIGHUP)

            th = threading.Thread(target=admin, name="admin")
            th.start()
            assert daemon.run() == 0
            th.join()
            granted = [e["person_name"] for e in g.events() if e["reason"] == "granted"]
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
    assert granted == ["Biden"]


def test_snapshots_only_when_asked_and_pruned(tmp_path, scenes, gallery_db, pipeline, model_set):
    frames = scenes["walk"]("obama2.jpg")
    _, _, _, events = run_daemon(write_video(tmp_path / "n.avi", frames), gallery_db, pipeline, model_set)
    assert "snapshot" not in events[0]["details"]
    snaps = tmp_path / "snaps"
    old = os.umask(0)  # faces are private whatever the umask of whoever started the kiosk
    try:
        _, daemon, _, events = run_daemon(write_video(tmp_path / "y.avi", frames), gallery_db, pipeline, model_set,
                                          f'[events]\nsnapshots = true\nsnapshot_dir = "{snaps}"\n')
    finally:
        os.umask(old)
    shot = Path(events[-1]["details"]["snapshot"])
    assert shot.parent == snaps and shot.is_file() and cv2.imread(str(shot)) is not None
    assert (stat.S_IMODE(snaps.stat().st_mode), stat.S_IMODE(shot.stat().st_mode)) == (0o700, 0o600)
    os.utime(shot, (time.time() - 8 * 86400,) * 2)  # older than the 7-day default
    with Gallery(gallery_db) as g:
        # Events waiting for a broker (MQTT was on once) go with the events' retention too, sent or not.
        from edge_app.gallery.outbox import Outbox

        box = Outbox(g)
        box.put("edge-app/k/events", b'{"person_name": "Obama"}')
        g.db.execute("UPDATE outbox SET created_at = '2020-01-01T00:00:00.000+00:00'")
        box.put("edge-app/k/events", b'{"person_name": "Biden"}')  # recent: kept
        daemon.gallery = g
        daemon.prune()
        assert [m.payload for m in box.peek(10)] == [b'{"person_name": "Biden"}']
    assert not shot.exists()


def test_off_a_pi_the_pins_are_simulated_with_a_loud_warning(caplog):
    from edge_app.daemon import pin_factory

    assert isinstance(pin_factory("auto"), MockFactory)  # this machine is no Raspberry Pi
    assert "NOT A RASPBERRY PI" in caplog.text
    caplog.clear()
    assert isinstance(pin_factory("mock"), MockFactory)
    assert "NOT A RASPBERRY PI" not in caplog.text


def test_a_full_snapshot_disk_keeps_the_decision_its_event_and_the_pulse(tmp_path, scenes, gallery_db, pipeline,
                                                                         model_set, small_tmpfs):
    """Snapshots on a real tmpfs filled to the last byte: the write fails, nothing else does."""
    snaps = small_tmpfs / "snaps"
    snaps.mkdir()
    fill_disk(small_tmpfs)
    video = write_video(tmp_path / "f.avi", scenes["walk"]("obama2.jpg") + [scenes["hall"]] * 4)
    code, daemon, relay, events = run_daemon(video, gallery_db, pipeline, model_set,
                                             f'[events]\nsnapshots = true\nsnapshot_dir = "{snaps}"\n')
    assert code == 0
    relay.assert_states([False, True, False])
    assert [(e["person_name"], e["reason"]) for e in events] == [("Obama", "granted")]
    assert "No space left on device" in events[0]["details"]["snapshot_error"]
    assert "snapshot" not in events[0]["details"]
    assert list(snaps.iterdir()) == []  # no half-written face left behind
    assert daemon.stats.granted == 1
