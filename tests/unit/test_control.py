"""The control plane (edge_app.mqtt.control) with a real gallery on a real filesystem, real Ed25519
commands and a real door on gpiozero's MockFactory; only the MQTT link is a recorder (the broker side
is tested in tests/integration/test_mqtt_link.py)."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from gpiozero.pins.mock import MockFactory

from edge_app.gallery.outbox import SeenCommands
from edge_app.gallery.store import Gallery
from edge_app.hardware.door import Door, DoorConfig
from edge_app.mqtt.commands import CommandHandler
from edge_app.mqtt.control import ControlPlane, RateLimit
from edge_app.mqtt.security import CommandVerifier, generate_keypair, sign_command

DEVICE = "kiosk-1"
SHA = "ab" * 32


class RecordingLink:
    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def topic(self, suffix: str) -> str:
        return f"edge-app/{DEVICE}/{suffix}"

    def wake(self) -> None:
        pass

    def publish_state(self, state: Mapping[str, Any]) -> None:
        pass

    def publish_result(self, payload: bytes) -> None:
        self.results.append(json.loads(payload))


@pytest.fixture(scope="module")
def admin() -> Ed25519PrivateKey:
    return generate_keypair()[0]


def plane(g: Gallery, admin: Ed25519PrivateKey, **kw: Any) -> tuple[ControlPlane, RecordingLink]:
    link = RecordingLink()
    verifier = CommandVerifier([admin.public_key()], SeenCommands(g), DEVICE)
    handler = CommandHandler(g, SHA, 128, DEVICE)
    return ControlPlane(link, g, verifier, handler, DEVICE, **kw), link


def test_rate_limit_counts_per_period_and_keeps_a_gap():
    t = [0.0]
    limit = RateLimit(2, 60.0, min_gap_s=3.0, clock=lambda: t[0])
    allowed = []
    for at in (0.0, 1.0, 4.0, 10.0, 59.9, 60.0, 61.0, 64.0):
        t[0] = at
        allowed.append(limit.allow())
    # 1 s: gap; 10 and 59.9: two already in the minute; 60: the first left the minute; 61: gap; 64: 4.0 left
    assert allowed == [True, False, True, False, False, True, False, True]
    with pytest.raises(ValueError, match="count >= 1"):
        RateLimit(0, 60.0)


# --- a full disk (issue 10 item 4) ----------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 3 MiB tmpfs, unmounted at the end whatever happened."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=True)


def fill(folder: Path) -> Path:
    filler = folder / "filler"
    with filler.open("wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    try:  # the page cache may hold a last partial block: fill that too
        with filler.open("ab") as f:
            while True:
                f.write(b"\0")
                f.flush()
    except OSError:
        pass
    return filler


def test_a_signed_command_on_a_full_disk_is_answered_storage_and_the_daemon_lives_on(small_fs, admin, caplog):
    with Gallery(small_fs / "gallery.db") as g:
        control, link = plane(g, admin)
        # The write-ahead log emptied: the next write has to grow a file on the full disk.
        g.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        filler = fill(small_fs)
        assert os.statvfs(small_fs).f_bavail == 0
        raw = sign_command(admin, type="ping", args={}, target=DEVICE, command_id="full-disk-1")
        control.on_command(f"edge-app/{DEVICE}/cmd", raw)
        assert control.poll() is False  # returned: the seen-ids write failed inside, nothing escaped
        (result,) = link.results
        assert result["id"] == "full-disk-1" and result["ok"] is False
        assert result["error"]["reason"] == "storage" and "full" in result["error"]["message"]
        assert "failed on storage" in caplog.text
        filler.unlink()  # space again: the same command is accepted now (its id was not spent)
        control.on_command(f"edge-app/{DEVICE}/cmd", raw)
        control.poll()
        assert link.results[-1]["ok"] is True and link.results[-1]["result"]["pong"] is True


def test_a_command_that_fails_on_storage_after_its_id_was_stored_may_be_sent_again(tmp_path, admin):
    """The change runs in one transaction: when it fails on storage nothing changed, so the same signed
    command must be accepted when it comes again, not refused as replayed."""
    import sqlite3

    with Gallery(tmp_path / "g.db") as g:
        control, link = plane(g, admin)
        real = control.handler.handle
        calls: list[int] = []

        def flaky(*a: Any, **kw: Any) -> Any:
            calls.append(1)
            if len(calls) == 1:
                raise sqlite3.OperationalError("disk I/O error")
            return real(*a, **kw)

        control.handler.handle = flaky  # type: ignore[method-assign]
        raw = sign_command(admin, type="gallery.upsert", args={"name": "Ann"}, target=DEVICE, command_id="io-fail-01")
        control.on_command(f"edge-app/{DEVICE}/cmd", raw)
        control.poll()
        assert link.results[-1]["error"]["reason"] == "storage" and g.list_persons() == []
        control.on_command(f"edge-app/{DEVICE}/cmd", raw)
        control.poll()
        assert link.results[-1]["ok"] is True and [p.name for p in g.list_persons()] == ["Ann"]
        control.on_command(f"edge-app/{DEVICE}/cmd", raw)  # it ran: now a replay
        assert link.results[-1]["error"]["reason"] == "replayed"


# --- Home Assistant's unsigned unlock (issue 10 item 1) --------------------------------------------


@pytest.fixture
def door() -> Iterator[tuple[Door, Any]]:
    factory = MockFactory()
    d = Door(DoorConfig(pulse_seconds=0.2), factory)
    try:
        yield d, factory.pin(17)
    finally:
        d.close()


def ha_events(g: Gallery) -> list[tuple[str, dict[str, Any]]]:
    return [(e["reason"], e["details"]) for e in reversed(g.events()) if str(e["reason"]).startswith("ha_unlock")]


def test_ha_unlock_needs_allow_remote_unlock_and_the_refusal_is_audited(tmp_path, admin, door):
    d, relay = door
    topic = f"edge-app/{DEVICE}/ha/unlock"
    with Gallery(tmp_path / "g.db") as g:
        control, _ = plane(g, admin, ha_unlock_topic=topic, unlock=lambda s: d.unlock(s, reason="remote"),
                           ha_allowed=False)
        control.on_command(topic, b"UNLOCK")
        control.poll()
        assert [s.state for s in relay.states] == [False]  # the relay never moved
        assert ha_events(g) == [("ha_unlock_refused", {"device": DEVICE, "why": "disabled",
                                                       "not_audited_before": 0})]


def test_ha_unlock_is_rate_limited_and_each_one_audited(tmp_path, admin):
    topic = f"edge-app/{DEVICE}/ha/unlock"
    t = [0.0]
    unlocked: list[float | None] = []
    with Gallery(tmp_path / "g.db") as g:
        control, _ = plane(g, admin, ha_unlock_topic=topic, unlock=unlocked.append, ha_allowed=True,
                           ha_limit=RateLimit(2, 60.0, min_gap_s=3.0, clock=lambda: t[0]))
        for at in (0.0, 1.0, 4.0, 10.0):
            t[0] = at
            control.on_command(topic, b"unlock\n")
            control.poll()
        control.on_command(topic, b"LOCK")  # Home Assistant's other button: nothing to do, nothing stored
        control.poll()
        assert len(unlocked) == 2
        assert [r for r, _ in ha_events(g)] == ["ha_unlock", "ha_unlock_refused", "ha_unlock", "ha_unlock_refused"]
        assert [d.get("why") for _, d in ha_events(g)] == [None, "rate_limited", None, "rate_limited"]


def test_a_replayed_command_is_answered_at_once_and_takes_no_queue_slot(tmp_path, admin):
    with Gallery(tmp_path / "g.db") as g:
        control, link = plane(g, admin)
        raw = sign_command(admin, type="ping", args={}, target=DEVICE, command_id="captured-01")
        for _ in range(3):
            control.on_command(f"edge-app/{DEVICE}/cmd", raw)
        assert control.counts["queued"] == 1
        assert [(r["id"], r["error"]["reason"]) for r in link.results] == [("captured-01", "replayed")] * 2
        control.poll()
        assert link.results[-1]["ok"] is True and len(link.results) == 3


def test_a_signed_command_delivered_late_cannot_undo_a_newer_change(tmp_path, admin):
    """The kiosk trusts signatures, not the broker: a broker (or a network without TLS) that holds back
    "Eve active" and delivers it after "Eve inactive" must not re-activate her, nor bring back a deleted
    person or undo a whole-gallery replace. Changes to other people are not held up."""
    import time

    def signed(issued_at: float, type_: str, **args: Any) -> bytes:
        return sign_command(admin, type=type_, args=args, target=DEVICE, issued_at=issued_at)

    def run(control: ControlPlane, link: RecordingLink, raw: bytes) -> dict[str, Any]:
        control.on_command(f"edge-app/{DEVICE}/cmd", raw)
        control.poll()
        return link.results[-1]

    t0 = time.time() - 100
    with Gallery(tmp_path / "g.db") as g:
        control, link = plane(g, admin)
        g.add_person("Eve", active=False)
        g.add_person("Ann")
        activate = signed(t0, "gallery.upsert", name="Eve", active=True)  # held back by the broker
        assert run(control, link, signed(t0 + 20, "gallery.upsert", name="Eve", active=False))["ok"]
        late = run(control, link, activate)
        assert not late["ok"] and late["error"]["reason"] == "stale" and "'Eve'" in late["error"]["message"]
        assert g.get_person("Eve").active is False
        assert run(control, link, signed(t0 + 5, "gallery.upsert", name="Ann", active=False))["ok"]  # another person
        # A deletion, then an older upsert of the same person: stays deleted.
        assert run(control, link, signed(t0 + 30, "gallery.delete", name="Ann"))["ok"]
        assert run(control, link, signed(t0 + 25, "gallery.upsert", name="Ann", active=True))["error"]["reason"] == \
            "stale"
        assert [p.name for p in g.list_persons()] == ["Eve"]
        # A whole-gallery replace orders after everything it replaced, and before nothing newer.
        assert run(control, link, signed(t0 + 40, "gallery.replace", version=7, persons=[]))["ok"]
        assert run(control, link, signed(t0 + 35, "gallery.upsert", name="Eve", active=True))["error"]["reason"] == \
            "stale"
        assert run(control, link, signed(t0 + 38, "gallery.replace", version=6, persons=[]))["error"]["reason"] == \
            "stale"
        assert run(control, link, signed(t0 + 45, "gallery.upsert", name="Zoe", active=True))["ok"]
        assert [p.name for p in g.list_persons()] == ["Zoe"]
