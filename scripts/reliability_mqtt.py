#!/usr/bin/env python3
"""MQTT reliability of a real `edge-app run`: a command flood and a broker outage, on loopback only.

Starts its own mosquitto (persistence on) on a free loopback port and the real daemon (`edge-app run`,
real models, mock pins) on a video in which a face comes and goes (a stranger: one access event each
time). Then:

1. flood: `--junk` unsigned payloads (not JSON, bad envelope, unknown key, bad signature) interleaved
   with `--pings` signed pings, published at QoS 1 as fast as the client can. Counted: pings answered
   ok, answered busy, never answered.
2. outage: the broker is stopped for `--outage` seconds while the kiosk keeps deciding, then started
   again. Counted: events the kiosk stored, events a persistent subscriber received (unique, duplicates,
   out of order, missing), how long the backlog took to arrive.

    python scripts/reliability_mqtt.py [--outage 15] [--junk 1000] [--pings 500] [--json]

Bounded: every wait ends by `--deadline` seconds after the start (default 300). Exit codes: 0 every ping
answered and every event delivered once in order; 1 otherwise; 2 mosquitto or the face data missing.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edge_app.mqtt.security import (  # noqa: E402
    generate_keypair,
    key_id,
    public_key_text,
    save_private_key,
    sign_command,
)
from tests.conftest import FACES_DEV, write_video  # noqa: E402
from tests.mqtt_broker import MOSQUITTO, Broker  # noqa: E402

DEVICE = "reliability-kiosk"
BIN = Path(sys.executable).parent


class Recorder:
    """A persistent-session subscriber (QoS 1): the broker keeps its messages while it is away."""

    def __init__(self, broker: Broker, topics: list[str]) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.messages: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="reliability-recorder", clean_session=False)
        c.reconnect_delay_set(1, 1)
        c.on_connect = lambda cl, *_a: cl.subscribe([(t, 1) for t in topics])
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.on_message = self._on_message
        c.connect(broker.host, broker.port, keepalive=10)
        c.loop_start()
        self.client = c

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload), bool(msg.dup)))

    def on(self, suffix: str) -> list[tuple[bytes, bool]]:
        with self.lock:
            return [(p, d) for t, p, d in self.messages if t.endswith(suffix)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def wait(pred: Callable[[], bool], until: float, step: float = 0.1) -> bool:
    while not pred():
        if time.monotonic() > until:
            return False
        time.sleep(step)
    return True


def face_video(path: Path, seconds: float, fps: float) -> Path:
    """A stranger's face (obama.jpg, not enrolled) for 2 s, then 2 s of empty hall, over and over."""
    import cv2

    from edge_app.imageio import read_image

    face = read_image(FACES_DEV / "obama.jpg")
    h, w = face.shape[:2]
    scale = min(320 / w, 240 / h)
    small = cv2.resize(face, (int(w * scale), int(h * scale)), interpolation=cv2.INTER_AREA)
    frame = np.full((240, 320, 3), 90, np.uint8)
    y, x = (240 - small.shape[0]) // 2, (320 - small.shape[1]) // 2
    frame[y:y + small.shape[0], x:x + small.shape[1]] = small
    # Zoom on the face (at about x 143-194, y 35-85 here) so it passes the kiosk's minimum face size.
    frame = cv2.resize(frame[12:108, 104:232], (320, 240), interpolation=cv2.INTER_CUBIC)
    empty = np.full((240, 320, 3), 90, np.uint8)
    cycle = [frame] * int(2 * fps) + [empty] * int(2 * fps)
    frames = (cycle * (int(seconds * fps) // len(cycle) + 1))[:int(seconds * fps)]
    return write_video(path, frames, fps=fps)


def stored_events(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        return [r[0] for r in con.execute("SELECT id FROM events ORDER BY rowid")]


def outbox_len(db: Path) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as con:
        return int(con.execute("SELECT count(*) FROM outbox").fetchone()[0])


def flood(broker: Broker, key: Any, junk: int, pings: int, recorder: Recorder, until: float) -> dict[str, Any]:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    stranger = generate_keypair()[0]
    env = json.loads(sign_command(key, type="ping", args={}, target=DEVICE))
    garbage = [b"{not json", b"\xff\xfe not utf-8", json.dumps({"v": 1}).encode(),
               sign_command(stranger, type="ping", args={}, target=DEVICE),
               json.dumps({**env, "sig": "A" * 86 + "=="}).encode(),
               json.dumps({**env, "kid": key_id(stranger.public_key())}).encode()]
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="reliability-attacker")
    c.connect(broker.host, broker.port)
    c.loop_start()
    topic = f"edge-app/{DEVICE}/cmd"
    ids, infos = [], []
    t0 = time.monotonic()
    per_ping = max(1, round(junk / max(pings, 1)))
    sent_junk = 0
    for i in range(pings):
        for _ in range(per_ping):
            if sent_junk < junk:
                infos.append(c.publish(topic, garbage[sent_junk % len(garbage)], qos=1))
                sent_junk += 1
        ids.append(f"reliability-ping-{i:05d}")
        infos.append(c.publish(topic, sign_command(key, type="ping", args={}, target=DEVICE, command_id=ids[-1]),
                               qos=1))
    while sent_junk < junk:
        infos.append(c.publish(topic, garbage[sent_junk % len(garbage)], qos=1))
        sent_junk += 1
    for info in infos:
        info.wait_for_publish(max(0.1, until - time.monotonic()))
    published_s = time.monotonic() - t0

    def answers() -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for p, _ in recorder.on("/cmd/result"):
            doc = json.loads(p)
            if doc.get("id") in wanted:
                out.setdefault(doc["id"], doc)
        return out

    wanted = set(ids)
    wait(lambda: len(answers()) == len(ids), min(until, time.monotonic() + 120))
    c.disconnect()
    c.loop_stop()
    got = answers()
    reasons = [("ok" if got[i]["ok"] else got[i]["error"]["reason"]) if i in got else "none" for i in ids]
    junk_answers = sum(1 for p, _ in recorder.on("/cmd/result") if json.loads(p).get("id") is None)
    return {"junk_sent": sent_junk, "pings_sent": len(ids), "pings_ok": reasons.count("ok"),
            "pings_busy": reasons.count("busy"), "pings_unanswered": reasons.count("none"),
            "pings_other": len(ids) - reasons.count("ok") - reasons.count("busy") - reasons.count("none"),
            "junk_answered": junk_answers, "publish_s": round(published_s, 2),
            "all_answered_s": round(time.monotonic() - t0, 2)}


def outage(broker: Broker, db: Path, recorder: Recorder, seconds: float, until: float) -> dict[str, Any]:
    before = len(stored_events(db))
    broker.stop()
    t_down = time.monotonic()
    time.sleep(max(0.0, min(seconds, until - time.monotonic())))
    during = len(stored_events(db)) - before
    broker.start()
    t_up = time.monotonic()
    wait(lambda: outbox_len(db) == 0, until)
    drained_s = time.monotonic() - t_up
    # Everything stored so far must reach the recorder (it reconnects on its own, its session kept).
    target = set(stored_events(db))
    wait(lambda: target <= {json.loads(p)["id"] for p, _ in recorder.on("/events")}, until)
    return {"outage_s": round(t_up - t_down, 1), "events_during_outage": during,
            "backlog_drained_s": round(drained_s, 2)}


def delivery(db: Path, recorder: Recorder) -> dict[str, Any]:
    stored = stored_events(db)
    received = [json.loads(p)["id"] for p, _ in recorder.on("/events")]
    firsts = list(dict.fromkeys(received))
    order = {e: i for i, e in enumerate(stored)}
    in_order = [order[e] for e in firsts if e in order]
    return {"events_stored": len(stored), "events_received": len(received), "events_unique": len(firsts),
            "duplicates": len(received) - len(firsts), "missing": len(set(stored) - set(firsts)),
            "out_of_order": sum(1 for a, b in itertools.pairwise(in_order) if b < a)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--outage", type=float, default=15.0, help="seconds the broker is down (the soak used 60)")
    ap.add_argument("--junk", type=int, default=1000)
    ap.add_argument("--pings", type=int, default=500)
    ap.add_argument("--deadline", type=float, default=300.0, help="the whole run ends by then (seconds)")
    ap.add_argument("--broker-queue", type=int, default=1000,
                    help="mosquitto's max_queued_messages (per client; its default 1000; docs/mqtt.md advises more)")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--keep", type=Path, help="work in this folder and keep it (broker and kiosk logs, gallery)")
    args = ap.parse_args(argv)
    if not MOSQUITTO.is_file() or not (FACES_DEV / "obama.jpg").is_file():
        print(f"needs {MOSQUITTO} (Debian's mosquitto) and {FACES_DEV}/obama.jpg (EDGE_APP_FACES_DEV)", file=sys.stderr)
        return 2
    until = time.monotonic() + args.deadline
    with tempfile.TemporaryDirectory(prefix="edge-app-reliability-") as tmp_s:
        tmp = Path(tmp_s) if args.keep is None else args.keep
        tmp.mkdir(parents=True, exist_ok=True)
        broker = Broker(tmp / "mosquitto", persistence=True)
        with broker.conf.open("a") as conf:
            conf.write(f"max_queued_messages {args.broker_queue}\n")
        broker.start()
        key, pub = generate_keypair()
        save_private_key(key, tmp / "admin.key")
        video = face_video(tmp / "hall.avi", args.deadline + 30, fps=5)
        db = tmp / "gallery.db"
        (tmp / "kiosk.toml").write_text(f"""
[device]
id = "{DEVICE}"
[door]
pins = "mock"
[camera]
source = "{video}"
[access]
votes = 2
window = 3
[mqtt]
enabled = true
host = "{broker.host}"
port = {broker.port}
admin_keys = "{public_key_text(pub)}"
state_interval_seconds = 5
""")
        recorder = Recorder(broker, [f"edge-app/{DEVICE}/events", f"edge-app/{DEVICE}/cmd/result",
                                     f"edge-app/{DEVICE}/status"])
        recorder.subscribed.wait(10)
        log = (tmp / "kiosk.log").open("w")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        kiosk = subprocess.Popen([str(BIN / "edge-app"), "run", "--config", str(tmp / "kiosk.toml"), "--db", str(db),
                                  "--realtime"], stdout=log, stderr=log, env=env)
        report: dict[str, Any] = {"device": DEVICE, "outage_arg_s": args.outage, "broker_queue": args.broker_queue}
        try:
            if not wait(lambda: (b"online", False) in recorder.on("/status") or kiosk.poll() is not None, until):
                raise RuntimeError("the kiosk did not come online")
            if kiosk.poll() is not None:
                raise RuntimeError(f"edge-app run exited {kiosk.returncode}: {(tmp / 'kiosk.log').read_text()[-2000:]}")
            if not wait(lambda: len(stored_events(db)) >= 2, min(until, time.monotonic() + 90)):
                raise RuntimeError("the kiosk stored no access events in 90 s; its log ends:\n"
                                   + (tmp / "kiosk.log").read_text()[-3000:])
            report["flood"] = flood(broker, key, args.junk, args.pings, recorder, until)
            # mosquitto's one line when a client's queue overflowed: those messages never reached that client.
            report["flood"]["broker_dropped"] = "Outgoing messages are being dropped" in broker.output()
            report["outage"] = outage(broker, db, recorder, args.outage, until)
            report["delivery"] = delivery(db, recorder)
        finally:
            if kiosk.poll() is None:
                kiosk.send_signal(signal.SIGTERM)
                try:
                    kiosk.wait(30)
                except subprocess.TimeoutExpired:
                    kiosk.kill()
            log.close()
            recorder.close()
            broker.stop()
        report["kiosk_exit"] = kiosk.returncode
    f, d = report["flood"], report["delivery"]
    ok = (f["pings_unanswered"] == 0 and f["pings_other"] == 0 and d["missing"] == 0 and d["duplicates"] == 0
          and d["out_of_order"] == 0 and report["kiosk_exit"] == 0)
    report["ok"] = ok
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        o = report["outage"]
        print(f"flood: {f['junk_sent']} junk + {f['pings_sent']} signed pings in {f['publish_s']} s -> pings ok "
              f"{f['pings_ok']}, busy {f['pings_busy']}, unanswered {f['pings_unanswered']}, other "
              f"{f['pings_other']}; junk answered {f['junk_answered']} (rate-limited); all answered in "
              f"{f['all_answered_s']} s; mosquitto {'DROPPED' if f['broker_dropped'] else 'dropped no'} messages "
              f"(max_queued_messages {args.broker_queue})")
        print(f"outage: broker down {o['outage_s']} s, {o['events_during_outage']} events stored meanwhile, backlog "
              f"sent {o['backlog_drained_s']} s after the broker came back")
        print(f"events: stored {d['events_stored']}, received {d['events_received']} (unique {d['events_unique']}), "
              f"duplicates {d['duplicates']}, missing {d['missing']}, out of order {d['out_of_order']}; kiosk exit "
              f"{report['kiosk_exit']}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
