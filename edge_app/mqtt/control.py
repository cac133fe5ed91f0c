"""The daemon's MQTT side: events into the outbox, state, and admin commands run on the daemon's
own thread (SQLite and the matcher live there), with their results.

The link delivers commands on its own thread (not the daemon's). There each one gets every check that
needs no storage (size, envelope, key, signature, payload, target, time: ``CommandVerifier.check``), so junk is
refused before it takes a place in the queue, and its refusals are answered at most
``JUNK_ANSWERS_PER_S`` a second (a flood must not become a flood of results). A signed command waits
in a queue of ``MAX_QUEUED`` until the daemon loop calls ``poll()``; when that queue is full it is
answered ``busy`` at once: every signed command gets an answer. Home Assistant's unlock button has its
own small queue, so neither can crowd out the other. A command that changes the gallery makes
``poll()`` return True so the daemon reloads its matcher before the next frame.

No exception from a command (a full disk under the seen-ids table, a broken database) leaves
``poll()``: the command is answered with reason ``storage`` (or ``internal``) and logged.
"""

from __future__ import annotations

import collections
import json
import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final, Protocol

from edge_app.errors import CommandRejected, EdgeAppError, GalleryError
from edge_app.gallery.eventlog import EventLog
from edge_app.gallery.store import Gallery
from edge_app.mqtt.commands import CommandError, CommandHandler
from edge_app.mqtt.security import Command, CommandVerifier

log = logging.getLogger(__name__)

CHANGES_GALLERY = frozenset({"gallery.upsert", "gallery.delete", "gallery.replace"})
MAX_QUEUED: Final = 100  # signed commands waiting for the loop; more are answered "busy"
MAX_HA_QUEUED: Final = 4  # Home Assistant button presses waiting for the loop; more are dropped (and logged)
JUNK_ANSWERS_PER_S: Final = 10  # answers to unsigned junk (bad envelope, key, signature); the rest only counted
RECENT_IDS: Final = 10_000  # ids queued lately: a captured command replayed in a loop must not fill the queue
HA_REFUSALS_AUDITED_PER_MIN: Final = 6  # refused HA unlocks stored as events; the rest counted in the next one
STORAGE_ERRORS = (GalleryError, sqlite3.Error, OSError)


class Link(Protocol):
    def topic(self, suffix: str) -> str: ...
    def wake(self) -> None: ...
    def publish_state(self, state: Mapping[str, Any]) -> None: ...
    def publish_result(self, payload: bytes) -> None: ...


class RateLimit:
    """At most `count` events in any `per_s` seconds, and at least `min_gap_s` between two; thread-safe."""

    def __init__(self, count: int, per_s: float, min_gap_s: float = 0.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if count < 1 or per_s <= 0 or min_gap_s < 0:
            raise ValueError(f"rate limit: need count >= 1, per_s > 0, min_gap_s >= 0; got {count}, {per_s}, "
                             f"{min_gap_s}")
        self.count, self.per_s, self.min_gap_s, self.clock = count, per_s, min_gap_s, clock
        self._times: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()
        self.refused = 0  # since the last allowed event

    def allow(self) -> bool:
        with self._lock:
            now = self.clock()
            while self._times and now - self._times[0] >= self.per_s:
                self._times.popleft()
            if len(self._times) >= self.count or (self._times and now - self._times[-1] < self.min_gap_s):
                self.refused += 1
                return False
            self._times.append(now)
            return True

    def take_refused(self) -> int:
        with self._lock:
            n, self.refused = self.refused, 0
            return n


class ControlPlane:
    def __init__(self, link: Link, gallery: Gallery, verifier: CommandVerifier, handler: CommandHandler,
                 device_id: str, ha_unlock_topic: str | None = None, unlock: Callable[[float | None], None] | None
                 = None, ha_allowed: bool = False, ha_limit: RateLimit | None = None) -> None:
        self.link, self.gallery, self.verifier, self.handler = link, gallery, verifier, handler
        self.device_id = device_id
        # Events: SQLite row + outbox, or memory (published directly by the link) when storage fails.
        self.events = EventLog(gallery, link.topic("events"), device_id, wake=link.wake)
        self._inbox: queue.Queue[Command] = queue.Queue(MAX_QUEUED)
        self._ha_inbox: queue.Queue[bytes] = queue.Queue(MAX_HA_QUEUED)
        # The HA button is unsigned: it needs allow_remote_unlock as well as ha_remote_unlock, and a rate limit.
        self.ha_unlock_topic, self._unlock, self.ha_allowed = ha_unlock_topic, unlock, ha_allowed
        self.ha_limit = ha_limit or RateLimit(6, 60.0, 5.0)
        self._ha_audits = RateLimit(HA_REFUSALS_AUDITED_PER_MIN, 60.0)
        self._junk_answers = RateLimit(JUNK_ANSWERS_PER_S, 1.0)
        self._version: int | None = None  # the last gallery version read on the daemon's thread
        self._recent: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._recent_lock = threading.Lock()
        self.counts: collections.Counter[str] = collections.Counter()  # what happened to commands, for tests/stats

    # --- the link's thread: nothing here touches SQLite ---------------------------------------------

    def on_command(self, topic: str, payload: bytes) -> None:
        if self.ha_unlock_topic and topic == self.ha_unlock_topic:
            try:
                self._ha_inbox.put_nowait(payload)
            except queue.Full:
                self.counts["ha_dropped"] += 1
                log.warning("Home Assistant unlock queue full (%d): dropped a press", MAX_HA_QUEUED)
            return
        try:
            cmd = self.verifier.check(payload)
        except CommandRejected as exc:
            self._refuse_early(topic, exc)
            return
        with self._recent_lock:
            seen = cmd.id in self._recent
            self._recent[cmd.id] = None
            if len(self._recent) > RECENT_IDS:
                self._recent.popitem(last=False)
        if seen:  # the daemon's check (in SQLite) would refuse it too, after a wait in the queue
            self._refuse_early(topic, CommandRejected("replayed", f"command {cmd.id} was already received", cmd.id))
            return
        try:
            self._inbox.put_nowait(cmd)
            self.counts["queued"] += 1
        except queue.Full:
            self._unspent(cmd.id)
            self.counts["busy"] += 1
            log.warning("command queue full (%d): answered %s %s busy", MAX_QUEUED, cmd.type, cmd.id)
            self._answer(cmd.id, cmd.type, False, error={
                "reason": "busy", "message": f"{MAX_QUEUED} commands are waiting; send it again later"})

    def _refuse_early(self, topic: str, exc: CommandRejected) -> None:
        self.counts["rejected"] += 1
        if exc.command_id is None and not self._junk_answers.allow():
            # Unsigned junk past the answer rate: counted, said in the next answered refusal's log line.
            self.counts["unanswered"] += 1
            return
        suppressed = self._junk_answers.take_refused() if exc.command_id is None else 0
        log.warning("command on %s refused: %s%s", topic, exc,
                    f" (and {suppressed} more unsigned ones, not answered)" if suppressed else "")
        self._answer(exc.command_id, None, False, error={"reason": exc.reason, "message": _message(exc)})

    # --- the daemon's thread -----------------------------------------------------------------------

    # --- the daemon's thread -----------------------------------------------------------------------

    def publish_state(self, state: Mapping[str, Any]) -> None:
        self.link.publish_state({"device": self.device_id, **state,
                                 "ts": datetime.now(UTC).isoformat(timespec="seconds")})

    def poll(self) -> bool:
        """Run the commands that arrived; True when the gallery changed. Never raises."""
        self._refresh_version()
        while True:
            try:
                payload = self._ha_inbox.get_nowait()
            except queue.Empty:
                break
            self._ha_unlock(payload)
        changed = False
        while True:
            try:
                cmd = self._inbox.get_nowait()
            except queue.Empty:
                return changed
            changed |= self._run(cmd)

    def _ha_unlock(self, payload: bytes) -> None:
        text = payload.strip().upper()
        if text == b"LOCK":  # the door locks by itself at the end of the pulse
            log.info("Home Assistant asked to lock: the door locks by itself")
            return
        if text != b"UNLOCK":
            log.warning("ignored %r on %s (expected UNLOCK)", payload[:40], self.ha_unlock_topic)
            return
        why = ("disabled: [mqtt] allow_remote_unlock is false" if not self.ha_allowed or self._unlock is None
               else "rate_limited" if not self.ha_limit.allow() else None)
        if why is None:
            log.warning("door unlocked from Home Assistant (unsigned; [mqtt] ha_remote_unlock)")
            self._unlock(None)  # type: ignore[misc]  # checked above
            self.counts["ha_unlocked"] += 1
            self._audit("ha_unlock", {})
            return
        self.counts["ha_refused"] += 1
        log.warning("Home Assistant unlock refused: %s", why)
        if self._ha_audits.allow():
            self._audit("ha_unlock_refused", {"why": why.split(":")[0],
                                              "not_audited_before": self._ha_audits.take_refused()})

    def record_event(self, kind: str, reason: str, *, ts: datetime, **fields: Any) -> str:
        """Store an event row and queue the same event for the broker: the one path for both."""
        return self.events.record(kind, reason, ts=ts, **fields)

    def _audit(self, reason: str, details: dict[str, Any]) -> None:
        try:
            self.record_event("door", reason, ts=datetime.now(UTC), details={"device": self.device_id, **details})
        except (EdgeAppError, *STORAGE_ERRORS):
            # What happened to the door stands; a full disk only costs its record.
            log.exception("could not store the audit event %s %s", reason, details)

    def _run(self, cmd: Command) -> bool:
        stored = False  # this run stored the command's id (accept succeeded)
        try:
            self.verifier.accept(cmd)
            stored = True
            # Issue times of applied changes older than the window order nothing: a command that old is expired.
            self.handler.order.forget_before(self.verifier.clock() - self.verifier.window_s - self.verifier.max_skew_s)
            result = self.handler.handle(cmd.type, cmd.args, cmd.issued_at)
        except CommandRejected as exc:
            self.counts["refused"] += 1
            if exc.reason != "replayed":
                self._unspent(cmd.id)
            log.warning("command refused: %s", exc)
            self._answer(exc.command_id, cmd.type, False, error={"reason": exc.reason, "message": _message(exc)})
            return False
        except CommandError as exc:
            self.counts["failed"] += 1
            log.warning("command %s %s failed: %s", cmd.type, cmd.id, exc)
            self._answer(cmd.id, cmd.type, False, error={"reason": exc.reason, "message": str(exc)})
            return False
        except STORAGE_ERRORS as exc:  # a full or broken disk: the daemon lives on, the admin hears why
            self.counts["storage"] += 1
            self._unspent(cmd.id, stored)
            log.error("command %s %s failed on storage: %s", cmd.type, cmd.id, exc)
            self._answer(cmd.id, cmd.type, False, error={"reason": "storage", "message": str(exc)[:300]})
            return False
        except Exception as exc:  # a bug must not stop the door either
            self.counts["internal"] += 1
            self._unspent(cmd.id, stored)
            log.exception("command %s %s failed", cmd.type, cmd.id)
            self._answer(cmd.id, cmd.type, False, error={"reason": "internal",
                                                         "message": f"{type(exc).__name__}: {str(exc)[:200]}"})
            return False
        self.counts["ok"] += 1
        log.info("command %s %s from key %s: ok", cmd.type, cmd.id, cmd.kid)
        if cmd.type == "door.unlock":  # who opened the door remotely belongs in the event log
            self._audit("remote_unlock", {"command": cmd.id, "key": cmd.kid, "seconds": result.get("seconds")})
        self._refresh_version()
        self._answer(cmd.id, cmd.type, True, result=result)
        return cmd.type in CHANGES_GALLERY

    def _unspent(self, command_id: str, stored: bool = False) -> None:
        """Not run: the same command may come again. ``stored``: this run stored the id before the command failed
        in one rolled-back transaction, so the stored id is forgotten too (if storage lets us)."""
        with self._recent_lock:
            self._recent.pop(command_id, None)
        if stored:
            try:
                self.verifier.seen.discard(command_id)
            except (EdgeAppError, *STORAGE_ERRORS) as exc:
                log.error("command %s failed and its id could not be forgotten (%s): resending it is refused as "
                          "replayed; send it with a new id", command_id, exc)

    def _refresh_version(self) -> None:
        try:
            self._version = self.gallery.gallery_version
        except (EdgeAppError, *STORAGE_ERRORS) as exc:
            log.debug("gallery version unreadable: %s", exc)

    def _answer(self, command_id: str | None, type_: str | None, ok: bool, **body: Any) -> None:
        """Any thread: it only reads the cached gallery version."""
        doc = {"id": command_id, "device": self.device_id, "type": type_, "ok": ok, **body,
               "gallery_version": self._version, "ts": datetime.now(UTC).isoformat(timespec="seconds")}
        self.counts["answered"] += 1
        self.link.publish_result(json.dumps(doc, default=str, ensure_ascii=False).encode())


def _message(exc: CommandRejected) -> str:
    text = str(exc)
    prefix = f"{exc.reason}: "
    return text[len(prefix):] if text.startswith(prefix) else text
