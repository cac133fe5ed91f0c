"""Where every event of the kiosk goes: the `events` table and, with a broker, the outbox, in one
transaction; when the database cannot take it (disk full, read-only filesystem, a broken file), a
bounded queue in memory.

Events in memory are published directly by the MQTT link (not through the outbox) and written to the
database, oldest first, as soon as it takes writes again: the event row always, the outbox row only
for an event the link has not handed to the broker yet, so none is stored or sent twice. New events
wait behind the ones in memory, so rows keep the order of the decisions.

The bound: ``MAX_MEMORY_EVENTS`` (1,000 events, about 1 MB); past it the oldest is dropped, counted
in ``dropped`` and logged. Memory is lost on a restart: what was not stored or published by then is
gone (a published one only misses its row).
"""

from __future__ import annotations

import errno
import json
import logging
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from edge_app.errors import GalleryError, GalleryInputError
from edge_app.gallery.outbox import Outbox
from edge_app.gallery.store import Gallery

log = logging.getLogger(__name__)

MAX_MEMORY_EVENTS: Final = 1000
RETRY_S: Final = 1.0  # how often the database is tried again while events wait in memory

OK: Final = "ok"
FULL: Final = "full"
READ_ONLY: Final = "read_only"
ERROR: Final = "error"


def storage_problem(exc: BaseException) -> str:
    """"full", "read_only" or "error", from an exception of a write."""
    text = str(exc).lower()
    for e in (exc, exc.__cause__):
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return FULL
        if isinstance(e, OSError) and e.errno == errno.EROFS:
            return READ_ONLY
    if "disk is full" in text or "no space" in text:
        return FULL
    if "readonly" in text or "read-only" in text:
        return READ_ONLY
    return ERROR


@dataclass
class _Held:
    row: dict[str, Any]  # Gallery.record_event keyword arguments
    payload: bytes | None  # for the broker; None without one
    published: bool = False  # handed to the MQTT client, which delivers it (QoS 1) while the process lives


class EventLog:
    """Thread-safe: the daemon records and flushes on its thread, the MQTT link publishes on its own."""

    def __init__(self, gallery: Gallery, topic: str | None, device_id: str, *,
                 max_memory: int = MAX_MEMORY_EVENTS, wake: Callable[[], None] | None = None) -> None:
        if max_memory < 1:
            raise ValueError(f"max_memory must be >= 1, got {max_memory}")
        self.gallery, self.topic, self.device_id = gallery, topic, device_id
        self.max_memory = max_memory
        self.outbox = Outbox(gallery)
        self._wake = wake
        self._lock = threading.Lock()
        self._held: deque[_Held] = deque()
        self.dropped = 0  # events lost because memory was full
        self.storage = READ_ONLY if gallery.read_only else OK
        self.storage_error: str | None = "gallery opened read-only" if gallery.read_only else None
        self._next_try = 0.0

    def __len__(self) -> int:
        with self._lock:
            return len(self._held)

    def record(self, kind: str, reason: str, *, ts: datetime, event_id: str | None = None, **fields: Any) -> str:
        """Store (and queue for the broker) one event; never raises for storage trouble. Returns its id."""
        event_id = event_id or uuid.uuid4().hex
        row = {"kind": kind, "reason": reason, "ts": ts, "event_id": event_id, **fields}
        payload = None
        if self.topic is not None:
            payload = json.dumps({"device": self.device_id, "id": event_id, "ts": ts.isoformat(timespec="milliseconds"),
                                  "kind": kind, "reason": reason, **fields}, default=str, ensure_ascii=False).encode()
        with self._lock:
            if not self._held and not self.gallery.read_only:
                try:
                    self._store(row, payload)
                    self._set_ok()
                except GalleryInputError:
                    raise  # a bug in the caller, not a storage problem
                except (GalleryError, sqlite3.Error, OSError) as exc:
                    self._failed(exc)
                    self._hold(_Held(row, payload))
            else:
                self._hold(_Held(row, payload))
        self._kick()
        return event_id

    def flush(self, force: bool = False) -> int:
        """Write the events held in memory to the database, oldest first, while it takes them (at most
        every RETRY_S unless `force`); returns how many were stored."""
        if self.gallery.read_only:
            return 0
        with self._lock:
            if not self._held or (not force and time.monotonic() < self._next_try):
                return 0
            n = 0
            while self._held:
                h = self._held[0]
                try:
                    self._store(h.row, None if h.published else h.payload)
                except (GalleryError, sqlite3.Error, OSError) as exc:
                    self._failed(exc)
                    break
                self._held.popleft()
                n += 1
            if not self._held:
                log.warning("storage writable again: %d events kept in memory are stored now", n)
                self._set_ok()
        if n:
            self._kick()
        return n

    def publish_held(self, publish: Callable[[str, bytes], bool]) -> int:
        """MQTT link thread: hand the events in memory not yet published to `publish(topic, payload)`,
        which returns False when it cannot take more now. Returns how many were handed over."""
        n = 0
        with self._lock:
            for h in self._held:
                if h.published or h.payload is None or self.topic is None:
                    continue
                if not publish(self.topic, h.payload):
                    break
                h.published = True
                n += 1
        return n

    # --- inside the lock ------------------------------------------------------------------------

    def _store(self, row: dict[str, Any], payload: bytes | None) -> None:
        args = dict(row)
        kind = args.pop("kind")
        with self.gallery.write_transaction():  # the row and its outbox message, or neither
            self.gallery.record_event(kind, **args)
            if payload is not None and self.topic is not None:
                self.outbox.put(self.topic, payload, qos=1)

    def _hold(self, h: _Held) -> None:
        if len(self._held) >= self.max_memory:
            lost = self._held.popleft()
            self.dropped += 1
            log.error("%d events in memory (the bound): dropped the oldest (%s %s, %s)", self.max_memory,
                      lost.row["kind"], lost.row["reason"], "published" if lost.published else "NOT published")
        self._held.append(h)

    def _failed(self, exc: BaseException) -> None:
        problem = storage_problem(exc)
        if problem != self.storage:
            log.error("cannot store events (%s: %s): keeping them in memory (at most %d) and publishing them "
                      "directly", problem, exc, self.max_memory)
        self.storage, self.storage_error = problem, str(exc)
        self._next_try = time.monotonic() + RETRY_S

    def _set_ok(self) -> None:
        self.storage, self.storage_error = OK, None

    def _kick(self) -> None:
        if self._wake is not None:
            self._wake()
