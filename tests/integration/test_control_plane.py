"""The kiosk's command side on a real mosquitto: edge_app.mqtt.link + control + a door on gpiozero's
MockFactory, polled by a "daemon" thread at a camera's frame rate, as `edge-app run` does."""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero.pins.mock import MockFactory
from paho.mqtt.enums import CallbackAPIVersion

from edge_app.gallery.outbox import SeenCommands
from edge_app.gallery.store import Gallery
from edge_app.hardware.door import Door, DoorConfig
from edge_app.mqtt.commands import CommandHandler
from edge_app.mqtt.control import ControlPlane
from edge_app.mqtt.link import MqttLink, MqttSettings
from edge_app.mqtt.security import generate_keypair, key_id, sign_command
from tests.integration.test_mqtt_link import Witness, tool, until
from tests.mqtt_broker import Broker

DEVICE = "kiosk-1"
HA_TOPIC = f"edge-app/{DEVICE}/ha/unlock"


class Kiosk:
    """The daemon's side: a thread that owns the gallery and polls the control plane every `period_s`."""

    def __init__(self, broker: Broker, db: Path, admin: Ed25519PrivateKey, period_s: float = 0.1) -> None:
        self.factory = MockFactory()
        self.door = Door(DoorConfig(pulse_seconds=0.2), self.factory)
        self.relay = self.factory.pin(17)
        self.admin, self.db, self.period_s = admin, db, period_s
        self.stop = threading.Event()
        self.ready = threading.Event()
        self.polls = 0
        self.control: ControlPlane | None = None
        settings = MqttSettings(host=broker.host, port=broker.port, device_id=DEVICE, groups=("all",),
                                reconnect_min_s=1, reconnect_max_s=1)
        Gallery(db).close()
        self.link = MqttLink(settings, db, on_command=self._on_command, extra_topics=(HA_TOPIC,))
        self.thread = threading.Thread(target=self._loop, name="test-daemon", daemon=True)

    def _on_command(self, topic: str, payload: bytes) -> None:
        self.ready.wait(10)
        assert self.control is not None
        self.control.on_command(topic, payload)

    def _unlock(self, seconds: float | None) -> None:
        self.door.unlock(seconds, reason="remote")

    def _loop(self) -> None:
        with Gallery(self.db) as g:
            handler = CommandHandler(g, "ab" * 32, 128, DEVICE, unlock=self._unlock, allow_remote_unlock=True)
            from edge_app.mqtt.security import CommandVerifier

            verifier = CommandVerifier([self.admin.public_key()], SeenCommands(g), DEVICE, groups=("all",))
            self.control = ControlPlane(self.link, g, verifier, handler, DEVICE, ha_unlock_topic=HA_TOPIC,
                                        unlock=self._unlock, ha_allowed=True)
            self.ready.set()
            while not self.stop.wait(self.period_s):
                self.control.poll()
                self.polls += 1

    def start(self) -> Kiosk:
        self.thread.start()
        self.ready.wait(10)
        self.link.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        self.link.stop(timeout=5)
        self.door.close()


@pytest.fixture(scope="module")
def admin() -> Ed25519PrivateKey:
    return generate_keypair()[0]


@pytest.fixture
def kiosks(mqtt_broker: Broker, tmp_path: Path, admin: Ed25519PrivateKey) -> Iterator[Callable[..., Kiosk]]:
    made: list[Kiosk] = []

    def make(broker: Broker = mqtt_broker, **kw: Any) -> Kiosk:
        made.append(Kiosk(broker, tmp_path / f"g{len(made)}.db", admin, **kw).start())
        return made[-1]

    yield make
    for k in made:
        k.close()


class Attacker:
    """Another client of the broker, publishing at QoS 1 as fast as paho lets it."""

    def __init__(self, broker: Broker, client_id: str = "") -> None:
        self.connected = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self.client.on_connect = lambda *_a: self.connected.set()
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert self.connected.wait(10), "attacker could not connect"

    def publish(self, topic: str, payload: bytes, retain: bool = False) -> mqtt.MQTTMessageInfo:
        return self.client.publish(topic, payload, qos=1, retain=retain)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def results(witness: Witness) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for p in witness.payloads():
        doc = json.loads(p)
        if doc.get("id"):
            out.setdefault(doc["id"], doc)
    return out


def test_retained_commands_never_run_on_any_command_topic(mqtt_broker, kiosks, admin, witnesses):
    pub = [tool("mosquitto_pub"), "-h", mqtt_broker.host, "-p", str(mqtt_broker.port), "-q", "1", "-r"]
    subprocess.run([*pub, "-t", HA_TOPIC, "-m", "UNLOCK"], check=True, timeout=10)
    for topic, target in ((f"edge-app/{DEVICE}/cmd", DEVICE), ("edge-app/group/all/cmd", "*")):
        signed = sign_command(admin, type="door.unlock", args={"seconds": 1}, target=target)
        subprocess.run([*pub, "-t", topic, "-m", signed.decode()], check=True, timeout=10)
    witness = witnesses(mqtt_broker, f"edge-app/{DEVICE}/cmd/result")
    kiosk = kiosks()
    # A live ping, sent until it is answered: its answer means the kiosk's subscriptions are in place,
    # and the broker hands out retained messages when a subscription is made, so they came before it.
    attacker = Attacker(mqtt_broker)
    try:
        deadline = time.monotonic() + 30
        n = 0
        while not results(witness) and time.monotonic() < deadline:
            n += 1
            attacker.publish(f"edge-app/{DEVICE}/cmd", sign_command(admin, type="ping", args={}, target=DEVICE,
                                                                     command_id=f"sentinel-{n:04d}"))
            wait = time.monotonic() + 0.5
            while not results(witness) and time.monotonic() < wait:
                time.sleep(0.02)
    finally:
        attacker.close()
    assert results(witness), "the kiosk never answered a live ping"
    polls = kiosk.polls
    until(lambda: kiosk.polls >= polls + 2, 10, "two more polls")
    assert [s.state for s in kiosk.relay.states] == [False]  # the relay never moved
    assert kiosk.control is not None
    assert kiosk.control.counts["ha_unlocked"] == 0 and kiosk.control.counts["ha_refused"] == 0
    assert all(r["type"] == "ping" for r in results(witness).values())  # no door.unlock ran (or was refused)
    assert kiosk.link.retained_ignored == 3
    # A live (not retained) press still works: the retained ones were ignored, not the topic.
    subprocess.run([*pub[:-1], "-t", HA_TOPIC, "-m", "UNLOCK"], check=True, timeout=10)
    until(lambda: any(s.state for s in kiosk.relay.states), 10, "the relay to pulse on a live UNLOCK")


@pytest.fixture
def roomy_broker(tmp_path: Path) -> Iterator[Broker]:
    """mosquitto as docs/mqtt.md advises a site to set it: room for 10000 queued messages per client. With
    its default 1000, a machine loaded by other work can read a 1500-message burst too slowly, and the
    broker drops the rest before the kiosk sees them (scripts/reliability_mqtt.py measures both)."""
    broker = Broker(tmp_path / "mosquitto-roomy")
    with broker.conf.open("a") as conf:
        conf.write("max_queued_messages 10000\n")
    broker.start()
    yield broker
    broker.stop()


def test_a_flood_of_junk_does_not_cost_one_signed_command_its_answer(roomy_broker, kiosks, admin, witnesses):
    mqtt_broker = roomy_broker
    witness = witnesses(mqtt_broker, f"edge-app/{DEVICE}/cmd/result")
    kiosk = kiosks(broker=mqtt_broker, period_s=0.1)  # a daemon loop at 10 frames a second
    until(lambda: kiosk.link.connected, 10, "the kiosk to connect")
    stranger = generate_keypair()[0]
    good = sign_command(admin, type="ping", args={}, target=DEVICE)
    env = json.loads(good)
    bad_sig = json.dumps({**env, "sig": env["sig"][:-4] + ("AAA=" if env["sig"][-4:] != "AAA=" else "BBB=")})
    junk = [b"{not json", b"\xff\xfe garbage", json.dumps({"v": 1}).encode(),
            sign_command(stranger, type="ping", args={}, target=DEVICE), bad_sig.encode(),
            json.dumps({**env, "kid": key_id(stranger.public_key())}).encode()]
    attacker = Attacker(mqtt_broker)
    ids = []
    try:
        infos = []
        for i in range(500):
            for j in range(2):
                infos.append(attacker.publish(f"edge-app/{DEVICE}/cmd", junk[(2 * i + j) % len(junk)]))
            ids.append(f"flood-ping-{i:04d}")
            infos.append(attacker.publish(f"edge-app/{DEVICE}/cmd", sign_command(
                admin, type="ping", args={}, target=DEVICE, command_id=ids[-1])))
        for info in infos:
            info.wait_for_publish(30)
    finally:
        attacker.close()
    until(lambda: set(ids) <= set(results(witness)), 120,
          f"an answer to each of the 500 pings (have {len(set(ids) & set(results(witness)))})")
    answers = results(witness)
    reasons = [answers[i]["error"]["reason"] if not answers[i]["ok"] else "ok" for i in ids]
    assert set(reasons) <= {"ok", "busy"}
    assert reasons.count("ok") > 0
    assert kiosk.control is not None
    assert kiosk.control.counts["rejected"] == 1000  # every piece of junk refused before the queue
    assert kiosk.control.counts["busy"] == reasons.count("busy")
    assert "Outgoing messages are being dropped" not in mqtt_broker.output()


def test_the_client_id_is_not_guessable_so_nobody_kicks_the_kiosk_off(mqtt_broker, kiosks):
    kiosk = kiosks()
    other = kiosks()
    until(lambda: kiosk.link.connected and other.link.connected, 10, "both to connect")
    ids = {kiosk.link.client_id, other.link.client_id}
    assert len(ids) == 2 and all(i.startswith(f"edge-app-{DEVICE}-") and len(i) == len(DEVICE) + 18 for i in ids)
    intruder = Attacker(mqtt_broker, client_id=f"edge-app-{DEVICE}")  # the id it had before
    try:
        # mosquitto closes a client's older connection while it handles the newer CONNECT, before its CONNACK.
        assert "already connected, closing old connection" not in mqtt_broker.output()
        assert kiosk.link.connected
    finally:
        intruder.close()
