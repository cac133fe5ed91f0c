"""The daemon's MQTT side: events into the outbox, state, and admin commands run on the daemon's
own thread (SQLite and the matcher live there), with their results.

paho delivers commands on its network thread; they wait in a queue until the daemon loop calls
``poll()``. A command that changes the gallery makes ``poll()`` return True so the daemon
reloads its matcher before the next frame.
"""

from __future__ import annotations

import json
import logging
import queue
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from edge_app.errors import CommandRejected
from edge_app.gallery.eventlog import EventLog
from edge_app.gallery.store import Gallery
from edge_app.mqtt.commands import CommandError, CommandHandler
from edge_app.mqtt.security import CommandVerifier

log = logging.getLogger(__name__)

CHANGES_GALLERY = frozenset({"gallery.upsert", "gallery.delete", "gallery.replace"})
MAX_QUEUED = 100  # commands waiting for the loop; more are refused (a flood must not eat the memory)


class Link(Protocol):
    def topic(self, suffix: str) -> str: ...
    def wake(self) -> None: ...
    def publish_state(self, state: Mapping[str, Any]) -> None: ...
    def publish_result(self, payload: bytes) -> None: ...


class ControlPlane:
    def __init__(self, link: Link, gallery: Gallery, verifier: CommandVerifier, handler: CommandHandler,
                 device_id: str, ha_unlock_topic: str | None = None, unlock: Any = None) -> None:
        self.link, self.gallery, self.verifier, self.handler = link, gallery, verifier, handler
        self.device_id = device_id
        # Events: SQLite row + outbox, or memory (published directly by the link) when storage fails.
        self.events = EventLog(gallery, link.topic("events"), device_id, wake=link.wake)
        self._inbox: queue.Queue[tuple[str, bytes]] = queue.Queue(MAX_QUEUED)
        self.ha_unlock_topic, self._unlock = ha_unlock_topic, unlock

    # paho's thread
    def on_command(self, topic: str, payload: bytes) -> None:
        try:
            self._inbox.put_nowait((topic, payload))
        except queue.Full:
            log.warning("command queue full (%d): dropped a command from %s", MAX_QUEUED, topic)

    # the daemon's thread
    def publish_state(self, state: Mapping[str, Any]) -> None:
        self.link.publish_state({"device": self.device_id, **state,
                                 "ts": datetime.now(UTC).isoformat(timespec="seconds")})

    def poll(self) -> bool:
        """Run the commands that arrived; True when the gallery changed."""
        changed = False
        while True:
            try:
                topic, payload = self._inbox.get_nowait()
            except queue.Empty:
                return changed
            if self.ha_unlock_topic and topic == self.ha_unlock_topic:
                self._ha_unlock(payload)
                continue
            changed |= self._run(payload)

    def _ha_unlock(self, payload: bytes) -> None:
        if payload.strip().upper() == b"UNLOCK" and self._unlock is not None:
            log.warning("door unlocked from Home Assistant (unsigned; enabled by [mqtt] ha_remote_unlock)")
            self._unlock(None)
            self._audit("ha_unlock", {})

    def record_event(self, kind: str, reason: str, *, ts: datetime, **fields: Any) -> str:
        """Store an event row and queue the same event for the broker: the one path for both."""
        return self.events.record(kind, reason, ts=ts, **fields)

    def _audit(self, reason: str, details: dict[str, Any]) -> None:
        self.record_event("door", reason, ts=datetime.now(UTC), details={"device": self.device_id, **details})

    def _run(self, raw: bytes) -> bool:
        command_id: str | None = None
        type_ = None
        try:
            cmd = self.verifier.verify(raw)
            command_id, type_ = cmd.id, cmd.type
            result = self.handler.handle(cmd.type, cmd.args)
            log.info("command %s %s from key %s: ok", cmd.type, cmd.id, cmd.kid)
            if cmd.type == "door.unlock":  # who opened the door remotely belongs in the event log
                self._audit("remote_unlock", {"command": cmd.id, "key": cmd.kid, "seconds": result.get("seconds")})
            self._answer(command_id, type_, True, result=result)
            return cmd.type in CHANGES_GALLERY
        except CommandRejected as exc:
            log.warning("command refused: %s", exc)
            self._answer(exc.command_id, None, False, error={"reason": exc.reason, "message": _message(exc)})
        except CommandError as exc:
            log.warning("command %s %s failed: %s", type_, command_id, exc)
            self._answer(command_id, type_, False, error={"reason": exc.reason, "message": str(exc)})
        return False

    def _answer(self, command_id: str | None, type_: str | None, ok: bool, **body: Any) -> None:
        doc = {"id": command_id, "device": self.device_id, "type": type_, "ok": ok, **body,
               "gallery_version": self.gallery.gallery_version, "ts": datetime.now(UTC).isoformat(timespec="seconds")}
        self.link.publish_result(json.dumps(doc, default=str, ensure_ascii=False).encode())


def _message(exc: CommandRejected) -> str:
    text = str(exc)
    prefix = f"{exc.reason}: "
    return text[len(prefix):] if text.startswith(prefix) else text
