"""`edge-app run`: the door daemon, and `--check-config`."""

from __future__ import annotations

import argparse
import logging
import threading
from collections.abc import Callable
from dataclasses import asdict, replace

import numpy as np

from edge_app.cli import EXIT_OK
from edge_app.cli.common import liveness_on, models, pipeline, policy, settings
from edge_app.config import Config, describe
from edge_app.daemon import Daemon, default_device_id, pin_factory
from edge_app.enrol import PhotoStatus, embed_photo_bytes, templates_of
from edge_app.errors import ConfigError, EdgeAppError
from edge_app.gallery.kiosk import open_for_kiosk
from edge_app.gallery.matcher import Matcher
from edge_app.gallery.outbox import SeenCommands
from edge_app.gallery.store import Gallery
from edge_app.hardware.camera import open_source
from edge_app.hardware.door import Door, DoorConfig, DoorEvent
from edge_app.hardware.feedback import Feedback
from edge_app.models import ModelSet
from edge_app.mqtt.control import ControlPlane, RateLimit
from edge_app.mqtt.link import MqttLink, MqttSettings
from edge_app.recognizer import Recognizer
from edge_app.vision.pipeline import Pipeline

log = logging.getLogger(__name__)


def door_config(args: argparse.Namespace) -> DoorConfig:
    section = asdict(settings(args).door)
    section.pop("pins")
    return DoorConfig(**section)


def photo_embedder(pipe: Pipeline, n_masked: int) -> Callable[[bytes], tuple[np.ndarray | None, list[np.ndarray]]]:
    """A photo sent over MQTT -> its templates, filed as `edge-app enroll` files them (edge_app.enrol.templates_of)."""
    from edge_app.mqtt.commands import CommandError

    def embed(data: bytes) -> tuple[np.ndarray | None, list[np.ndarray]]:
        r = embed_photo_bytes(pipe, data, n_masked)
        if r.status is not PhotoStatus.OK or r.embedding is None:
            raise CommandError("bad_photo", r.detail)
        return templates_of(r)

    return embed


def build_control(cfg: Config, gallery: Gallery, ms: ModelSet, pipe: Pipeline, door: Door, device_id: str,
                  stop: threading.Event) -> tuple[MqttLink, ControlPlane]:
    """The MQTT link and the control plane of `[mqtt]`; errors name the key that is wrong."""
    from edge_app.mqtt.commands import CommandHandler
    from edge_app.mqtt.discovery import discovery_messages
    from edge_app.mqtt.security import CommandVerifier, load_public_key

    m = cfg.mqtt
    where = f"{cfg.source or 'config'}: [mqtt]"
    try:
        keys = [load_public_key(k) for k in m.admin_key_list]
    except EdgeAppError as exc:
        raise ConfigError(f"{where} admin_keys: {exc}") from None
    password = None
    if m.password_file is not None:
        try:
            password = m.password_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"{where} password_file: cannot read {m.password_file}: {exc.strerror}") from None
    groups = (*m.group_list, "all")  # every kiosk hears the fleet-wide topic
    try:
        settings = MqttSettings(host=m.host, port=m.port, prefix=m.prefix, device_id=device_id, groups=groups,
                                username=m.username, password=password, tls=m.tls, ca_file=m.ca_file,
                                cert_file=m.cert_file, key_file=m.key_file)
    except ValueError as exc:
        raise ConfigError(f"{where} {exc}") from None

    def unlock(seconds: float | None) -> None:
        door.unlock(seconds, reason="remote")

    embed = photo_embedder(pipe, cfg.recognition.masked_templates_per_photo)
    handler = CommandHandler(gallery, ms.embedder_sha, pipe.embedder.dim, device_id, embed_photo=embed,
                             unlock=unlock, allow_remote_unlock=m.allow_remote_unlock)
    # The verifier also refuses commands while the clock is known not to be synchronised (edge_app.clock).
    verifier = CommandVerifier(keys, SeenCommands(gallery), device_id, m.group_list,
                               window_s=m.command_window_seconds)
    ha_topic = f"{m.prefix}/{device_id}/ha/unlock" if m.ha_remote_unlock else None
    control_ref: list[ControlPlane] = []

    def on_command(topic: str, payload: bytes) -> None:
        if control_ref:
            control_ref[0].on_command(topic, payload)

    # Sent with discovery off too: it retracts what an earlier run with discovery on left retained.
    discovery = tuple(discovery_messages(m.prefix, device_id, ha_prefix=m.ha_prefix, enabled=m.ha_discovery,
                                         remote_unlock=m.ha_remote_unlock and m.allow_remote_unlock,
                                         has_contact=cfg.door.contact_pin is not None))
    link = MqttLink(settings, gallery.path, on_command=on_command, stop=stop,
                    extra_topics=(ha_topic,) if ha_topic else (), retained_on_connect=discovery)
    ha_limit = RateLimit(m.ha_unlock_per_minute, 60.0, min_gap_s=cfg.door.pulse_seconds)
    control = ControlPlane(link, gallery, verifier, handler, device_id, ha_unlock_topic=ha_topic, unlock=unlock,
                           ha_allowed=m.allow_remote_unlock, ha_limit=ha_limit)
    control_ref.append(control)
    link.held_events = control.events
    return link, control


def cmd_run(args: argparse.Namespace) -> int:
    cfg = settings(args)
    if args.check_config:
        ms = models(args)  # the manifest and every model file it lists must verify too
        for name in ms.manifest["models"]:
            ms.info(name)
        door_config(args)
        policy(args, ms)  # thresholds below the calibrated ones are refused here too
        print(describe(cfg), end="")
        print(f"# models: {ms.dir} (embedder {ms.embedder}, thresholds {ms.thresholds()})")
        print(f"# gallery: {args.db}")
        return EXIT_OK
    ms = models(args)
    pipe = pipeline(args, ms, liveness=liveness_on(args), stream=True)
    base = policy(args, ms)
    # The door decides require_mask through the access policy (with its reason code), not the recognizer.
    rec_policy = replace(base, require_mask=False)
    cam = cfg.camera
    source = open_source(args.source or cam.source, no_frame_timeout=cam.no_frame_seconds, size=(cam.width, cam.height))
    daemon_ref: list[Daemon] = []

    def on_door_event(event: DoorEvent, info: dict[str, object]) -> None:
        if daemon_ref:
            daemon_ref[0].on_door_event(event, info)

    device_id = cfg.device.id or default_device_id()
    stop = threading.Event()
    link: MqttLink | None = None
    with open_for_kiosk(args.db) as gallery:
        matcher = Matcher.from_gallery(gallery, ms.embedder_sha)
        factory = pin_factory(cfg.door.pins)
        door = Door(door_config(args), factory, on_event=on_door_event)
        feedback: Feedback | None = None
        try:
            feedback = Feedback(cfg.feedback, factory) if cfg.feedback.pins else None
            control = None
            if cfg.mqtt.enabled:
                link, control = build_control(cfg, gallery, ms, pipe, door, device_id, stop)
                link.start()
            daemon = Daemon(cfg, source, Recognizer(pipe, matcher, rec_policy), gallery, door, ms.embedder_sha,
                            device_id=device_id, stop=stop, realtime=args.realtime, control=control,
                            feedback=feedback)
            daemon_ref.append(daemon)
            if control is not None:
                control.handler.capture = daemon.start_capture
            daemon.install_signal_handlers()
            return daemon.run(max_frames=args.max_frames)
        finally:
            door.close()  # idempotent; the relay is locked whatever happened above
            if feedback is not None:
                feedback.close()
            if link is not None:
                link.stop()
