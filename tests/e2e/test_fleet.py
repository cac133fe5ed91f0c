"""The fleet end to end: the real `edge-app run` (subprocess) on a real mosquitto, managed with the real
`edge-admin`; forged, replayed, expired, malformed and oversized commands are refused and change nothing."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_app.gallery.store import Gallery
from edge_app.mqtt.security import generate_keypair, load_private_key, sign_command
from tests.conftest import kiosk_frame, write_video

BIN = Path(sys.executable).parent
DEVICE = "kiosk-1"


class Listener:
    """An independent MQTT client recording everything under the prefix and Home Assistant's."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes, bool]] = []
        self.cond = threading.Condition()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="test-listener")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe([("edge-app/#", 1), ("homeassistant/#", 1)])
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.cond:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain)))
            self.cond.notify_all()

    def wait(self, pred: Any, timeout: float = 20.0) -> list[tuple[str, bytes, bool]]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                found = [m for m in self.messages if pred(m)]
                if found or time.monotonic() > deadline:
                    return found
                self.cond.wait(0.2)

    def result(self, command_id: str | None, timeout: float = 15.0) -> dict[str, Any]:
        def match(m: tuple[str, bytes, bool]) -> bool:
            return m[0] == f"edge-app/{DEVICE}/cmd/result" and json.loads(m[1]).get("id") == command_id

        found = self.wait(match, timeout)
        assert found, f"no result for {command_id}"
        return dict(json.loads(found[-1][1]))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.fixture
def kiosk(tmp_path, mqtt_broker, faces_dev):  # type: ignore[no-untyped-def]
    """A running kiosk daemon on a looping hall video, its admin key, and a listener."""
    # Two minutes at 2 fps, played in real time: the kiosk stays up for the test.
    video = write_video(tmp_path / "hall.avi", [np.full((240, 320, 3), 90, np.uint8)] * 240, fps=2)
    yield from running_kiosk(tmp_path, mqtt_broker, video)


def running_kiosk(tmp_path, mqtt_broker, video):  # type: ignore[no-untyped-def]
    key = tmp_path / "admin.key"
    keygen = subprocess.run([str(BIN / "edge-admin"), "keygen", "--out", str(key)], capture_output=True, text=True,
                            timeout=30, check=True)
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(f"""
[device]
id = "{DEVICE}"
[door]
pins = "mock"
pulse_seconds = 1
[camera]
source = "{video}"
[mqtt]
enabled = true
host = "127.0.0.1"
port = {mqtt_broker.port}
groups = "lobby"
admin_keys = "{keygen.stdout.strip()}"
allow_remote_unlock = true
state_interval_seconds = 1
ha_discovery = true
ha_remote_unlock = true
""")
    listener = Listener(mqtt_broker.port)
    proc = subprocess.Popen([str(BIN / "edge-app"), "run", "--config", str(cfg), "--db", str(tmp_path / "g.db"),
                             "--realtime"], stderr=subprocess.PIPE, text=True)
    try:
        online = listener.wait(lambda m: m[0] == f"edge-app/{DEVICE}/status" and m[1] == b"online", 60)
        assert online, proc.stderr.read() if proc.poll() is not None and proc.stderr else "kiosk not online"
        yield {"key": key, "port": mqtt_broker.port, "listener": listener, "proc": proc, "tmp": tmp_path}
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        listener.close()


def admin(kiosk: dict[str, Any], *argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "edge-admin"), *argv, "--broker", f"127.0.0.1:{kiosk['port']}",
                           "--key", str(kiosk["key"]), "--timeout", "15"],
                          capture_output=True, text=True, timeout=timeout, check=False)


def gallery_listing(kiosk: dict[str, Any]) -> dict[str, Any]:
    res = admin(kiosk, "list", "--device", DEVICE, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return dict(json.loads(res.stdout)[DEVICE]["result"])


def publish(port: int, payload: bytes, topic: str = f"edge-app/{DEVICE}/cmd") -> None:
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"attacker-{time.time_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def test_admin_manages_the_kiosk_and_bad_commands_change_nothing(kiosk, faces_dev):
    tmp, listener = kiosk["tmp"], kiosk["listener"]
    enrol = subprocess.run([str(BIN / "edge-admin"), "enrol", "--name", "Obama", str(faces_dev / "obama.jpg"),
                            "--out", str(tmp / "obama.json")], capture_output=True, text=True, timeout=120)
    assert enrol.returncode == 0, enrol.stderr
    push = admin(kiosk, "push", str(tmp / "obama.json"), "--device", DEVICE)
    assert push.returncode == 0 and push.stdout.startswith(f"{DEVICE}: ok"), push.stdout + push.stderr
    photos = admin(kiosk, "push-photos", "--name", "Biden", str(faces_dev / "biden.jpg"), "--group", "lobby")
    assert photos.returncode == 0 and '"masked_templates": 3' in photos.stdout, photos.stdout + photos.stderr
    listing = gallery_listing(kiosk)
    assert [(p["name"], p["templates"], p["masked_templates"]) for p in listing["persons"]] == [
        ("Biden", 4, 3), ("Obama", 4, 3)]
    assert admin(kiosk, "ping", "--all").returncode == 0
    unlock = admin(kiosk, "unlock", "--device", DEVICE, "--seconds", "1")
    assert unlock.returncode == 0, unlock.stdout + unlock.stderr
    version = listing["gallery_version"]

    # Forged: a key the kiosk does not know.
    stranger, _ = generate_keypair()
    forged = sign_command(stranger, type="gallery.delete", args={"name": "Obama"}, target=DEVICE)
    publish(kiosk["port"], forged)
    # Results for commands whose signature failed carry no trusted id: look for the reason instead.
    found = listener.wait(lambda m: m[0].endswith("/cmd/result") and b'"unknown_key"' in m[1])
    assert found and json.loads(found[-1][1])["ok"] is False

    # Replayed: a valid command, sent twice.
    key = load_private_key(kiosk["key"])
    ping = sign_command(key, type="ping", args={}, target=DEVICE, command_id="replay-test-0001")
    publish(kiosk["port"], ping)
    assert listener.result("replay-test-0001")["ok"] is True
    publish(kiosk["port"], ping)
    found = listener.wait(lambda m: m[0].endswith("/cmd/result") and b'"replayed"' in m[1])
    assert found and json.loads(found[-1][1])["id"] == "replay-test-0001"

    # Expired, malformed, oversized, wrong target, bad arguments.
    old = sign_command(key, type="gallery.delete", args={"name": "Obama"}, target=DEVICE,
                       command_id="expired-test-0001", issued_at=time.time() - 3600)
    publish(kiosk["port"], old)
    assert listener.result("expired-test-0001")["error"]["reason"] == "expired"
    publish(kiosk["port"], b"{not json")
    assert listener.wait(lambda m: m[0].endswith("/cmd/result") and b'"malformed"' in m[1])
    publish(kiosk["port"], b"x" * (4 * 1024 * 1024 + 1))
    assert listener.wait(lambda m: m[0].endswith("/cmd/result") and b'"too_large"' in m[1])
    bad = sign_command(key, type="gallery.upsert", args={"name": "Eve", "templates": {
        "model_sha": "00" * 32, "dim": 128, "plain": []}}, target=DEVICE, command_id="mismatch-test-0001")
    publish(kiosk["port"], bad)
    result = listener.result("mismatch-test-0001")
    assert result["error"]["reason"] == "model_mismatch" and "made by embedder 000000000000" in \
        result["error"]["message"]

    after = gallery_listing(kiosk)
    assert after["gallery_version"] == version and [p["name"] for p in after["persons"]] == ["Biden", "Obama"]
    assert admin(kiosk, "remove", "Biden", "--device", DEVICE).returncode == 0
    assert [p["name"] for p in gallery_listing(kiosk)["persons"]] == ["Obama"]

    # State and Home Assistant discovery are retained; the kiosk goes offline cleanly on SIGTERM.
    states = listener.wait(lambda m: m[0] == f"edge-app/{DEVICE}/state")
    state = json.loads(states[-1][1])
    assert state["door"] in ("locked", "unlocked") and state["camera"] == "ok"
    lock = listener.wait(lambda m: m[0] == f"homeassistant/lock/{DEVICE}/door/config")
    assert lock and json.loads(lock[-1][1])["command_topic"] == f"edge-app/{DEVICE}/ha/unlock"
    # The read-only door sensor is the other way to show the door: retracted, or HA would show both.
    sensor = listener.wait(lambda m: m[0] == f"homeassistant/binary_sensor/{DEVICE}/door/config")
    assert sensor and sensor[-1][1] == b""
    kiosk["proc"].send_signal(signal.SIGTERM)
    assert kiosk["proc"].wait(timeout=30) == 0
    assert listener.wait(lambda m: m[0] == f"edge-app/{DEVICE}/status" and m[1] == b"offline")


def test_remote_unlock_is_audited_on_the_events_topic(kiosk):
    listener = kiosk["listener"]
    res = admin(kiosk, "unlock", "--device", DEVICE, "--seconds", "1")
    assert res.returncode == 0, res.stdout + res.stderr
    events = listener.wait(lambda m: m[0] == f"edge-app/{DEVICE}/events" and b'"remote_unlock"' in m[1])
    assert events, [m[0] for m in listener.messages]
    event = json.loads(events[0][1])
    assert event["kind"] == "door" and event["device"] == DEVICE and len(event["details"]["key"]) == 16


def test_home_assistant_unlock_when_enabled(kiosk):
    listener = kiosk["listener"]
    publish(kiosk["port"], b"UNLOCK", topic=f"edge-app/{DEVICE}/ha/unlock")
    events = listener.wait(lambda m: m[0] == f"edge-app/{DEVICE}/events" and b'"ha_unlock"' in m[1])
    assert events and json.loads(events[0][1])["kind"] == "door"
    states = listener.wait(lambda m: m[0] == f"edge-app/{DEVICE}/state" and b'"unlocked"' in m[1])
    assert states  # the door state followed the pulse


def test_admin_options_before_the_command_and_replace_from_a_gallery_export(kiosk, model_set, faces_dev):
    tmp = kiosk["tmp"]
    broker = ["--broker", f"127.0.0.1:{kiosk['port']}", "--key", str(kiosk["key"]), "--timeout", "15"]
    ping = subprocess.run([str(BIN / "edge-admin"), *broker, "ping", "--device", DEVICE], capture_output=True,
                          text=True, timeout=60)
    assert ping.returncode == 0 and ping.stdout.startswith(f"{DEVICE}: ok"), ping.stdout + ping.stderr

    # A gallery made elsewhere (another kiosk, a backup), exported by `edge-app gallery export`.
    rng = np.random.default_rng(7)
    with Gallery(tmp / "site.db") as g:
        g.add_person("Ana Lima", note="front desk")
        g.add_templates("Ana Lima", rng.normal(size=(3, model_set.embedder_dim)), model_sha=model_set.embedder_sha,
                        masked=[False, True, True])
        g.add_person("Bo", active=False, valid_until="2030-01-01",
                     schedule=[{"days": ["mon", "fri"], "start": "08:00", "end": "18:00"}])
        g.add_templates("Bo", rng.normal(size=(1, model_set.embedder_dim)), model_sha=model_set.embedder_sha,
                       masked=[False])
    export = subprocess.run([str(BIN / "edge-app"), "gallery", "export", "--db", str(tmp / "site.db"),
                             str(tmp / "site.json")], capture_output=True, text=True, timeout=60)
    assert export.returncode == 0, export.stderr
    assert admin(kiosk, "push-photos", "--name", "Old Entry", str(faces_dev / "obama.jpg"),
                 "--device", DEVICE).returncode == 0  # something the replace must remove

    res = subprocess.run([str(BIN / "edge-admin"), *broker, "replace", str(tmp / "site.json"), "--device", DEVICE,
                          "--json"], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stdout + res.stderr
    assert json.loads(res.stdout)[DEVICE]["result"]["persons"] == 2
    listing = gallery_listing(kiosk)
    assert [(p["name"], p["active"], p["templates"], p["masked_templates"], p["valid_until"])
            for p in listing["persons"]] == [("Ana Lima", True, 3, 2, None), ("Bo", False, 1, 0, "2030-01-01")]
    assert "08:00" in json.dumps(listing["persons"][1]["schedule"])


def test_an_admin_has_the_kiosk_take_enrolment_shots_of_the_person_in_front_of_it(tmp_path, mqtt_broker, pipeline,
                                                                                  rgb):
    """`edge-admin capture`: the running kiosk takes shots from its own camera (here a video of a person at the
    door, played in real time), enrols them and publishes the outcome as an "enrol" event."""
    photo = rgb("obama2.jpg")
    box = pipeline.detector.detect(photo)[0].box
    walk = [kiosk_frame(photo, box, face_fraction=0.3 + 0.004 * (i % 12)) for i in range(12)]
    video = write_video(tmp_path / "door.avi", walk * 20, fps=4)  # a minute
    kiosks = running_kiosk(tmp_path, mqtt_broker, video)
    k = next(kiosks)
    try:
        res = admin(k, "capture", "--name", "Obama", "--shots", "2", "--seconds", "30", "--device", DEVICE, "--json")
        assert res.returncode == 0, res.stdout + res.stderr
        assert json.loads(res.stdout)[DEVICE]["result"] == {"capturing": "Obama", "seconds": 30.0, "shots": 2}
        found = k["listener"].wait(lambda m: m[0] == f"edge-app/{DEVICE}/events" and b'"enrol"' in m[1], 40)
        assert found, "no enrol event"
        event = json.loads(found[0][1])
        assert (event["reason"], event["person_name"], event["details"]["templates"]) == ("captured", "Obama", 8)
        listing = gallery_listing(k)
        assert [(p["name"], p["templates"], p["masked_templates"]) for p in listing["persons"]] == [("Obama", 8, 6)]
        bad = admin(k, "capture", "--name", "Obama", "--shots", "9", "--device", DEVICE)
        assert bad.returncode == 1 and "'shots' must be 1..5, got 9" in bad.stdout + bad.stderr
    finally:
        kiosks.close()  # the daemon stopped, the listener closed
