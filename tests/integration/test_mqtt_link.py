"""edge_app.mqtt.link against a real mosquitto (tests/mqtt_broker.py), watched by independent clients:
a paho client of our own (Witness) and mosquitto_sub."""

from __future__ import annotations

import json
import logging
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from edge_app.gallery.outbox import Outbox
from edge_app.gallery.store import Gallery
from edge_app.mqtt.link import MqttLink, MqttSettings
from tests.conftest import require_tool
from tests.mqtt_broker import Broker, TlsFiles, make_ca

ROOT = Path(__file__).resolve().parents[2]
WAIT = 30.0  # generous; each test takes a few seconds


def until(pred: Callable[[], bool], timeout: float = WAIT, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def tool(name: str) -> str:
    return require_tool(name, "mosquitto-clients")


class Witness:
    """An independent paho subscriber that records (topic, payload, retain, dup) of everything it gets.
    A `client_id` makes its session persistent (clean_session False): the broker queues QoS 1
    messages for it while it is away, and with persistence across broker restarts too."""

    def __init__(self, broker: Broker, topic: str, *, client_id: str | None = None,
                 tls: TlsFiles | None = None, user: tuple[str, str] | None = None) -> None:
        self.topic = topic
        self.messages: list[tuple[str, bytes, bool, bool]] = []
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id or "", clean_session=client_id is None)
        c.reconnect_delay_set(1, 1)
        if tls is not None:
            c.tls_set(ca_certs=str(tls.ca_cert), certfile=str(tls.client_cert), keyfile=str(tls.client_key))
        if user is not None:
            c.username_pw_set(*user)
        c.on_connect = lambda cl, ud, fl, rc, pr: cl.subscribe(topic, 1)
        c.on_subscribe = lambda cl, ud, mid, rcs, pr: self._subscribed.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=10)
        c.loop_start()
        self.client = c
        if not self._subscribed.wait(10):
            pytest.fail(f"witness could not subscribe to {topic}")

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.retain), bool(msg.dup)))

    def payloads(self) -> list[bytes]:
        with self._lock:
            return [m[1] for m in self.messages]

    def first_deliveries(self) -> list[bytes]:
        """Payloads without the broker's own re-deliveries to us (DUP set, payload seen before): across a
        broker restart mosquitto re-sends messages whose PUBACK from us it had not processed yet."""
        seen: set[bytes] = set()
        out = []
        with self._lock:
            for _, payload, _, dup in self.messages:
                if not (dup and payload in seen):
                    out.append(payload)
                seen.add(payload)
        return out

    def wait_for(self, n: int, timeout: float = WAIT) -> list[bytes]:
        until(lambda: len(self.payloads()) >= n, timeout, f"{n} messages on {self.topic} (got {len(self.payloads())})")
        return self.payloads()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def gallery_path(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "gallery.db"
    Gallery(path).close()  # migrated before the link's worker opens it
    yield path


@pytest.fixture
def links() -> Iterator[Callable[..., MqttLink]]:
    """make(broker, gallery_path, **settings) -> a started link, stopped at teardown."""
    made: list[MqttLink] = []

    def make(broker: Broker, gallery_path: Path, on_command: Callable[[str, bytes], None] | None = None,
             start: bool = True, **kw: Any) -> MqttLink:
        kw = {"host": broker.host, "port": broker.port, "reconnect_min_s": 1, "reconnect_max_s": 1, **kw}
        link = MqttLink(MqttSettings(**kw), gallery_path, on_command=on_command)
        made.append(link)
        if start:
            link.start()
        return link

    yield make
    for link in made:
        link.stop(timeout=5)


def put_events(gallery_path: Path, link: MqttLink, numbers: range) -> None:
    """What the daemon does: put each event in the outbox on its own thread's Gallery, then wake()."""
    with Gallery(gallery_path) as g:
        box = Outbox(g)
        for n in numbers:
            box.put(link.topic("events"), json.dumps({"n": n}).encode())
            link.wake()


def outbox_len(gallery_path: Path) -> int:
    with Gallery(gallery_path) as g:
        return len(Outbox(g))


def numbers(payloads: list[bytes]) -> list[int]:
    return [int(json.loads(p)["n"]) for p in payloads]


# --- status -------------------------------------------------------------------------------------


def test_status_online_retained_then_offline_after_stop(mqtt_broker, gallery_path, links, witnesses):
    link = links(mqtt_broker, gallery_path)
    until(lambda: link.connected, 10, "the link to connect")
    status = link.topic("status")
    assert status == "edge-app/kiosk/status"
    assert witnesses(mqtt_broker, status).wait_for(1) == [b"online"]
    link.stop()
    assert not link.connected
    late = witnesses(mqtt_broker, status)
    assert late.wait_for(1) == [b"offline"]
    assert late.messages[0][2], "status must be retained"


def test_lwt_offline_when_the_process_dies(mqtt_broker, gallery_path, witnesses):
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from edge_app.mqtt.link import MqttLink, MqttSettings\n"
        f"link = MqttLink(MqttSettings(host={mqtt_broker.host!r}, port={mqtt_broker.port}, device_id='victim'), "
        f"Path({str(gallery_path)!r}))\n"
        "link.start()\n"
        "deadline = time.monotonic() + 10\n"
        "while not link.connected and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print('up' if link.connected else 'down', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "up"
        w = witnesses(mqtt_broker, "edge-app/victim/status")
        assert w.wait_for(1) == [b"online"]
        proc.send_signal(signal.SIGKILL)  # no clean stop: only the broker's will can say "offline"
        proc.wait(10)
        assert w.wait_for(2) == [b"online", b"offline"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert witnesses(mqtt_broker, "edge-app/victim/status").wait_for(1) == [b"offline"]  # and it is retained


# --- events through the outbox ------------------------------------------------------------------


def test_events_put_while_broker_down_arrive_once_in_order(mqtt_broker, gallery_path, links, witnesses):
    link = links(mqtt_broker, gallery_path)
    until(lambda: link.connected, 10, "the link to connect")
    # A persistent session on a persistent broker: what the link publishes after the restart is queued
    # for the witness even if the link gets there first.
    w = witnesses(mqtt_broker, link.topic("events"), client_id="witness-events")
    mqtt_broker.stop()
    until(lambda: not link.connected, 10, "the link to notice the broker is gone")

    put_events(gallery_path, link, range(200))
    time.sleep(0.5)
    assert outbox_len(gallery_path) == 200, "nothing may leave the outbox while the broker is away"

    t0 = time.monotonic()
    mqtt_broker.start()
    got = numbers(w.wait_for(200))
    until(lambda: outbox_len(gallery_path) == 0, 10, "the outbox to empty")
    logging.getLogger(__name__).info("200 events delivered %.1f s after the broker came back",
                                     time.monotonic() - t0)
    time.sleep(0.3)  # a late duplicate would show up now
    assert numbers(w.payloads()) == got == list(range(200))
    assert link.sent == 200


def test_events_broker_stopped_mid_stream(mqtt_broker, gallery_path, links, witnesses):
    link = links(mqtt_broker, gallery_path)
    until(lambda: link.connected, 10, "the link to connect")
    w = witnesses(mqtt_broker, link.topic("events"), client_id="witness-midstream")

    put_events(gallery_path, link, range(100))  # the link is sending these while we put them
    mqtt_broker.stop()
    until(lambda: not link.connected, 10, "the link to notice the broker is gone")
    left = outbox_len(gallery_path)
    put_events(gallery_path, link, range(100, 200))
    mqtt_broker.start()

    until(lambda: outbox_len(gallery_path) == 0, WAIT, "the outbox to empty")
    w.wait_for(200)
    time.sleep(0.3)  # a late duplicate would show up now
    got = numbers(w.first_deliveries())
    # At-least-once: the one message the broker got but had not acknowledged when it stopped may come
    # again right after itself. Nothing else may repeat, nothing may be missing, and the order holds.
    deduped = [n for i, n in enumerate(got) if i == 0 or n != got[i - 1]]
    detail = f"{left} were in the outbox when the broker stopped; got {w.messages}"
    assert deduped == list(range(200)), detail
    assert len(got) - len(deduped) <= 1, detail


# --- commands -----------------------------------------------------------------------------------


def test_commands_reach_on_command_and_results_go_out(mqtt_broker, gallery_path, links):
    received: queue.Queue[tuple[str, bytes]] = queue.Queue()
    link = links(mqtt_broker, gallery_path, on_command=lambda t, p: received.put((t, p)), groups=("lobby", "east"))
    until(lambda: link.connected, 10, "the link to connect")
    pub = [tool("mosquitto_pub"), "-h", mqtt_broker.host, "-p", str(mqtt_broker.port), "-q", "1"]

    def command(topic: str, payload: str) -> tuple[str, bytes]:
        # Repeated until it arrives: the link's SUBACK may still be on its way when it says connected.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            subprocess.run([*pub, "-t", topic, "-m", payload], check=True, timeout=10)
            try:
                return received.get(timeout=0.5)
            except queue.Empty:
                continue
        pytest.fail(f"no command from {topic}")

    assert command("edge-app/kiosk/cmd", '{"type":"open"}') == ("edge-app/kiosk/cmd", b'{"type":"open"}')
    assert command("edge-app/group/east/cmd", "g") == ("edge-app/group/east/cmd", b"g")
    assert command("edge-app/group/lobby/cmd", "h") == ("edge-app/group/lobby/cmd", b"h")
    subprocess.run([*pub, "-t", "edge-app/other/cmd", "-m", "not ours"], check=True, timeout=10)
    subprocess.run([*pub, "-t", "edge-app/group/west/cmd", "-m", "not ours"], check=True, timeout=10)
    time.sleep(0.3)
    assert received.empty()

    # mosquitto_sub as the independent client. It cannot tell us when it has subscribed (its output is
    # block-buffered in a pipe), so the result is published until it has one (-C 1) or 10 s passed (-W 10).
    sub = subprocess.Popen([tool("mosquitto_sub"), "-h", mqtt_broker.host, "-p", str(mqtt_broker.port),
                            "-t", link.topic("cmd/result"), "-q", "1", "-C", "1", "-W", "10"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while sub.poll() is None:
            link.publish_result(b'{"id":"c1","ok":true}')
            try:
                sub.wait(0.2)
            except subprocess.TimeoutExpired:
                continue
        out, err = sub.communicate(timeout=5)
    finally:
        if sub.poll() is None:
            sub.kill()
    assert sub.returncode == 0, err
    assert '{"id":"c1","ok":true}' in out.splitlines()


# --- state --------------------------------------------------------------------------------------


def test_state_is_retained_and_latest_wins(mqtt_broker, gallery_path, links, witnesses):
    link = links(mqtt_broker, gallery_path, start=False)
    link.publish_state({"door": "closed", "n": 0})  # before connecting: sent once connected
    link.start()
    live = witnesses(mqtt_broker, link.topic("state"))
    assert json.loads(live.wait_for(1)[0]) == {"door": "closed", "n": 0}
    for n in range(1, 6):
        link.publish_state({"door": "open", "n": n})
    until(lambda: json.loads(live.payloads()[-1])["n"] == 5, 10, "the last state")
    late = witnesses(mqtt_broker, link.topic("state"))
    assert [json.loads(p) for p in late.wait_for(1)] == [{"door": "open", "n": 5}]
    assert late.messages[0][2], "state must be retained"


@pytest.fixture
def forgetful_broker(tmp_path: Path) -> Iterator[Broker]:
    """No persistence: a restart forgets retained messages."""
    broker = Broker(tmp_path / "forgetful").start()
    yield broker
    broker.stop()


def test_state_republished_on_reconnect(forgetful_broker, gallery_path, links, witnesses):
    broker = forgetful_broker
    link = links(broker, gallery_path)
    link.publish_state({"v": 1})
    until(lambda: link.connected, 10, "the link to connect")
    assert witnesses(broker, link.topic("state")).wait_for(1) == [b'{"v":1}']
    broker.restart()
    until(lambda: not link.connected, 10, "the link to notice the restart")
    until(lambda: link.connected, 10, "the link to reconnect")
    assert witnesses(broker, link.topic("state")).wait_for(1) == [b'{"v":1}']


# --- TLS ----------------------------------------------------------------------------------------


def tls_settings(broker: Broker, certs: TlsFiles, **kw: Any) -> dict[str, Any]:
    return {"tls": True, "ca_file": certs.ca_cert, "cert_file": certs.client_cert, "key_file": certs.client_key,
            "username": "kiosk", "password": broker.users["kiosk"], **kw}


def test_tls_with_client_cert_and_password(mqtt_tls_broker, mqtt_certs, gallery_path, links, witnesses):
    link = links(mqtt_tls_broker, gallery_path, **tls_settings(mqtt_tls_broker, mqtt_certs))
    until(lambda: link.connected, 10, "the link to connect over TLS")
    w = witnesses(mqtt_tls_broker, link.topic("#"), tls=mqtt_certs, user=("kiosk", "kiosk-secret"))
    put_events(gallery_path, link, range(3))
    assert w.wait_for(4)[:1] == [b"online"]
    assert numbers(w.payloads()[1:4]) == [0, 1, 2]


def test_tls_wrong_ca_does_not_connect_and_says_why(mqtt_tls_broker, mqtt_certs, gallery_path, links, tmp_path,
                                                    caplog):
    other_ca, _ = make_ca(tmp_path / "other-pki", "some other CA")
    caplog.set_level(logging.WARNING, logger="edge_app.mqtt.link")
    link = links(mqtt_tls_broker, gallery_path, **tls_settings(mqtt_tls_broker, mqtt_certs, ca_file=other_ca))
    until(lambda: any("certificate verify failed" in r.getMessage() for r in caplog.records), 10, "the TLS error")
    time.sleep(1.5)  # a retry or two: still refused, still alive, said once
    assert not link.connected
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "ca_file" in errors[0].getMessage() and str(other_ca) in errors[0].getMessage()


def test_tls_wrong_password_is_refused_and_logged(mqtt_tls_broker, mqtt_certs, gallery_path, links, caplog):
    caplog.set_level(logging.WARNING, logger="edge_app.mqtt.link")
    link = links(mqtt_tls_broker, gallery_path, **tls_settings(mqtt_tls_broker, mqtt_certs, password="wrong"))
    until(lambda: any("refused" in r.getMessage() for r in caplog.records), 10, "the refusal")
    assert not link.connected
    assert "username/password" in caplog.text


@pytest.mark.parametrize(("kw", "field"), [
    ({"tls": True, "ca_file": Path("/nonexistent/ca.crt")}, "ca_file"),
    ({"host": ""}, "host"),
    ({"port": 0}, "port"),
    ({"port": 65536}, "port"),
    ({"prefix": "edge/app"}, "prefix"),
    ({"prefix": ""}, "prefix"),
    ({"device_id": "kiosk+1"}, "device_id"),
    ({"groups": ("lobby", "#")}, "groups"),
    ({"groups": "lobby"}, "groups"),
    ({"tls": True, "cert_file": Path(__file__)}, "key_file"),
    ({"ca_file": Path(__file__)}, "tls"),
    ({"password": "x"}, "password"),
    ({"reconnect_min_s": 0}, "reconnect_min_s"),
])
def test_bad_settings_name_the_field(kw, field):
    with pytest.raises(ValueError, match=rf"^{field}\b"):
        MqttSettings(**kw)


# --- stop ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("was_connected", [False, True])
def test_stop_while_broker_down_returns_in_time(mqtt_broker, gallery_path, links, was_connected):
    if not was_connected:
        mqtt_broker.stop()
    link = links(mqtt_broker, gallery_path, reconnect_min_s=1, reconnect_max_s=30)
    if was_connected:
        until(lambda: link.connected, 10, "the link to connect")
        mqtt_broker.stop()
        until(lambda: not link.connected, 10, "the link to notice")
    put_events(gallery_path, link, range(3))
    time.sleep(1.2)  # into the reconnect backoff
    t0 = time.monotonic()
    link.stop(timeout=3)
    assert time.monotonic() - t0 < 3.5
    assert not link.connected
    assert not [t for t in threading.enumerate() if t.name == "mqtt-outbox" and t.is_alive()]
    assert outbox_len(gallery_path) == 3  # kept for the next run
