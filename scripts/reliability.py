#!/usr/bin/env python3
"""Reliability of the door daemon under a soak and faults, bounded in time, on loopback only.

Runs the real `edge-app run` (subprocess, gpiozero MockFactory pins) on a video of real faces played in
real time (Obama, enrolled, and Biden, a stranger, walk up in turn: one grant and one deny every 3.2 s)
against a real mosquitto on a free loopback port, and an independent MQTT client that records what
the broker received. Scenarios, sharing the time budget:

  soak       RSS and open fds sampled every 2 s; access events stored vs received, duplicates, out of order
  kill9      kill -9 mid-run and restart on the same gallery: every stored event reaches the broker
  full_disk  gallery on a 16 MiB tmpfs filled with a ballast file mid-run, then freed: grants go on, events
             are published from memory and stored once space returns
  read_only  gallery on a read-only bind mount: the kiosk starts, grants, publishes events from memory

    sudo python scripts/reliability.py [--seconds 240] [--json]

full_disk and read_only mount filesystems and need root. Needs ../shared/data/faces-dev
(EDGE_APP_FACES_DEV) and mosquitto. Exit codes: 0 every scenario passed, 1 one failed, 2 setup missing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import itertools

from scripts.common import UsageError, run_main
from tests.conftest import (
    FACES_DEV,
    fill_disk,
    kiosk_frame,
    read_only_bind_mount,
    tmpfs_mount,
    write_video,
)
from tests.e2e.test_daemon_faults import Kiosk
from tests.e2e.test_fleet import Listener
from tests.mqtt_broker import Broker

DEVICE = "test-kiosk"
FPS = 10
CYCLE_S = 3.2  # one grant and one deny


def scenes(seconds: float) -> list[np.ndarray]:
    """Hall, Obama walks up, hall, Biden walks up; repeated to last `seconds` of video."""
    from edge_app.imageio import read_image
    from edge_app.models import ModelSet

    det = ModelSet().detector(num_threads=1)
    hall = np.full((480, 640, 3), 90, np.uint8)

    def walk(name: str) -> list[np.ndarray]:
        img = read_image(FACES_DEV / name)
        box = det.detect(img)[0].box
        return [kiosk_frame(img, box, face_fraction=0.28 + 0.01 * i) for i in range(8)]

    cycle = [hall] * 8 + walk("obama2.jpg") + [hall] * 8 + walk("biden.jpg")
    return cycle * max(1, int(seconds / CYCLE_S) + 1)


def enrol(db: Path) -> Path:
    from edge_app.gallery.store import Gallery
    from edge_app.imageio import read_image
    from edge_app.models import ModelSet

    ms = ModelSet()
    emb = ms.pipeline(num_threads=1).process(read_image(FACES_DEV / "obama.jpg"), max_faces=1)[0].embedding
    with Gallery(db) as g:
        g.add_person("Obama")
        g.add_templates("Obama", emb[None], model_sha=ms.embedder_sha, masked=False)
    return db


class Run:
    """One scenario: a gallery, a video, the broker and listener, kiosk processes."""

    def __init__(self, work: Path, broker: Broker, seconds: float) -> None:
        self.work, self.broker = work, broker
        work.mkdir(parents=True, exist_ok=True)
        self.video = write_video(work / "door.avi", scenes(seconds + 30), FPS)
        self.cfg = work / "kiosk.toml"
        self.cfg.write_text(f'[device]\nid = "{DEVICE}"\n[door]\npins = "mock"\npulse_seconds = 0.3\n'
                            f'[access]\ncooldown_seconds = 1\n[camera]\nsource = "{self.video}"\n'
                            f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\n'
                            'state_interval_seconds = 1\n')
        self.listener = Listener(broker.port)

    def kiosk(self, db: Path) -> Kiosk:
        k = Kiosk(self.cfg, db)
        if not k.wait_for("running: device", timeout=120):
            raise RuntimeError("the kiosk did not start:\n" + k.log[-3000:])
        return k

    def received(self, suffix: str) -> list[dict[str, Any]]:
        with self.listener.cond:
            return [json.loads(m[1]) for m in self.listener.messages if m[0] == f"edge-app/{DEVICE}/{suffix}"]

    def events(self) -> list[dict[str, Any]]:
        return [e for e in self.received("events") if e.get("kind") == "access"]

    def settle(self, db: Path, timeout: float = 20.0) -> list[str]:
        """Stored access event ids, after waiting for the broker to have received all of them."""
        from edge_app.gallery.store import Gallery

        deadline = time.monotonic() + timeout
        while True:
            with Gallery(db) as g:
                stored = [e["id"] for e in g.events(100_000)[::-1] if e["kind"] == "access"]
            got = {e["id"] for e in self.events()}
            if set(stored) <= got or time.monotonic() > deadline:
                return stored
            time.sleep(0.5)

    def delivery(self, stored: list[str]) -> dict[str, Any]:
        ids = [e["id"] for e in self.events()]
        position = {i: n for n, i in enumerate(stored)}
        order = [position[i] for i in dict.fromkeys(ids) if i in position]
        return {"stored": len(stored), "received": len(ids), "unique_received": len(set(ids)),
                "duplicates": len(ids) - len(set(ids)), "lost": len(set(stored) - set(ids)),
                "out_of_order": sum(1 for a, b in itertools.pairwise(order) if b < a)}

    def close(self) -> None:
        self.listener.close()


def proc_sample(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return rss_kb / 1024, len(os.listdir(f"/proc/{pid}/fd"))


def soak(run: Run, seconds: float) -> dict[str, Any]:
    db = enrol(run.work / "gallery.db")
    k = run.kiosk(db)
    samples: list[tuple[float, float, int]] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        rss, fds = proc_sample(k.proc.pid)
        samples.append((round(time.monotonic() - t0, 1), round(rss, 1), fds))
        time.sleep(2.0)
    code = k.stop()
    d = run.delivery(run.settle(db))
    rss = [s[1] for s in samples]
    fds = [s[2] for s in samples]
    ok = code == 0 and d["stored"] > 0 and d["lost"] == 0 and d["duplicates"] == 0 and d["out_of_order"] == 0
    return {"ok": ok, "exit": code, "seconds": round(seconds), **d, "grants": k.count("granted Obama"),
            "rss_mb_first": rss[0], "rss_mb_last": rss[-1], "rss_mb_max": max(rss), "fds_min": min(fds),
            "fds_max": max(fds), "samples": samples}


def kill9(run: Run, seconds: float) -> dict[str, Any]:
    db = enrol(run.work / "gallery.db")
    k = run.kiosk(db)
    k.wait_for("granted Obama", 1, timeout=seconds)
    time.sleep(max(0.0, seconds / 2 - CYCLE_S))
    k.proc.send_signal(signal.SIGKILL)
    k.proc.wait(30)
    before = run.settle(db, timeout=0)  # what the killed kiosk had stored
    k2 = run.kiosk(db)
    time.sleep(seconds / 2)
    code = k2.stop()
    d = run.delivery(run.settle(db))
    ok = code == 0 and d["lost"] == 0 and len(before) > 0
    return {"ok": ok, "exit_after_restart": code, "stored_before_kill": len(before), **d}


def full_disk(run: Run, seconds: float) -> dict[str, Any]:
    with tmpfs_mount(run.work / "tmpfs") as mnt:
        db = enrol(mnt / "gallery.db")
        k = run.kiosk(db)
        ballast = fill_disk(mnt)
        grants0 = k.count("granted Obama")
        time.sleep(seconds / 2)
        grants_full = k.count("granted Obama") - grants0
        held = max((s.get("events_pending_memory", 0) for s in run.received("state")), default=0)
        full_seen = any(s.get("storage") == "full" for s in run.received("state"))
        ballast.unlink()
        time.sleep(seconds / 2)
        code = k.stop()
        d = run.delivery(run.settle(db))
        last = run.received("state")[-1] if run.received("state") else {}
    ok = (code == 0 and grants_full > 0 and full_seen and d["lost"] == 0 and d["duplicates"] == 0
          and last.get("storage") == "ok")
    return {"ok": ok, "exit": code, "grants_while_full": grants_full, "state_said_full": full_seen,
            "max_events_in_memory": held, "storage_at_end": last.get("storage"), **d}


def read_only(run: Run, seconds: float) -> dict[str, Any]:
    src = run.work / "state"
    enrol(src / "gallery.db")
    with read_only_bind_mount(src, run.work / "ro") as ro:
        k = run.kiosk(ro / "gallery.db")
        time.sleep(seconds)
        code = k.stop()
    states = run.received("state")
    grants = k.count("granted Obama")
    events = run.events()
    ok = (code == 0 and grants > 0 and len({e["id"] for e in events}) >= grants
          and any(s.get("storage") == "read_only" for s in states) and "GALLERY IS READ-ONLY" in k.log)
    return {"ok": ok, "exit": code, "grants": grants, "events_received": len(events),
            "duplicates": len(events) - len({e["id"] for e in events}),
            "state_said_read_only": any(s.get("storage") == "read_only" for s in states)}


SCENARIOS: dict[str, tuple[float, Callable[[Run, float], dict[str, Any]]]] = {
    "soak": (0.4, soak), "kill9": (0.2, kill9), "full_disk": (0.2, full_disk), "read_only": (0.2, read_only)}


def figures(name: str, r: dict[str, Any]) -> str:
    keys = {"soak": ["stored", "received", "duplicates", "out_of_order", "rss_mb_first", "rss_mb_max",
                     "rss_mb_last", "fds_min", "fds_max"],
            "kill9": ["stored_before_kill", "stored", "unique_received", "lost", "duplicates"],
            "full_disk": ["grants_while_full", "max_events_in_memory", "stored", "unique_received", "lost",
                          "duplicates", "storage_at_end"],
            "read_only": ["grants", "events_received", "duplicates", "state_said_read_only"]}[name]
    return ", ".join(f"{k}={r.get(k)}" for k in keys)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=240.0, help="time budget of the scenarios (default 240)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated subset of {', '.join(SCENARIOS)}")
    ap.add_argument("--json", action="store_true", help="print the results as JSON")
    args = ap.parse_args()
    results: dict[str, Any] = {}

    def body() -> None:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - set(SCENARIOS))
        if unknown:
            raise UsageError(f"--only: unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}")
        if not 20 <= args.seconds <= 3600:
            raise UsageError(f"--seconds must be 20..3600, got {args.seconds}")
        if not (FACES_DEV / "obama.jpg").is_file():
            raise UsageError(f"real face photos not found in {FACES_DEV}; set EDGE_APP_FACES_DEV")
        if os.geteuid() != 0 and {"full_disk", "read_only"} & set(names):
            raise UsageError("full_disk and read_only mount filesystems: run as root, or --only soak,kill9")
        total = sum(SCENARIOS[n][0] for n in names)
        with tempfile.TemporaryDirectory(prefix="edge-reliability-") as tmp:
            for n in names:
                share, fn = SCENARIOS[n]
                seconds = args.seconds * share / total
                # A broker per scenario: retained state of the previous one must not count.
                broker = Broker(Path(tmp) / n / "mosquitto", persistence=True).start()
                run = None
                try:
                    run = Run(Path(tmp) / n, broker, seconds)
                    results[n] = fn(run, seconds)
                except Exception as exc:  # one broken scenario must not hide the others' figures
                    results[n] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                finally:
                    if run is not None:
                        run.close()
                    broker.stop()

    code = run_main("reliability", body)
    if code:
        return code
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{'scenario':<10}  {'result':<6}  figures")
        for n, r in results.items():
            print(f"{n:<10}  {'ok' if r['ok'] else 'FAILED':<6}  {r.get('error') or figures(n, r)}")
    return 0 if all(r["ok"] for r in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
