"""The gallery file's schema: migrations applied in order, one schema version each."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import sqlite_utils


def _m001_initial(db: sqlite_utils.Database) -> None:
    for sql in (
        "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
        # AUTOINCREMENT: a new person never gets a removed person's id, which events still name.
        """CREATE TABLE persons (
            id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,
            active INTEGER NOT NULL DEFAULT 1, valid_from TEXT, valid_until TEXT, schedule TEXT, note TEXT,
            created_at TEXT, updated_at TEXT)""",
        """CREATE TABLE templates (
            id INTEGER PRIMARY KEY,
            person_id INTEGER NOT NULL REFERENCES persons(id) ON DELETE CASCADE,
            model_sha TEXT NOT NULL, masked INTEGER NOT NULL, dim INTEGER NOT NULL,
            embedding BLOB NOT NULL, source TEXT, quality REAL, created_at TEXT)""",
        "CREATE INDEX idx_templates_model_sha ON templates(model_sha)",
        "CREATE INDEX idx_templates_person_id ON templates(person_id)",
        """CREATE TABLE events (
            id TEXT PRIMARY KEY, ts TEXT, kind TEXT, person_id INTEGER, person_name TEXT,
            score REAL, mask TEXT, reason TEXT, details TEXT)""",
        "CREATE INDEX idx_events_ts ON events(ts)",
        "INSERT INTO meta (key, value) VALUES ('gallery_version', '0')",
    ):
        db.execute(sql)


def _m002_outbox_and_commands(db: sqlite_utils.Database) -> None:
    for sql in (
        # Messages waiting for the broker: kept until acknowledged, sent in seq order (edge_app.gallery.outbox).
        """CREATE TABLE outbox (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, topic TEXT NOT NULL, payload BLOB NOT NULL,
            qos INTEGER NOT NULL, retain INTEGER NOT NULL DEFAULT 0, created_at TEXT NOT NULL)""",
        # Ids of admin commands already executed, kept for the replay window (edge_app.mqtt.security).
        "CREATE TABLE seen_commands (id TEXT PRIMARY KEY, issued_at REAL NOT NULL, seen_at TEXT NOT NULL)",
        "CREATE INDEX idx_seen_commands_issued ON seen_commands(issued_at)",
    ):
        db.execute(sql)


def _m003_command_order(db: sqlite_utils.Database) -> None:
    # Issue time of the newest gallery change applied per person ('*': a whole-gallery replace), so a signed
    # command held back and delivered late cannot undo a newer one (edge_app.gallery.outbox.CommandOrder).
    db.execute("CREATE TABLE command_order (subject TEXT PRIMARY KEY, issued_at REAL NOT NULL)")


# Append only: position i migrates schema version i -> i + 1.
MIGRATIONS: Final[list[Callable[[sqlite_utils.Database], None]]] = [_m001_initial, _m002_outbox_and_commands,
                                                                    _m003_command_order]
SCHEMA_VERSION: Final = len(MIGRATIONS)
