"""`edge-app run`: the door daemon, and `--check-config`."""

from __future__ import annotations

import argparse
import logging
from dataclasses import asdict

from edge_app.cli import EXIT_OK
from edge_app.cli.common import models, pipeline, policy, settings
from edge_app.config import describe
from edge_app.daemon import Daemon, pin_factory
from edge_app.gallery.matcher import Matcher
from edge_app.gallery.store import Gallery
from edge_app.hardware.camera import open_source
from edge_app.hardware.door import Door, DoorConfig, DoorEvent
from edge_app.recognizer import RecognitionPolicy, Recognizer

log = logging.getLogger(__name__)


def door_config(args: argparse.Namespace) -> DoorConfig:
    section = asdict(settings(args).door)
    section.pop("pins")
    return DoorConfig(**section)


def cmd_run(args: argparse.Namespace) -> int:
    cfg = settings(args)
    if args.check_config:
        ms = models(args)  # the manifest and every model file it lists must verify too
        for name in ms.manifest["models"]:
            ms.info(name)
        door_config(args)
        print(describe(cfg), end="")
        print(f"# models: {ms.dir} (embedder {ms.embedder}, thresholds {ms.thresholds()})")
        print(f"# gallery: {args.db}")
        return EXIT_OK
    ms = models(args)
    pipe = pipeline(args, ms)
    base = policy(args, ms)
    # The door decides require_mask through the access policy (with its reason code), not the recognizer.
    rec_policy = RecognitionPolicy(base.threshold, base.masked_threshold, False, base.masked_gallery)
    cam = cfg.camera
    source = open_source(args.source or cam.source, no_frame_timeout=cam.no_frame_seconds, size=(cam.width, cam.height))
    daemon_ref: list[Daemon] = []

    def on_door_event(event: DoorEvent, info: dict[str, object]) -> None:
        if daemon_ref:
            daemon_ref[0].on_door_event(event, info)

    args.db.parent.mkdir(parents=True, exist_ok=True)
    with Gallery(args.db) as gallery:
        matcher = Matcher.from_gallery(gallery, ms.embedder_sha)
        door = Door(door_config(args), pin_factory(cfg.door.pins), on_event=on_door_event)
        try:
            daemon = Daemon(cfg, source, Recognizer(pipe, matcher, rec_policy), gallery, door, ms.embedder_sha,
                            realtime=args.realtime)
            daemon_ref.append(daemon)
            daemon.install_signal_handlers()
            return daemon.run(max_frames=args.max_frames)
        finally:
            door.close()  # idempotent; the relay is locked whatever happened above
