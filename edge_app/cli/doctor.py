"""`edge-app doctor`: is this kiosk able to work? One line per check, a non-zero exit on a failure.

Checks: platform (64-bit, board, numpy vs apt's), config, models (sha256 against the manifest, and they
load), camera (opens and delivers a frame), the Pi camera stack (libcamera, picamera2), GPIO (pin factory,
relay pin claimable), SQLite (gallery writable), MQTT (reachable, TLS), clock (synchronised: the command
replay window depends on it), disk space, Coral Edge TPU (edge_app.cli.doctor_pi has the board rows).
"""

from __future__ import annotations

import argparse
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge_app.cli import EXIT_ERROR, EXIT_OK, doctor_pi
from edge_app.cli.common import emit_json, gallery_template_counts, liveness_on, models, settings
from edge_app.config import Config
from edge_app.errors import EdgeAppError
from edge_app.hardware.pi import board

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
DISK_FAIL_MB, DISK_WARN_MB = 100, 500


@dataclass
class Check:
    name: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, str]:
        return {"check": self.name, "status": self.status, "detail": self.detail}


def _run(name: str, fn: Callable[[], tuple[str, str]]) -> Check:
    try:
        status, detail = fn()
    except EdgeAppError as exc:
        status, detail = FAIL, str(exc)
    except Exception as exc:  # a doctor that crashes tells nobody anything: every failure is a row
        status, detail = FAIL, f"{type(exc).__name__}: {exc}"
    return Check(name, status, detail)


def check_models(args: argparse.Namespace) -> tuple[str, str]:
    ms = models(args)
    names = list(ms.manifest["models"])
    for n in names:
        ms.info(n)  # sha256 against the manifest
    pipe = ms.pipeline(num_threads=1, liveness=liveness_on(args))  # fails when liveness is on and its models lack
    from edge_app.vision.runtime import runtime_name

    mask = "with" if pipe.mask_classifier is not None else "WITHOUT"
    live = "liveness on" if pipe.liveness is not None else "liveness OFF"
    eyes = "eye centres from the eye-landmark model" if pipe.eyes is not None else "eye centres from the detector ONLY"
    status, usable = gallery_templates(args.db, ms.embedder_sha, ms.embedder)
    return status, (f"{len(names)} models match MANIFEST.json in {ms.dir}; {ms.embedder} embedder, {mask} mask "
                    f"status, {eyes}, {live}; runtime {runtime_name()}{usable}")


def gallery_templates(db: Path | None, sha: str, embedder: str) -> tuple[str, str]:
    """Whether the gallery's templates are the embedder's: templates of another embedder are never compared, and a
    gallery holding only those opens the door for nobody (a WARN, not a FAIL: enrolling again fixes it)."""
    counts = gallery_template_counts(db)  # None without a readable gallery: the sqlite check reports that
    if counts is None:
        return OK, ""
    usable, other = counts.get(sha, 0), sum(n for s, n in counts.items() if s != sha)
    if other and not usable:
        return WARN, (f"; the gallery's {other} template(s) are all another embedder's: nobody is recognised with "
                      f"{embedder} (set [recognition] embedder = \"auto\", or enrol everyone again)")
    ignored = f", {other} of another (ignored)" if other else ""
    return OK, f"; gallery: {usable} template(s) of this embedder{ignored}"


def check_camera(cfg: Config, source_spec: str | None) -> tuple[str, str]:
    from edge_app.hardware.camera import open_source

    cam = cfg.camera
    spec = source_spec or cam.source
    source = open_source(spec, no_frame_timeout=min(cam.no_frame_seconds, 10.0), size=(cam.width, cam.height))
    with source:
        t = time.monotonic()
        frame = source.read()
        if frame is None:
            return FAIL, f"{source.description}: opened but delivered no frame"
        h, w = frame.image.shape[:2]
    return OK, f"{source.description}: {w}x{h} frame in {(time.monotonic() - t) * 1e3:.0f} ms"


def check_gpio(cfg: Config) -> tuple[str, str]:
    import gpiozero

    from edge_app.daemon import pin_factory

    factory = pin_factory(cfg.door.pins)
    d = cfg.door
    b = board()
    devices = []
    try:
        devices.append(gpiozero.OutputDevice(d.relay_pin, active_high=d.relay_active_high,
                                             initial_value=d.lock_type == "fail_safe", pin_factory=factory))
        for pin in (d.contact_pin, d.exit_button_pin):
            if pin is not None:
                devices.append(gpiozero.DigitalInputDevice(pin, pull_up=True, pin_factory=factory))
    except Exception as exc:  # on a Pi 5 without lgpio gpiozero's error says nothing about the cure
        hint = doctor_pi.gpio_problem(b, None) if factory is None else None
        return FAIL, f"{type(exc).__name__}: {exc}" + (f"; {hint}" if hint else "")
    finally:
        for dev in devices:
            dev.close()
    pins = ", ".join(f"{n} GPIO{p}" for n, p in (("relay", d.relay_pin), ("contact", d.contact_pin),
                                                ("exit", d.exit_button_pin)) if p is not None)
    if factory is not None:
        return (WARN if d.pins == "auto" else OK), f"simulated pins (MockFactory): {pins}"
    name = type(gpiozero.Device.pin_factory).__name__
    problem = doctor_pi.gpio_problem(b, name)
    return (FAIL, problem) if problem else (OK, f"{b.model}, {name}: {pins} claimed and released")


def check_sqlite(path: Path) -> tuple[str, str]:
    from edge_app.gallery.store import Gallery

    with Gallery(path) as g:
        with g.write_transaction():
            g.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('doctor', ?)", [str(time.time())])
        persons, version, schema = len(g.list_persons()), g.gallery_version, g.schema_version
    return OK, f"{path}: writable, schema {schema}, {persons} person(s), gallery version {version}"


def check_mqtt(cfg: Config) -> tuple[str, str]:
    m = cfg.mqtt
    if not m.enabled:
        return SKIP, "[mqtt] enabled = false"
    import ssl

    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    result: dict[str, Any] = {}
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-app-doctor-{time.time_ns()}")
    if m.username:
        c.username_pw_set(m.username, m.password_file.read_text().strip() if m.password_file else None)
    if m.tls:
        try:
            c.tls_set(ca_certs=str(m.ca_file) if m.ca_file else None,
                      certfile=str(m.cert_file) if m.cert_file else None,
                      keyfile=str(m.key_file) if m.key_file else None)
        except (ssl.SSLError, OSError) as exc:
            return FAIL, f"TLS files: {exc}"

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result["rc"] = rc

    c.on_connect = on_connect
    try:
        c.connect(m.host, m.port, keepalive=10)
    except (OSError, ssl.SSLError) as exc:
        return FAIL, f"{m.host}:{m.port}: {exc}"
    deadline = time.monotonic() + 10
    while "rc" not in result and time.monotonic() < deadline:
        c.loop(timeout=0.2)
    c.disconnect()
    rc = result.get("rc")
    if rc is None:
        return FAIL, f"{m.host}:{m.port}: no answer to CONNECT within 10 s"
    if getattr(rc, "is_failure", False):
        return FAIL, f"{m.host}:{m.port}: refused: {rc}"
    return OK, f"{m.host}:{m.port} accepted the connection" + (" over TLS" if m.tls else "")


def check_clock() -> tuple[str, str]:
    from edge_app.clock import clock_sync

    status = clock_sync()
    if status.synced:
        return OK, status.detail
    if status.synced is False:
        return FAIL, f"{status.detail}: signed commands are refused until it is; enable NTP"
    return WARN, f"{status.detail}; now {time.strftime('%c')}"


def check_disk(path: Path) -> tuple[str, str]:
    folder = path.parent
    while not folder.exists():
        folder = folder.parent
    free_mb = shutil.disk_usage(folder).free / 2**20
    status = FAIL if free_mb < DISK_FAIL_MB else WARN if free_mb < DISK_WARN_MB else OK
    return status, f"{free_mb:,.0f} MB free at {folder}"


def skip_list(args: argparse.Namespace) -> set[str]:
    return {s.strip() for s in (args.skip or "").split(",") if s.strip()}


def cmd_doctor(args: argparse.Namespace) -> int:
    checks: list[Check] = []
    try:
        cfg = settings(args)
        checks.append(Check("config", OK, str(cfg.source) if cfg.source else "no file: built-in defaults"))
        if args.db is None:
            from edge_app.cli import default_gallery_path

            args.db = cfg.gallery.path or default_gallery_path()
    except EdgeAppError as exc:
        checks.append(Check("config", FAIL, str(exc)))
        cfg = None
    skip = skip_list(args)
    b = board()
    if "platform" not in skip:  # also when the config failed: a 32-bit OS explains more than the file
        checks.append(_run("platform", lambda: doctor_pi.check_platform(b)))
    if cfg is not None:
        plan: list[tuple[str, Callable[[], tuple[str, str]]]] = [
            ("models", lambda: check_models(args)),
            ("camera", lambda: check_camera(cfg, args.source)),
            ("camera_stack", lambda: doctor_pi.check_camera_stack(args.source or cfg.camera.source, b)),
            ("gpio", lambda: check_gpio(cfg)),
            ("sqlite", lambda: check_sqlite(args.db)),
            ("mqtt", lambda: check_mqtt(cfg)),
            ("clock", check_clock),
            ("disk", lambda: check_disk(args.db)),
            ("coral", doctor_pi.check_coral),
        ]
        for name, fn in plan:
            checks.append(Check(name, SKIP, "--skip") if name in skip else _run(name, fn))
    failed = [c for c in checks if c.status == FAIL]
    if args.json:
        emit_json({"ok": not failed, "host": socket.gethostname(), "checks": [c.as_dict() for c in checks]})
    else:
        width = max(len(c.name) for c in checks)
        for c in checks:
            print(f"{c.name:<{width}}  {c.status.upper():<4}  {c.detail}")
        print(f"{len(failed)} failed, {sum(c.status == WARN for c in checks)} warning(s)" if failed or any(
            c.status == WARN for c in checks) else "all checks passed")
    return EXIT_ERROR if failed else EXIT_OK
