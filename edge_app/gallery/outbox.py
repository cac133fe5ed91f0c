"""Two small queues that live in the gallery's SQLite file, so they survive a power cut.

Outbox: messages for the MQTT broker. Appended in the same place an event is stored, sent in
``seq`` order, deleted only when the broker acknowledged them: nothing is lost while the broker
(or the network) is away.

SeenCommands: ids of admin commands already executed, so a recorded command replayed inside its
validity window is refused. Ids older than the window are forgotten: the timestamp check refuses
those anyway.

CommandOrder: the issue time of the newest change applied to each person (and of the newest whole-gallery
replace), so a command delivered out of order -- held back by a broker, which the kiosk does not trust --
cannot undo a newer one (re-activate a revoked person, bring back a deleted one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

from edge_app.errors import GalleryInputError
from edge_app.gallery.store import Gallery

log = logging.getLogger(__name__)

MAX_TOPIC_LEN: Final = 512


@dataclass(frozen=True)
class Message:
    seq: int
    topic: str
    payload: bytes
    qos: int
    retain: bool


class Outbox:
    def __init__(self, gallery: Gallery, max_messages: int = 100_000) -> None:
        self.gallery = gallery
        self.max_messages = max_messages

    def put(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False) -> int:
        """Queue one message; returns its sequence number. The oldest are dropped (and logged) past
        ``max_messages`` so a kiosk offline for months cannot fill its disk."""
        if not topic or len(topic) > MAX_TOPIC_LEN or any(c in topic for c in "+#\0"):
            raise GalleryInputError(f"not a publishable MQTT topic: {topic!r}")
        if qos not in (0, 1, 2):
            raise GalleryInputError(f"qos must be 0, 1 or 2, got {qos!r}")
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        db = self.gallery.db
        with self.gallery.write_transaction():
            cur = db.execute("INSERT INTO outbox (topic, payload, qos, retain, created_at) VALUES (?, ?, ?, ?, ?)",
                             [topic, bytes(payload), qos, int(retain), now])
            seq = int(cur.lastrowid or 0)
            n = int(db.execute("SELECT count(*) FROM outbox").fetchone()[0])
            if n > self.max_messages:
                dropped = db.execute("DELETE FROM outbox WHERE seq IN (SELECT seq FROM outbox ORDER BY seq LIMIT ?)",
                                     [n - self.max_messages]).rowcount
                log.warning("outbox full (%d messages): dropped the %d oldest", self.max_messages, dropped)
        return seq

    def peek(self, limit: int = 1) -> list[Message]:
        """The oldest messages, not removed."""
        rows = self.gallery.db.execute(
            "SELECT seq, topic, payload, qos, retain FROM outbox ORDER BY seq LIMIT ?", [limit]).fetchall()
        return [Message(int(r[0]), str(r[1]), bytes(r[2]), int(r[3]), bool(r[4])) for r in rows]

    def ack(self, seq: int) -> bool:
        """The broker has it: remove. False if it was already gone."""
        with self.gallery.write_transaction():
            return bool(self.gallery.db.execute("DELETE FROM outbox WHERE seq = ?", [seq]).rowcount)

    def prune_before(self, cutoff: datetime) -> int:
        """Drop messages queued before ``cutoff`` (aware): events kept past their retention are not kept here
        either, broker or not (a kiosk whose MQTT was turned off would otherwise keep them for good)."""
        with self.gallery.write_transaction():
            n = int(self.gallery.db.execute("DELETE FROM outbox WHERE created_at < ?",
                                            [cutoff.astimezone(UTC).isoformat(timespec="milliseconds")]).rowcount)
        if n:
            log.warning("outbox: dropped %d message(s) older than the event retention, never sent", n)
        return n

    def __len__(self) -> int:
        return int(self.gallery.db.execute("SELECT count(*) FROM outbox").fetchone()[0])


class SeenCommands:
    def __init__(self, gallery: Gallery) -> None:
        self.gallery = gallery

    def add(self, command_id: str, issued_at: float, received_at: float | None = None) -> bool:
        """Remember an id (received at `received_at`, unix seconds; default now); False when it was seen
        before (a replay)."""
        db = self.gallery.db
        with self.gallery.write_transaction():
            cur = db.execute("INSERT OR IGNORE INTO seen_commands (id, issued_at, seen_at) VALUES (?, ?, ?)",
                             [command_id, float(issued_at), _iso(received_at)])
            return bool(cur.rowcount)

    def discard(self, command_id: str) -> None:
        """Forget an id this device stored but whose command then failed and changed nothing (storage): the
        same command may come again. Never for a command that ran."""
        with self.gallery.write_transaction():
            self.gallery.db.execute("DELETE FROM seen_commands WHERE id = ?", [command_id])

    def __contains__(self, command_id: object) -> bool:
        row = self.gallery.db.execute("SELECT 1 FROM seen_commands WHERE id = ?", [command_id]).fetchone()
        return row is not None

    def forget_before(self, issued_at: float, received_before: float | None = None) -> int:
        """Forget ids issued before `issued_at` and, given `received_before`, also received before it."""
        sql = "DELETE FROM seen_commands WHERE issued_at < ?"
        params: list[object] = [float(issued_at)]
        if received_before is not None:
            # seen_at is ISO 8601 UTC of one fixed width: text order is time order.
            sql, params = sql + " AND seen_at < ?", [*params, _iso(received_before)]
        with self.gallery.write_transaction():
            return int(self.gallery.db.execute(sql, params).rowcount)


def _iso(unix: float | None) -> str:
    at = datetime.now(UTC) if unix is None else datetime.fromtimestamp(unix, UTC)
    return at.isoformat(timespec="seconds")


class CommandOrder:
    ALL: Final = "*"  # a gallery.replace: every person at once

    def __init__(self, gallery: Gallery) -> None:
        self.gallery = gallery

    def newest(self, subject: str | None) -> float | None:
        """The newest issue time that a command about ``subject`` (None: every person) must not precede."""
        db = self.gallery.db
        if subject is None:
            row = db.execute("SELECT max(issued_at) FROM command_order").fetchone()
        else:
            row = db.execute("SELECT max(issued_at) FROM command_order WHERE subject IN (?, ?)",
                             [subject, self.ALL]).fetchone()
        return None if row is None or row[0] is None else float(row[0])

    def record(self, subject: str | None, issued_at: float) -> None:
        """Inside the caller's write transaction, with the change itself. None: a whole-gallery replace."""
        db = self.gallery.db
        if subject is None:
            db.execute("DELETE FROM command_order")
        db.execute("INSERT INTO command_order (subject, issued_at) VALUES (?, ?) ON CONFLICT(subject) DO UPDATE "
                   "SET issued_at = max(issued_at, excluded.issued_at)", [subject or self.ALL, float(issued_at)])

    def forget_before(self, issued_at: float) -> int:
        """Times older than the command window: any command that old is refused as expired anyway."""
        with self.gallery.write_transaction():
            return int(self.gallery.db.execute("DELETE FROM command_order WHERE issued_at < ?",
                                               [float(issued_at)]).rowcount)
