"""The MQTT link: one paho client, its network thread, an "mqtt-commands" thread and an "mqtt-outbox" worker.

Topics (``<prefix>/<device>/...``):

* ``status``: retained "online" after each connect; the broker's will (LWT) is a retained "offline",
  and a clean stop() publishes that itself before disconnecting.
* ``events`` (or whatever topic a message was put on): only through the SQLite outbox. The worker sends
  one message at a time and deletes it only when its PUBACK arrived, so messages survive a broker or
  network outage (and a reboot) and reach the broker in ``seq`` order.
* ``state``: retained JSON from publish_state(); the latest replaces the previous, re-sent on every connect.
* ``cmd`` and ``group/<g>/cmd`` (QoS 1) go to ``on_command(topic, payload)``, except retained messages,
  which are dropped (logged): a retained command would run again on every reconnect; publish_result() answers on
  ``cmd/result`` (QoS 1, directly, not through the outbox: a result only matters to an issuer that is
  waiting for it now, and a command only arrives while connected. Results produced while the link is
  down wait in memory, at most ``MAX_PENDING_RESULTS``, and are lost on a restart.)

Delivery is at-least-once, in order. A message whose PUBACK never came is sent again: by paho after a
reconnect (with the DUP flag), or from the outbox after a restart of edge-app. The broker therefore gets
a message twice only when the connection (or edge-app) went away between the broker receiving it and
the outbox recording its acknowledgement; with one message in flight that is at most one duplicate per
outage, right after the first copy. (Across a broker restart the broker may also re-deliver to
persistent subscribers on its own.) Subscribers that must not act twice de-duplicate on the event id.

Only the worker publishes (on_connect publishes the "online" status, stop() the "offline"), and only
while connected: paho would hold every QoS>0 message it cannot send in memory and send them all on
reconnect, the outbox would send them again, and one-at-a-time ordering would be lost.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import secrets
import sqlite3
import ssl
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.client import ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge_app.errors import GalleryError
from edge_app.gallery.outbox import Outbox
from edge_app.gallery.store import Gallery

log = logging.getLogger(__name__)
_paho_log = logging.getLogger(__name__ + ".paho")

POLL_S: Final = 1.0  # the worker looks at the outbox at least this often, wake() or not
MAX_PENDING_RESULTS: Final = 1000  # above the control plane's queue: a burst of answers is not cut
MAX_PAHO_QUEUE: Final = 1000  # a guard: the worker never has more than a handful of messages in paho
OFFLINE_WAIT_S: Final = 2.0  # how long stop() waits for the broker to acknowledge "offline"
# Commands wait here for on_command; past either bound paho's thread runs on_command itself (slower
# reading pushes back on the broker), so nothing is dropped on our side.
MAX_INTAKE: Final = 10_000
MAX_INTAKE_BYTES: Final = 32 * 1024 * 1024


def _check_segment(field: str, value: object) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field}: must be a non-empty string, got {value!r}")
    bad = sorted({c for c in value if c in "+#/\0" or c.isspace()})
    if bad:  # a wildcard or separator would change which topics we publish to or subscribe
        raise ValueError(f"{field}: must not contain {' '.join(map(repr, bad))}, got {value!r}")


@dataclass(frozen=True)
class MqttSettings:
    host: str = "localhost"
    port: int = 1883
    prefix: str = "edge-app"
    device_id: str = "kiosk"
    groups: tuple[str, ...] = ()
    username: str | None = None
    password: str | None = None
    tls: bool = False
    ca_file: Path | None = None  # None with tls: the system's CA store
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = 30
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 60.0
    client_id: str | None = None  # default "edge-app-<device_id>-<8 random hex>", new each start of edge-app

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip() or any(c.isspace() for c in self.host):
            raise ValueError(f"host: must be a host name or address, got {self.host!r}")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 1 <= self.port <= 65535:
            raise ValueError(f"port: must be 1..65535, got {self.port!r}")
        _check_segment("prefix", self.prefix)
        _check_segment("device_id", self.device_id)
        if isinstance(self.groups, str):
            raise ValueError(f"groups: must be a list of group names, got the string {self.groups!r}")
        for g in self.groups:
            _check_segment("groups", g)
        if self.password is not None and self.username is None:
            raise ValueError("password: set without a username")
        if self.username is not None and not self.username:
            raise ValueError("username: must not be empty")
        if not self.tls:
            given = [n for n in ("ca_file", "cert_file", "key_file") if getattr(self, n) is not None]
            if given:  # the operator expects TLS; falling back to plain text would send the password in clear
                raise ValueError(f"tls: {', '.join(given)} set but tls is false")
        if self.cert_file is not None and self.key_file is None:
            raise ValueError("key_file: cert_file is set but key_file is not")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("cert_file: key_file is set but cert_file is not")
        for name in ("ca_file", "cert_file", "key_file"):
            p = getattr(self, name)
            if p is not None and not Path(p).is_file():
                raise ValueError(f"{name}: file not found: {p}")
        if isinstance(self.keepalive, bool) or not isinstance(self.keepalive, int) or not 5 <= self.keepalive <= 65535:
            raise ValueError(f"keepalive: must be 5..65535 seconds, got {self.keepalive!r}")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError(f"reconnect_min_s/reconnect_max_s: need 0 < min <= max, got "
                             f"{self.reconnect_min_s!r}, {self.reconnect_max_s!r}")
        if self.client_id is not None and (not self.client_id or any(ord(c) < 32 for c in self.client_id)):
            raise ValueError(f"client_id: must be non-empty printable text, got {self.client_id!r}")


class HeldEvents(Protocol):
    def publish_held(self, publish: Callable[[str, bytes], bool]) -> int: ...


class MqttLink:
    """Connects in the background and keeps reconnecting; see the module docstring for the contract.

    ``on_command`` runs on the link's "mqtt-commands" thread (or, while that is MAX_INTAKE behind, on
    paho's network thread): hand the work off quickly. stop() sets ``stop``,
    which may be shared with the daemon, as the other threads of edge-app do."""

    def __init__(self, settings: MqttSettings, gallery_path: Path,
                 on_command: Callable[[str, bytes], None] | None = None,
                 stop: threading.Event | None = None, extra_topics: tuple[str, ...] = (),
                 retained_on_connect: tuple[tuple[str, bytes], ...] = ()) -> None:
        self.settings = s = settings
        # Home Assistant: its unlock topic (delivered to on_command too) and the discovery configs.
        self.extra_topics = extra_topics
        self.retained_on_connect = retained_on_connect
        self.gallery_path = Path(gallery_path)
        self.on_command = on_command
        self.stop_event = stop or threading.Event()
        self.sent = 0  # outbox messages acknowledged by the broker
        self.retained_ignored = 0  # retained messages on the command topics, dropped
        self._wake = threading.Event()
        self._connected = threading.Event()
        self._lock = threading.Lock()
        self._watch: set[int] = set()  # mids the worker waits for
        self._acked: set[int] = set()  # of those (or of the one being published), the acknowledged ones
        self._publishing = False
        self._inflight: tuple[int, int] | None = None  # (outbox seq, mid) sent and not yet acknowledged
        self._state: bytes | None = None
        self._state_dirty = False
        self._state_mid: int | None = None
        self._results: collections.deque[bytes] = collections.deque()
        # Events the database could not take (edge_app.gallery.eventlog.EventLog), published directly.
        self.held_events: HeldEvents | None = None
        self._last_problem = ""
        self._started = False
        self._worker = threading.Thread(target=self._run, name="mqtt-outbox", daemon=True)
        # paho's thread only queues commands: a broker keeps at most ~1000 messages for a slow client and
        # drops the rest, so a flood must be read off the socket faster than it is checked.
        self._intake: collections.deque[tuple[str, bytes]] = collections.deque()
        self._intake_bytes = 0
        self._intake_ready = threading.Condition(threading.Lock())
        self._intaker = threading.Thread(target=self._run_intake, name="mqtt-commands", daemon=True)

        # A random suffix per boot: a predictable id lets any client of the broker kick the kiosk off by
        # connecting with it (MQTT drops the older session of a client id).
        self.client_id = s.client_id or f"edge-app-{s.device_id}-{secrets.token_hex(4)}"
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=self.client_id,
                        clean_session=True, protocol=MQTTProtocolVersion.MQTTv311)
        # Clean session: commands sent while we were away are not replayed (they would be stale anyway).
        c.on_log = self._on_log
        # paho counts whole seconds; round up so a 0.5 s setting does not become a busy loop.
        c.reconnect_delay_set(max(1, math.ceil(s.reconnect_min_s)), max(1, math.ceil(s.reconnect_max_s)))
        c.max_inflight_messages_set(20)
        c.max_queued_messages_set(MAX_PAHO_QUEUE)
        c.will_set(self.topic("status"), b"offline", qos=1, retain=True)
        if s.username is not None:
            c.username_pw_set(s.username, s.password)
        if s.tls:
            try:
                c.tls_set(ca_certs=str(s.ca_file) if s.ca_file else None,
                          certfile=str(s.cert_file) if s.cert_file else None,
                          keyfile=str(s.key_file) if s.key_file else None)
            except (ssl.SSLError, OSError) as e:  # a file that is not PEM, a key that does not match its cert
                raise ValueError(f"ca_file/cert_file/key_file: cannot load for TLS: {e}") from e
        c.on_connect = self._on_connect
        c.on_connect_fail = self._on_connect_fail
        c.on_disconnect = self._on_disconnect
        c.on_publish = self._on_publish
        c.on_message = self._on_message
        self._client = c

    # --- public API -----------------------------------------------------------------------------

    def topic(self, suffix: str) -> str:
        return f"{self.settings.prefix}/{self.settings.device_id}/{suffix}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def start(self) -> None:
        """Begin connecting in the background; returns at once, broker or not."""
        if self._started:
            return
        self._started = True
        s = self.settings
        self._client.connect_async(s.host, s.port, keepalive=s.keepalive)
        self._client.loop_start()  # retries the first connection too, with the reconnect backoff
        self._worker.start()
        if self.on_command is not None:
            self._intaker.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Publish the retained "offline", disconnect and join the threads, within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        self.stop_event.set()
        self._wake.set()
        if not self._started:
            return
        with self._intake_ready:
            self._intake_ready.notify_all()
        for thread in (self._worker, self._intaker):
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        if self._connected.is_set():
            try:
                info = self._client.publish(self.topic("status"), b"offline", qos=1, retain=True)
                info.wait_for_publish(min(OFFLINE_WAIT_S, max(0.0, deadline - time.monotonic())))
            except (RuntimeError, ValueError) as e:  # the connection went meanwhile: the will says it
                log.debug("could not publish offline status: %s", e)
        self._client.disconnect()
        # loop_stop() joins without a timeout and the loop may sit in a TCP connect; bound it.
        stopper = threading.Thread(target=self._client.loop_stop, name="mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(0.0, deadline - time.monotonic()))
        self._connected.clear()
        if self._worker.is_alive() or stopper.is_alive():
            log.warning("mqtt link did not stop within %.1f s", timeout)
        else:
            log.info("mqtt link stopped")

    def wake(self) -> None:
        """Something was put in the outbox: send it now rather than at the next poll."""
        self._wake.set()

    def publish_state(self, state: Mapping[str, Any]) -> None:
        """Retained JSON on ``state``; only the latest is kept, sent now or after the next connect."""
        payload = json.dumps(dict(state), sort_keys=True, separators=(",", ":")).encode()
        with self._lock:
            self._state = payload
            self._state_dirty = True
        self._wake.set()

    def publish_result(self, payload: bytes) -> None:
        """A command's result on ``cmd/result`` (QoS 1); kept in memory while the link is down."""
        with self._lock:
            if len(self._results) >= MAX_PENDING_RESULTS:
                self._results.popleft()
                log.warning("mqtt link down: %d command results pending, dropped the oldest", MAX_PENDING_RESULTS)
            self._results.append(bytes(payload))
        self._wake.set()

    # --- paho callbacks (network thread) --------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        s = self.settings
        if reason_code.is_failure:
            self._problem(logging.ERROR, f"broker {s.host}:{s.port} refused the connection: {reason_code}"
                          + (" (check username/password)" if reason_code.value in (4, 5, 134, 135) else ""))
            return
        self._last_problem = ""
        log.info("connected to mqtt broker %s:%d%s", s.host, s.port, " (TLS)" if s.tls else "")
        subs = [(self.topic("cmd"), 1)] + [(f"{s.prefix}/group/{g}/cmd", 1) for g in s.groups]
        subs += [(t, 1) for t in self.extra_topics]
        client.subscribe(subs)
        # After the subscription: the broker handles one connection's packets in order, so whoever sees
        # "online" can send a command (or a Home Assistant press) and it is heard.
        client.publish(self.topic("status"), b"online", qos=1, retain=True)
        for topic, payload in self.retained_on_connect:
            client.publish(topic, payload, qos=1, retain=True)
        with self._lock:
            self._state_dirty = self._state is not None
        self._connected.set()
        self._wake.set()

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        # paho calls this from inside its `except OSError`, so the exception in flight is the reason.
        err = sys.exc_info()[1]
        s = self.settings
        if isinstance(err, ssl.SSLCertVerificationError):
            self._problem(logging.ERROR, f"TLS to {s.host}:{s.port}: certificate verify failed: {err.verify_message} "
                          f"(check ca_file {s.ca_file} and that the broker's certificate names {s.host})")
        elif isinstance(err, ssl.SSLError):
            self._problem(logging.ERROR, f"TLS to {s.host}:{s.port} failed: {err} (check tls, cert_file, key_file)")
        else:
            self._problem(logging.WARNING, f"cannot connect to mqtt broker {s.host}:{s.port}: {err}; retrying")

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: DisconnectFlags,
                       reason_code: ReasonCode, properties: Properties | None) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if self.stop_event.is_set():
            return
        if was:
            log.warning("lost the mqtt broker %s:%d (%s); reconnecting", self.settings.host, self.settings.port,
                        reason_code)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Properties | None) -> None:
        with self._lock:
            if mid in self._watch or self._publishing:  # the latter: a PUBACK faster than publish() returned
                self._acked.add(mid)
        self._wake.set()

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, buf: str) -> None:
        # All at debug: paho says "not connected" at error on every retry; what matters is logged by us.
        _paho_log.debug("%s", buf)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: MQTTMessage) -> None:
        if self.on_command is None:
            return
        if message.retain:
            self.retained_ignored += 1
            # A retained command is a stale one replayed on every (re)connect: a retained UNLOCK on the
            # Home Assistant topic would open the door each time. Commands are never retained.
            log.warning("ignored a retained message on %s (%d bytes): commands must not be retained; clear it "
                        "with an empty retained message", message.topic, len(message.payload))
            return
        payload = bytes(message.payload)
        with self._intake_ready:
            if len(self._intake) < MAX_INTAKE and self._intake_bytes + len(payload) <= MAX_INTAKE_BYTES:
                self._intake.append((message.topic, payload))
                self._intake_bytes += len(payload)
                self._intake_ready.notify()
                return
        self._deliver(message.topic, payload)  # full: on this thread, which slows the reading

    def _deliver(self, topic: str, payload: bytes) -> None:
        assert self.on_command is not None
        try:
            self.on_command(topic, payload)
        except Exception:  # an exception escaping would end the thread that called it
            log.exception("on_command failed for a message on %s", topic)

    def _run_intake(self) -> None:
        while True:
            with self._intake_ready:
                while not self._intake and not self.stop_event.is_set():
                    self._intake_ready.wait(POLL_S)
                if self.stop_event.is_set():
                    return
                topic, payload = self._intake.popleft()
                self._intake_bytes -= len(payload)
            self._deliver(topic, payload)

    def _problem(self, level: int, text: str) -> None:
        # Said once at its level, then at debug: the retries would otherwise repeat it every backoff.
        log.log(level if text != self._last_problem else logging.DEBUG, "%s", text)
        self._last_problem = text

    # --- the worker ("mqtt-outbox" thread) ------------------------------------------------------

    def _run(self) -> None:
        gallery: Gallery | None = None
        retry_at = 0.0
        try:
            while not self.stop_event.is_set():
                self._wake.wait(POLL_S)
                self._wake.clear()
                if self.stop_event.is_set():
                    break
                if gallery is None and time.monotonic() >= retry_at:
                    try:  # our own connection: SQLite objects stay on the thread that opened them
                        gallery = Gallery(self.gallery_path)
                    except GalleryError as e:  # e.g. read-only: state, results and events in memory still go
                        self._problem(logging.ERROR, f"mqtt outbox: {e}; retrying")
                        retry_at = time.monotonic() + 5 * POLL_S
                if not self._connected.is_set():
                    continue
                try:
                    self._send_state()
                    self._send_results()
                    self._send_held()
                    if gallery is not None:
                        self._send_outbox(Outbox(gallery))
                except (GalleryError, sqlite3.Error) as e:
                    log.error("mqtt outbox: %s; retrying", e)
                    self.stop_event.wait(POLL_S)
                except Exception:  # the thread must live on: without it nothing leaves the outbox
                    log.exception("mqtt outbox worker failed; retrying")
                    self.stop_event.wait(POLL_S)
        finally:
            if gallery is not None:
                gallery.close()

    def _publish(self, topic: str, payload: bytes, qos: int, retain: bool, watch: bool) -> int | None:
        """publish() and, with `watch`, track its PUBACK; None when paho's queue is full."""
        with self._lock:
            self._publishing = True
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain)
        except ValueError:
            with self._lock:
                self._publishing = False
            raise
        with self._lock:
            self._publishing = False
            if watch:
                self._watch.add(info.mid)
            self._acked &= self._watch  # drop acks of messages nobody waits for
        if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE or (qos == 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._forget(info.mid)  # not kept by paho: send it again later
            return None
        # QoS>0 and MQTT_ERR_NO_CONN: the connection went just now; paho keeps the message and sends it
        # after reconnecting, and its PUBACK then comes as usual.
        return info.mid

    def _done(self, mid: int) -> bool:
        with self._lock:
            return mid in self._acked

    def _forget(self, mid: int) -> None:
        with self._lock:
            self._watch.discard(mid)
            self._acked.discard(mid)

    def _send_state(self) -> None:
        if self._state_mid is not None:
            if not self._done(self._state_mid):
                return  # an older state is still in flight; sending the new one now could let the old win
            self._forget(self._state_mid)
            self._state_mid = None
        with self._lock:
            payload, dirty = self._state, self._state_dirty
            self._state_dirty = False
        if dirty and payload is not None:
            self._state_mid = self._publish(self.topic("state"), payload, 1, True, watch=True)
            if self._state_mid is None:
                with self._lock:
                    self._state_dirty = True

    def _send_results(self) -> None:
        while self._connected.is_set():
            with self._lock:
                if not self._results:
                    return
                payload = self._results.popleft()
            if self._publish(self.topic("cmd/result"), payload, 1, False, watch=False) is None:
                with self._lock:
                    self._results.appendleft(payload)
                return

    def _send_held(self) -> None:
        if self.held_events is not None:
            self.held_events.publish_held(
                lambda topic, payload: self._connected.is_set()
                and self._publish(topic, payload, 1, False, watch=False) is not None)

    def _send_outbox(self, outbox: Outbox) -> None:
        while not self.stop_event.is_set():
            if self._inflight is not None:
                seq, sent_mid = self._inflight
                if not self._done(sent_mid):
                    return  # on_publish wakes us when the PUBACK comes, after a reconnect if need be
                outbox.ack(seq)
                self._forget(sent_mid)
                self._inflight = None
                self.sent += 1
            if not self._connected.is_set():
                return
            batch = outbox.peek(1)
            if not batch:
                return
            m = batch[0]
            try:
                mid = self._publish(m.topic, m.payload, m.qos, m.retain, watch=True)
            except ValueError as e:  # paho refuses it (e.g. too large): it would block the queue forever
                log.error("mqtt outbox: dropping message %d on %s: %s", m.seq, m.topic, e)
                outbox.ack(m.seq)
                continue
            if mid is None:
                return
            self._inflight = (m.seq, mid)
