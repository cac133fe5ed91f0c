"""The running kiosk and its gallery: opening it (read-only when its filesystem is), and which gallery
version it has loaded, so `edge-app gallery ...` can say whether its change reached the door.

The daemon writes one `meta` row per device (`kiosk:<device>` = JSON version, time, pid, host) after every
load and deletes it on a clean stop. A kill -9 leaves the row behind: a pid that is not running on this
host counts as no kiosk. No schema change: `meta` is a key/value table.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from edge_app.errors import GalleryError
from edge_app.gallery.store import Gallery

log = logging.getLogger(__name__)

KEY_PREFIX: Final = "kiosk:"
POLL_S: Final = 0.05


def storage_read_only(path: str | Path) -> bool:
    """True when the gallery file (or the folder that would hold it) is on a read-only filesystem."""
    p = Path(path).expanduser()
    folder = p.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return True
    except OSError:
        return False
    return p.exists() and not os.access(p, os.W_OK)


def open_for_kiosk(path: str | Path) -> Gallery:
    """The daemon's gallery: read-write, or read-only (loudly) when its filesystem is read-only, so the
    door keeps working from what the gallery holds instead of the kiosk refusing to start."""
    try:
        return Gallery(path)
    except GalleryError as e:
        if not storage_read_only(path):
            raise
        log.error("=" * 70)
        log.error("GALLERY IS READ-ONLY (%s): running from what it holds; events are kept in memory only "
                  "and nothing can be enrolled or removed until it is writable again and edge-app restarts", e)
        log.error("=" * 70)
        return Gallery(path, read_only=True)


@dataclass(frozen=True)
class KioskLoad:
    device: str
    version: int
    at: float  # unix time of the load
    pid: int
    host: str

    @property
    def running(self) -> bool:
        if self.host != socket.gethostname():
            return True  # a gallery on shared storage: cannot tell, assume it runs
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:  # it exists, as another user (the edge-app service user)
            return True
        return True


def record_loaded(gallery: Gallery, device: str, version: int) -> None:
    """The daemon has loaded `version` (call after each reload)."""
    doc = {"version": int(version), "at": time.time(), "pid": os.getpid(), "host": socket.gethostname()}
    with gallery.write_transaction():
        gallery.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)",
                           [KEY_PREFIX + device, json.dumps(doc)])


def forget_loaded(gallery: Gallery, device: str) -> None:
    """The daemon stops cleanly."""
    with gallery.write_transaction():
        gallery.db.execute("DELETE FROM meta WHERE key = ?", [KEY_PREFIX + device])


def kiosk_loads(gallery: Gallery) -> list[KioskLoad]:
    rows = gallery.db.execute("SELECT key, value FROM meta WHERE key LIKE ?", [KEY_PREFIX + "%"]).fetchall()
    out = []
    for key, value in rows:
        try:
            d = json.loads(value)
            out.append(KioskLoad(str(key)[len(KEY_PREFIX):], int(d["version"]), float(d["at"]), int(d["pid"]),
                                 str(d["host"])))
        except (ValueError, KeyError, TypeError):
            log.warning("%s: unreadable meta row %s=%r ignored", gallery.path, key, value)
    return out


@dataclass(frozen=True)
class ReloadReport:
    version: int
    kiosks: tuple[KioskLoad, ...]  # running kiosks that have loaded `version` (or newer)
    behind: tuple[KioskLoad, ...]  # running kiosks that had not, when the wait ended
    waited_s: float

    @property
    def message(self) -> str:
        if self.behind:
            late = ", ".join(f"{k.device} on version {k.version}" for k in self.behind)
            return (f"a running kiosk has not loaded gallery version {self.version} after {self.waited_s:.1f} s "
                    f"({late}); check its log")
        if not self.kiosks:
            return "no running kiosk picked it up (none running?)"
        names = ", ".join(k.device for k in self.kiosks)
        return f"running kiosk reloaded gallery version {self.version} ({names}, within {self.waited_s:.1f} s)"


def wait_for_kiosk_reload(gallery: Gallery, version: int, timeout: float = 2.0) -> ReloadReport:
    """After a change that made `version`: wait up to `timeout` s until every running kiosk on this
    gallery has loaded it (a running kiosk checks the file every loop, well within a second)."""
    start = time.monotonic()
    while True:
        try:
            running = [k for k in kiosk_loads(gallery) if k.running]
        except (GalleryError, sqlite3.Error, OSError) as e:
            log.warning("%s: cannot read which version the kiosk loaded: %s", gallery.path, e)
            running = []
        done = [k for k in running if k.version >= version]
        waited = time.monotonic() - start
        if not running or len(done) == len(running) or waited >= timeout:
            return ReloadReport(version, tuple(done), tuple(k for k in running if k.version < version), waited)
        time.sleep(POLL_S)
