"""Events when the database cannot take them (a real full tmpfs, a real read-only bind mount), and the
record of which gallery version a running kiosk has loaded."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from edge_app.gallery.eventlog import FULL, OK, READ_ONLY, EventLog
from edge_app.gallery.kiosk import forget_loaded, open_for_kiosk, record_loaded, wait_for_kiosk_reload
from edge_app.gallery.outbox import Outbox
from edge_app.gallery.store import Gallery
from tests.conftest import fill_disk

TOPIC = "edge-app/k1/events"
T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _record(log: EventLog, i: int) -> str:
    return log.record("access", "granted", ts=T0 + timedelta(seconds=i), person_name=f"p{i}",
                      details={"device": "k1", "n": i})


def test_full_disk_keeps_events_in_memory_publishes_them_and_stores_them_later_in_order(small_tmpfs: Path) -> None:
    with Gallery(small_tmpfs / "gallery.db") as g:
        log = EventLog(g, TOPIC, "k1")
        first = _record(log, 0)  # the disk still has room
        ballast = fill_disk(small_tmpfs)
        ids = [_record(log, i) for i in range(1, 40)]  # enough rows to need new pages of the -wal
        assert log.storage == FULL and "full" in (log.storage_error or "")
        held = len(log)
        assert held >= 1
        # The link publishes what waits in memory: each once, oldest first; a refusal stops the round.
        sent: list[bytes] = []
        assert log.publish_held(lambda t, p: len(sent) < 2 and (sent.append(p) or True)) == 2
        assert log.publish_held(lambda t, p: sent.append(p) or True) == held - 2
        assert log.publish_held(lambda t, p: sent.append(p) or True) == 0
        assert [json.loads(p)["id"] for p in sent] == ids[-held:]
        assert json.loads(sent[0])["device"] == "k1"
        assert log.flush(force=True) == 0 and log.storage == FULL  # still full: nothing lost, nothing stored
        ballast.unlink()
        assert log.flush(force=True) == held
        assert log.storage == OK and len(log) == 0
        late = _record(log, 40)  # unpublished when stored: it goes through the outbox
        rows = g.events(100)[::-1]
        assert [r["id"] for r in rows] == [first, *ids, late]
        queued = [json.loads(m.payload)["id"] for m in Outbox(g).peek(100)]
        assert queued == [first, *ids[:-held], late]  # the published ones are not queued a second time


def test_memory_is_bounded_and_drops_the_oldest(tmp_path: Path, read_only_bind, caplog) -> None:
    src = tmp_path / "src"
    Gallery(src / "gallery.db").close()
    with open_for_kiosk(read_only_bind(src) / "gallery.db") as g:
        log = EventLog(g, None, "k1", max_memory=3)
        assert log.storage == READ_ONLY
        for i in range(5):
            _record(log, i)
        assert len(log) == 3 and log.dropped == 2
        assert log.flush(force=True) == 0  # read-only: kept until the end
        assert "3 events in memory (the bound): dropped the oldest" in caplog.text


def test_bad_bound_is_refused(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g, pytest.raises(ValueError, match="max_memory must be >= 1, got 0"):
        EventLog(g, None, "k1", max_memory=0)


def test_wait_for_kiosk_reload_says_whether_a_running_kiosk_loaded_the_version(tmp_path: Path) -> None:
    with Gallery(tmp_path / "g.db") as g:
        none = wait_for_kiosk_reload(g, 1, timeout=5.0)
        assert none.message == "no running kiosk picked it up (none running?)" and none.waited_s < 5.0
        record_loaded(g, "front", 3)  # this process plays the kiosk
        ok = wait_for_kiosk_reload(g, 3, timeout=5.0)
        assert ok.message.startswith("running kiosk reloaded gallery version 3 (front")
        late = wait_for_kiosk_reload(g, 4, timeout=0.2)  # a running kiosk that has not caught up
        assert late.message.startswith("a running kiosk has not loaded gallery version 4 after 0.")
        assert late.message.endswith("(front on version 3); check its log")
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True)
        g.db.execute("UPDATE meta SET value = json_set(value, '$.pid', ?) WHERE key = 'kiosk:front'",
                     [int(dead.stdout)])  # killed with -9: its row stays, its pid is gone
        assert wait_for_kiosk_reload(g, 3, timeout=5.0).kiosks == ()
        forget_loaded(g, "front")
        assert g.db.execute("SELECT count(*) FROM meta WHERE key LIKE 'kiosk:%'").fetchone()[0] == 0
