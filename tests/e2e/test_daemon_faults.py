"""The real `edge-app run` (subprocess, mock pins, a video of real faces) when storage fails or changes
under it: a full disk (a real tmpfs filled with a ballast file), a read-only gallery (a real read-only
bind mount), and a person removed with `edge-app gallery remove` while the kiosk runs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge_app.gallery.outbox import Outbox
from edge_app.gallery.store import Gallery
from tests.conftest import fill_disk, write_video
from tests.e2e.conftest import obama_gallery
from tests.e2e.test_fleet import Listener

BIN = Path(sys.executable).parent
DEVICE = "test-kiosk"


class Kiosk:
    """`edge-app run --realtime -v` in a subprocess; a thread collects its log (stderr)."""

    def __init__(self, cfg: Path, db: Path) -> None:
        self.proc = subprocess.Popen([str(BIN / "edge-app"), "run", "--config", str(cfg), "--db", str(db),
                                      "--realtime", "-v"], stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.lines: list[str] = []
        self.cond = threading.Condition()
        self.reader = threading.Thread(target=self._read, name="kiosk-log", daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self.cond:
                self.lines.append(line)
                self.cond.notify_all()

    @property
    def log(self) -> str:
        with self.cond:
            return "".join(self.lines)

    def count(self, text: str) -> int:
        with self.cond:
            return sum(text in line for line in self.lines)

    def wait_for(self, text: str, n: int = 1, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while sum(text in line for line in self.lines) < n:
                if self.proc.poll() is not None and not self.reader.is_alive():
                    return False
                if time.monotonic() > deadline:
                    return False
                self.cond.wait(0.5)
            return True

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=60)
        self.reader.join(10)
        return code


def kiosk_config(tmp_path: Path, video: Path, extra: str = "") -> Path:
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(f'[device]\nid = "{DEVICE}"\n[door]\npins = "mock"\npulse_seconds = 0.3\n'
                   f'[access]\ncooldown_seconds = 0.5\n[camera]\nsource = "{video}"\n{extra}')
    return cfg


def mqtt_section(port: int) -> str:
    return f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\nstate_interval_seconds = 1\n'


def messages(listener: Listener, suffix: str) -> list[dict[str, Any]]:
    with listener.cond:
        return [json.loads(m[1]) for m in listener.messages if m[0] == f"edge-app/{DEVICE}/{suffix}"]


def wait_json(listener: Listener, suffix: str, pred: Any, timeout: float = 60.0) -> list[dict[str, Any]]:
    def match(m: tuple[str, bytes, bool]) -> bool:
        return m[0] == f"edge-app/{DEVICE}/{suffix}" and bool(pred(json.loads(m[1])))

    return [json.loads(m[1]) for m in listener.wait(match, timeout)]


def test_a_person_removed_with_the_cli_is_refused_within_a_second(tmp_path, scenes, gallery_db):
    hall, walk = scenes["hall"], scenes["walk"]
    # A new track per walk-up: the hall gap is longer than the tracker keeps a lost face (5 frames).
    video = write_video(tmp_path / "loop.avi", ([hall] * 8 + walk("obama2.jpg")) * 45, fps=10)  # 72 s
    kiosk = Kiosk(kiosk_config(tmp_path, video), gallery_db)
    try:
        assert kiosk.wait_for("granted Obama", 2), kiosk.log
        res = subprocess.run([str(BIN / "edge-app"), "gallery", "remove", "Obama", "--db", str(gallery_db)],
                             capture_output=True, text=True, timeout=120)
        removed_by = datetime.now(UTC)  # the CLI returns only after the kiosk reported the reload
        assert res.returncode == 0, res.stderr
        m = re.search(rf"running kiosk reloaded gallery version (\d+) \({DEVICE}, within ([\d.]+) s\)", res.stderr)
        assert m, res.stderr + kiosk.log
        assert float(m.group(2)) < 1.0
        denied = kiosk.count("reason unknown_face)")
        assert kiosk.wait_for("reason unknown_face)", denied + 2), kiosk.log  # two more walk-ups, refused
    finally:
        code = kiosk.stop()
    assert code == 0, kiosk.log
    assert "reloading" in kiosk.log and "SIGHUP" not in kiosk.log
    with Gallery(gallery_db) as g:
        grants = [e for e in g.events(1000) if e["reason"] == "granted"]
    assert len(grants) >= 2
    assert all(datetime.fromisoformat(e["ts"]) < removed_by for e in grants), grants


def test_full_disk_events_go_out_from_memory_and_are_stored_once_space_returns(tmp_path, small_tmpfs, scenes,
                                                                              pipeline, model_set, rgb,
                                                                              mqtt_broker):
    db = obama_gallery(small_tmpfs / "gallery.db", pipeline, model_set, rgb)
    hall, walk = scenes["hall"], scenes["walk"]
    frames = [hall] * 30 + walk("obama2.jpg") + [hall] * 40 + walk("obama2.jpg") + [hall] * 600
    video = write_video(tmp_path / "door.avi", frames, fps=10)
    listener = Listener(mqtt_broker.port)
    kiosk = Kiosk(kiosk_config(tmp_path, video, mqtt_section(mqtt_broker.port)), db)
    try:
        assert kiosk.wait_for("running: device"), kiosk.log
        ballast = fill_disk(small_tmpfs)  # the first walk-up starts 3 s into the video
        first = wait_json(listener, "events", lambda e: e["reason"] == "granted")
        assert first, kiosk.log
        full = wait_json(listener, "state", lambda s: s["storage"] == "full" and s["events_pending_memory"] >= 1)
        assert full, kiosk.log
        assert "No space left" in kiosk.log or "disk is full" in kiosk.log
        ballast.unlink()
        assert wait_json(listener, "state", lambda s: s["storage"] == "ok" and s["events_pending_memory"] == 0)
        grants = wait_json(listener, "events", lambda e: e["reason"] == "granted" and e["id"] != first[0]["id"])
        assert grants, kiosk.log
    finally:
        code = kiosk.stop()
        listener.close()
    assert code == 0, kiosk.log
    published = [e["id"] for e in messages(listener, "events") if e["kind"] == "access"]
    with Gallery(db) as g:
        stored = [e["id"] for e in g.events(100)[::-1] if e["kind"] == "access"]
        queued = [json.loads(m.payload)["id"] for m in Outbox(g).peek(100)]
    assert len(stored) == 2 and stored[0] == first[0]["id"]  # in order, each once
    assert published == stored  # each reached the broker once
    assert first[0]["id"] not in queued  # published from memory: never queued again


def test_read_only_gallery_still_opens_the_door_and_publishes_its_events(tmp_path, read_only_bind, scenes,
                                                                       pipeline, model_set, rgb, mqtt_broker):
    src = tmp_path / "state"
    obama_gallery(src / "gallery.db", pipeline, model_set, rgb)
    db = read_only_bind(src) / "gallery.db"
    hall, walk = scenes["hall"], scenes["walk"]
    video = write_video(tmp_path / "door.avi", [hall] * 20 + walk("obama2.jpg") + [hall] * 600, fps=10)
    listener = Listener(mqtt_broker.port)
    kiosk = Kiosk(kiosk_config(tmp_path, video, mqtt_section(mqtt_broker.port)), db)
    try:
        granted = wait_json(listener, "events", lambda e: e["reason"] == "granted")
        assert granted and granted[0]["person_name"] == "Obama", kiosk.log
        state = wait_json(listener, "state", lambda s: s["storage"] == "read_only" and s["events_pending_memory"])
        assert state and state[-1]["last_access"]["name"] == "Obama", kiosk.log
    finally:
        code = kiosk.stop()
        listener.close()
    assert code == 0, kiosk.log
    assert re.search(r"ERROR .*GALLERY IS READ-ONLY", kiosk.log), kiosk.log
    relay = [x.split("door: ")[1] for x in kiosk.log.splitlines() if re.search(r"door: (un)?locked", x)]
    assert relay and relay[0].startswith("unlocked") and relay[-1].startswith("locked"), relay
    assert sorted(p.name for p in src.iterdir()) == ["gallery.db"]  # nothing written
