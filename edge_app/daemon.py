"""`edge-app run`: camera -> recognition -> access decision -> door pulse + event row.

The only module that knows everything. One processing loop on the main thread; a live camera is
read by its own thread that keeps only the newest frame (a slow frame never queues stale faces),
while a video file is processed frame by frame. Signals: SIGTERM/SIGINT stop cleanly (the door
locks), SIGHUP reloads the gallery. systemd hears READY, WATCHDOG (only while the loop turns),
STATUS and STOPPING.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from types import FrameType
from typing import Any

from edge_app import sdnotify
from edge_app.access.controller import AccessController, AccessDecision
from edge_app.access.policy import AccessPolicy, PersonRule
from edge_app.access.tracker import Tracker
from edge_app.capture import Capture, store
from edge_app.clock import ClockSync
from edge_app.config import Config
from edge_app.errors import ConfigError, EdgeAppError, GalleryError, SourceError, SourceTimeoutError
from edge_app.fsutil import write_private
from edge_app.gallery.eventlog import EventLog
from edge_app.gallery.kiosk import forget_loaded, record_loaded
from edge_app.gallery.matcher import Matcher
from edge_app.gallery.outbox import Outbox
from edge_app.gallery.store import Gallery
from edge_app.hardware.camera import Frame, FrameSource
from edge_app.hardware.door import Door, DoorEvent
from edge_app.hardware.feedback import Feedback, pattern_for
from edge_app.hardware.freeze import RepeatedFrames
from edge_app.imageio import encode_image
from edge_app.mqtt.commands import CommandError
from edge_app.mqtt.control import ControlPlane
from edge_app.recognizer import Recognition, Recognizer

log = logging.getLogger(__name__)

PRUNE_EVERY_S = 3600.0


def person_rules(gallery: Gallery) -> dict[int, PersonRule]:
    return {p.id: PersonRule(p.id, p.name, p.active, p.valid_from, p.valid_until, p.schedule)
            for p in gallery.list_persons()}


def live_votes(config: Config, recognizer: Recognizer) -> dict[str, Any]:
    """The tracker's liveness settings: judged only when [liveness] is on and the pipeline checks faces."""
    lv = config.liveness
    if not lv.enabled or recognizer.pipeline.liveness is None:
        if lv.enabled:
            log.warning("[liveness] enabled but the pipeline has no liveness check: faces are not judged live")
        return {}
    out: dict[str, Any] = {"live_votes": lv.votes}
    if lv.motion:
        from edge_app.vision.liveness import planar_residual

        out.update(planar_residual=planar_residual, min_residual=lv.motion_residual)
    return out


def clock_check(config: Config) -> Callable[[], bool | None] | None:
    """Whether the wall clock is synchronised, asked before time rules are applied ([device] require_clock_sync)."""
    if not config.device.require_clock_sync:
        return None
    sync = ClockSync(unknown_note="validity windows and schedules are applied on the clock as it is")
    return lambda: sync.status().synced


def local_zone(name: str | None) -> tzinfo:
    if name:
        from zoneinfo import ZoneInfo

        return ZoneInfo(name)
    zone = datetime.now().astimezone().tzinfo
    return zone if zone is not None else UTC


@dataclass
class Stats:
    frames: int = 0
    faces: int = 0
    decisions: int = 0
    granted: int = 0
    denied: int = 0
    first_face_frame: int | None = None
    first_grant_frame: int | None = None
    grant_latency_ms: list[float] = field(default_factory=list)  # face in view -> relay command
    repeated_frames: int = 0  # frames identical to the one before (a frozen camera): no faces taken from them

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


class Daemon:
    def __init__(self, config: Config, source: FrameSource, recognizer: Recognizer, gallery: Gallery, door: Door,
                 model_sha: str, device_id: str | None = None, stop: threading.Event | None = None,
                 now: Callable[[], datetime] = lambda: datetime.now(UTC), realtime: bool = False,
                 control: ControlPlane | None = None, feedback: Feedback | None = None) -> None:
        self.config, self.source, self.recognizer, self.gallery, self.door = config, source, recognizer, gallery, door
        self.model_sha = model_sha
        self.device_id = device_id or config.device.id or socket.gethostname()
        self.stop = stop or threading.Event()
        self.now = now
        self.realtime = realtime  # play a video file at its own frame rate, as a camera would deliver it
        self.tz = local_zone(config.device.timezone)
        acc = config.access
        self.controller = AccessController(
            AccessPolicy(self.tz, require_mask=config.recognition.require_mask, clock_synced=clock_check(config)),
            Tracker(votes=acc.votes, window=acc.window, max_gap_s=acc.max_gap_seconds,
                    **live_votes(config, recognizer)),
            person_rules(gallery), cooldown_s=acc.cooldown_seconds,
            spoof_hold_s=config.liveness.hold_seconds)  # only a spoof refusal starts it: nothing without liveness
        self._repeats = RepeatedFrames()  # a frozen camera's picture, again and again
        self.stats = Stats()
        self.control = control  # MQTT: events out, state, admin commands in (None: no broker configured)
        self.feedback = feedback  # LEDs and buzzer at the door (None: none fitted)
        self._state_dirty = threading.Event()
        self._last_state = -math.inf
        self._fps_mark = (time.monotonic(), 0)
        self.fps = 0.0
        self.last_access: dict[str, Any] | None = None
        self._reload = threading.Event()
        # Door callbacks arrive on gpiozero's and the door's threads; SQLite stays on this one.
        self._door_events: queue.SimpleQueue[tuple[DoorEvent, dict[str, object]]] = queue.SimpleQueue()
        self._camera_ok = True
        self._face_since: float | None = None  # monotonic time the current face came into view
        self._watchdog = sdnotify.watchdog_interval()
        self._last_ping = 0.0
        self._last_prune = -PRUNE_EVERY_S
        # Events: SQLite, or memory when the database cannot take them (full disk, read-only).
        self.events = control.events if control is not None else EventLog(gallery, None, self.device_id)
        self._data_version = self._read_data_version()
        self._failing: dict[str, tuple[str, float]] = {}  # housekeeping step -> (last error, logged at)
        self._recognition_error: str | None = None
        self._storage_seen: tuple[str, int, int] = (self.events.storage, 0, 0)
        self._capture: Capture | None = None  # enrolment shots asked for by gallery.capture

    # --- control ----------------------------------------------------------------------------------

    def request_reload(self) -> None:
        self._reload.set()

    def start_capture(self, name: str, seconds: float, shots: int) -> dict[str, Any]:
        """gallery.capture: take enrolment shots of the one person in front of the camera from the next frames
        (edge_app.capture); the outcome is an event of kind "enrol". The door goes on deciding meanwhile."""
        if self._capture is not None:
            left = self._capture.deadline - time.monotonic()
            raise CommandError("busy", f"gallery.capture: a capture of {self._capture.name!r} is running "
                                       f"({max(0.0, left):.0f} s left)")
        self._capture = Capture(name, shots, time.monotonic() + seconds,
                                self.config.recognition.masked_templates_per_photo, self.config.liveness.threshold)
        log.warning("capture: taking %d shot(s) of %r within %g s", shots, name, seconds)
        return {"capturing": name, "seconds": seconds, "shots": shots}

    def _capture_step(self, frame: Frame, recs: list[Recognition]) -> None:
        """A shot of the running gallery.capture from this frame, if one runs; its outcome stored once it ends."""
        c = self._capture
        if c is None:
            return
        t = time.monotonic()  # the deadline is wall time: a video file's positions would not match it
        if not c.done(t):
            other = recs[0].match.name if len(recs) == 1 and recs[0].known and recs[0].match else None
            if other is not None and other != c.name:
                # Bob standing there when Ana's capture was asked for: never enrol him as her.
                c.pass_over("someone_else")
            else:
                c.offer(self.recognizer.pipeline, frame.image, [r.face for r in recs], t, f"camera#{frame.index}")
            if not c.done(t):
                return
        self._capture = None
        details: dict[str, Any] = {"device": self.device_id, "shots": len(c.taken), "passed_over": dict(c.passed)}
        try:
            result = store(self.gallery, c, self.model_sha)
        except GalleryError as exc:  # no shot, masked shots only, a full disk: nothing enrolled
            log.warning("capture of %r: %s", c.name, exc)
            self._record("enrol", "capture_failed", person_name=c.name, details={**details, "why": str(exc)})
            return
        log.warning("capture of %r: %d shot(s), %d template(s) added", c.name, result["shots"], result["templates"])
        self._record("enrol", "captured", person_name=c.name, details={**details, **result})
        self.request_reload()

    def install_signal_handlers(self) -> None:
        def on_stop(signum: int, _frame: FrameType | None) -> None:
            log.info("signal %s: stopping", signal.Signals(signum).name)
            self.stop.set()

        def on_hup(_signum: int, _frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGHUP, on_hup)

    def reload(self) -> None:
        """Gallery changed (SIGHUP, an admin command, another process): new matcher, new person rules."""
        # Both read before either is used: a reload that fails half way must not leave new templates with
        # old rules (a deactivated person still let in) while the versions say the reload is done.
        matcher = Matcher.from_gallery(self.gallery, self.model_sha)
        rules = person_rules(self.gallery)
        self.recognizer.matcher = matcher
        self.controller.set_persons(rules)
        log.info("gallery reloaded: %d persons, %d templates, version %d", matcher.n_persons, matcher.n_templates,
                 matcher.gallery_version)
        sdnotify.notify(f"STATUS=gallery version {matcher.gallery_version}, {matcher.n_persons} persons")
        self._state_dirty.set()
        self._announce_loaded()

    def _announce_loaded(self) -> None:
        """Tell `edge-app gallery ...` which version the door uses now (edge_app.gallery.kiosk)."""
        if not self.gallery.read_only:
            self._guarded("recording the loaded gallery version",
                          lambda: record_loaded(self.gallery, self.device_id, self.recognizer.matcher.gallery_version))

    def _read_data_version(self) -> int | None:
        try:
            return self.gallery.data_version()
        except Exception:  # checked again every loop; a broken file is reported by the reads that follow
            log.exception("cannot read the gallery's data_version")
            return None

    def _watch_gallery(self) -> None:
        """Reload within a loop iteration when anyone (the CLI, an admin tool, another process) changed
        persons or templates: data_version moves on any commit by another connection, gallery_version
        only on those changes."""
        version = self._read_data_version()
        if version == self._data_version:
            return
        if self.gallery.gallery_version != self.recognizer.matcher.gallery_version:
            log.info("the gallery file changed (version %d -> %d): reloading", self.recognizer.matcher.gallery_version,
                     self.gallery.gallery_version)
            self.reload()
        self._data_version = version  # only now: a reload that failed is tried again next time

    def _guarded(self, what: str, fn: Callable[[], object]) -> bool:
        """Run one step of the loop; the loop survives whatever it raises (storage, MQTT, snapshots).
        A step that keeps failing the same way is logged once a minute, not on every frame."""
        try:
            fn()
        except Exception as exc:
            t, key = time.monotonic(), repr(exc)
            last = self._failing.get(what)
            if last is None or last[0] != key or t - last[1] >= 60.0:
                log.exception("%s failed; carrying on", what)
                self._failing[what] = (key, t)
            return False
        self._failing.pop(what, None)
        return True

    # --- events -----------------------------------------------------------------------------------

    def on_door_event(self, event: DoorEvent, info: dict[str, object]) -> None:
        """Door callback (any thread): logged now, stored by the loop (alarms and exit requests)."""
        self._state_dirty.set()
        # edge_app.hardware.door already logs every event at INFO; alarms are repeated here as warnings.
        level = logging.WARNING if event in (DoorEvent.FORCED_OPEN, DoorEvent.HELD_OPEN) else logging.DEBUG
        log.log(level, "door: %s %s", event.name.lower(), info)
        if event in (DoorEvent.FORCED_OPEN, DoorEvent.HELD_OPEN, DoorEvent.EXIT_REQUEST):
            self._door_events.put((event, info))

    def _store_door_events(self) -> None:
        while True:
            try:
                event, info = self._door_events.get_nowait()
            except queue.Empty:
                return
            self._record("door", event.name.lower(), details={"device": self.device_id, **info})

    def _record(self, kind: str, reason: str, **kw: Any) -> None:
        ts = kw.pop("ts", None) or self.now()
        # Storage trouble is handled inside (memory queue); the guard is for anything else.
        self._guarded(f"recording a {kind} event ({reason})", lambda: self.events.record(kind, reason, ts=ts, **kw))

    def _store_decision(self, d: AccessDecision, rec: Recognition | None, frame: Frame) -> None:
        details: dict[str, Any] = {"device": self.device_id, "decision": "granted" if d.granted else "denied",
                                   **d.details()}
        if self.config.events.snapshots and rec is not None:
            try:
                details["snapshot"] = str(self._snapshot(d, rec, frame))
            except (OSError, EdgeAppError) as exc:  # a full disk: the decision and its event stand
                log.error("snapshot of decision %s not written: %s", d.id, exc)
                details["snapshot_error"] = str(exc)
        mask = None if d.masked is None else ("yes" if d.masked else "no")
        self.last_access = {"summary": f"{d.person_name or 'unknown'}: {d.reason.value}", "name": d.person_name,
                            "granted": d.granted, "reason": d.reason.value, "ts": d.at.isoformat(timespec="seconds")}
        self._state_dirty.set()
        self._record("access", d.reason.value, person_id=d.person_id, person_name=d.person_name, score=d.score,
                     mask=mask, details=details, event_id=d.id, ts=d.at)

    def _snapshot_dir(self) -> Path:
        return self.config.events.snapshot_dir or Path(self.gallery.path).parent / "snapshots"

    def _snapshot(self, d: AccessDecision, rec: Recognition, frame: Frame) -> Path:
        x0, y0, x1, y1 = (round(v) for v in rec.face.detection.box)
        h, w = frame.image.shape[:2]
        pad = (x1 - x0) // 4
        crop = frame.image[max(0, y0 - pad):min(h, y1 + pad), max(0, x0 - pad):min(w, x1 + pad)]
        path = self._snapshot_dir() / f"{d.at:%Y%m%d-%H%M%S}-{d.id}.jpg"
        return write_private(path, encode_image(crop, ".jpg", str(path)))  # faces: 0600 in a 0700 folder

    def prune(self) -> None:
        ev = self.config.events
        cutoff = self.now() - timedelta(days=ev.retention_days)
        self.gallery.prune_events(cutoff)
        Outbox(self.gallery).prune_before(cutoff)  # the same events, waiting for a broker
        folder = self._snapshot_dir()
        if folder.is_dir():
            oldest = time.time() - ev.snapshot_retention_days * 86400
            for p in folder.glob("*.jpg"):
                if p.stat().st_mtime < oldest:
                    p.unlink(missing_ok=True)

    # --- the loop ---------------------------------------------------------------------------------

    def _frames(self) -> Iterator[Frame | None]:
        """Frames to process; None means "nothing new right now" (a live camera between frames)."""
        every = self.config.access.every_nth_frame
        if not self.source.live:
            start = time.monotonic()
            with self.source:
                self._check_frame_interval()
                for frame in self.source:
                    if self.realtime and self.stop.wait(max(0.0, start + frame.timestamp - time.monotonic())):
                        return
                    if frame.index % every == 0:
                        yield frame
            return
        from edge_app.hardware.camera import LatestFrame

        grabber = LatestFrame(self.source, self.stop)
        grabber.start()
        try:
            while not self.stop.is_set():
                newest = grabber.get(timeout=0.5)
                self._camera_status(grabber.last_error or self._frozen_error())
                yield newest
        finally:
            grabber.stop()

    def _check_frame_interval(self) -> None:
        """Video files only: a live camera always gives its newest frame (every_nth_frame does not apply)."""
        acc, fps = self.config.access, self.source.fps
        if fps and acc.every_nth_frame / fps >= acc.max_gap_seconds:
            raise ConfigError(f"[access] max_gap_seconds ({acc.max_gap_seconds:g}) must be longer than the time "
                              f"between processed frames: every_nth_frame {acc.every_nth_frame} at {fps:g} frames/s "
                              f"is {acc.every_nth_frame / fps:.2f} s, so no vote could ever be completed")

    def _frozen_error(self) -> SourceError | None:
        """A sensor camera counts as lost once it has repeated one picture for [camera] no_frame_seconds. Not a
        network stream: one of a still scene may decode to identical frames for hours (its repeats still vote
        nothing)."""
        seconds = self._repeats.frozen_for()
        if not self.source.sensor or seconds < self.config.camera.no_frame_seconds:
            return None
        return SourceTimeoutError(f"{self.source.description}: the same picture for {seconds:.0f} s (frozen)")

    def _camera_status(self, error: BaseException | None) -> None:
        if error is not None and self._camera_ok:
            self._camera_ok = False
            log.error("camera lost: %s", error)
            sdnotify.notify(f"STATUS=camera lost: {error}")
            self._record("camera", "lost", details={"device": self.device_id, "error": str(error)})
            self._state_dirty.set()
        elif error is None and not self._camera_ok:
            self._camera_ok = True
            log.warning("camera back")
            sdnotify.notify("STATUS=camera back")
            self._record("camera", "recovered", details={"device": self.device_id})
            self._state_dirty.set()

    def state(self) -> dict[str, Any]:
        ev = self.events
        return {"door": "locked" if self.door.locked else "unlocked", "door_open": self.door.door_open,
                "gallery_version": self.recognizer.matcher.gallery_version, "model_sha": self.model_sha,
                "fps": round(self.fps, 1), "camera": "ok" if self._camera_ok else "lost",
                "recognition": "ok" if self._recognition_error is None else f"failed: {self._recognition_error}",
                "storage": ev.storage, "storage_error": ev.storage_error, "events_pending_memory": len(ev),
                "events_dropped_memory": ev.dropped, "last_access": self.last_access}

    def _mqtt(self) -> None:
        """Commands in (on this thread), state out when something changed or at the interval."""
        seen = (self.events.storage, len(self.events), self.events.dropped)
        if seen != self._storage_seen:
            self._storage_seen = seen
            self._state_dirty.set()
            if seen[0] != "ok":
                sdnotify.notify(f"STATUS=storage {seen[0]}: {seen[1]} events in memory")
        if self.control is None:
            return
        if self.control.poll():
            self._reload.set()  # the loop reloads, and tries again until a reload succeeds
            self._state_dirty.set()
        t = time.monotonic()
        t0, n0 = self._fps_mark
        if t - t0 >= 5.0:
            self.fps = (self.stats.frames - n0) / (t - t0)
            self._fps_mark = (t, self.stats.frames)
        if self._state_dirty.is_set() or t - self._last_state >= self.config.mqtt.state_interval_seconds:
            self._state_dirty.clear()
            self._last_state = t
            self.control.publish_state(self.state())

    def _ping(self) -> None:
        t = time.monotonic()
        if self._watchdog and t - self._last_ping >= self._watchdog / 2:
            sdnotify.notify("WATCHDOG=1")
            self._last_ping = t
        if t - self._last_prune >= PRUNE_EVERY_S:
            self._last_prune = t
            try:
                self.prune()
            except (EdgeAppError, OSError):
                log.exception("pruning old events failed")

    def step(self, frame: Frame) -> list[AccessDecision]:
        """One frame through recognition, voting, policy, door and event log."""
        # A repeated picture is looked at as an empty one: tracks miss it, nobody is voted for.
        repeat = self._repeats.repeated(frame.image)
        self.stats.repeated_frames = self._repeats.count
        recs = [] if repeat else self.recognizer.recognize(frame.image)
        t_seen = time.monotonic()
        self.stats.frames += 1
        self.stats.faces += len(recs)
        if recs and self._face_since is None:
            self._face_since = t_seen
            if self.stats.first_face_frame is None:
                self.stats.first_face_frame = self.stats.frames
        elif not recs:
            self._face_since = None
        self._capture_step(frame, recs)
        decisions = self.controller.observe(recs, self.now(), frame.timestamp)
        by_track = {t.id: t for t in self.controller.tracker.tracks} if decisions else {}
        for d in decisions:
            if self.feedback is not None:
                self.feedback.show(pattern_for(d.reason.value))
            if d.granted:
                self.door.unlock(reason="grant")
                self.stats.granted += 1
                if self.stats.first_grant_frame is None:
                    self.stats.first_grant_frame = self.stats.frames
                if self._face_since is not None:
                    self.stats.grant_latency_ms.append((time.monotonic() - self._face_since) * 1e3)
                log.info("granted %s (score %s, mask %s, reason %s)", d.person_name, _fmt_score(d.score),
                         _fmt_mask(d.masked), d.reason.value)
            else:
                self.stats.denied += 1
                log.info("denied %s (score %s, mask %s, reason %s)", d.person_name or "unknown face",
                         _fmt_score(d.score), _fmt_mask(d.masked), d.reason.value)
            self.stats.decisions += 1
            track = by_track.get(d.track_id)
            rec = self._rec_for(recs, track.box) if track else None
            self._store_decision(d, rec, frame)
        return decisions

    @staticmethod
    def _rec_for(recs: list[Recognition], box: tuple[float, float, float, float]) -> Recognition | None:
        for r in recs:
            if r.face.detection.box == box:
                return r
        return None

    def _step_guarded(self, frame: Frame) -> None:
        """step(), surviving anything: a failing model stops recognition (the door stays locked, as it
        is whenever nobody is granted) and the state says why, until a frame goes through again."""
        try:
            self.step(frame)
        except Exception as exc:
            if self._recognition_error is None:
                log.exception("recognition failed; the door stays locked")
                sdnotify.notify(f"STATUS=recognition failed: {exc}")
                self._state_dirty.set()
            self._recognition_error = str(exc) or type(exc).__name__
            return
        if self._recognition_error is not None:
            log.warning("recognition works again")
            self._recognition_error = None
            self._state_dirty.set()

    def run(self, max_frames: int | None = None) -> int:
        """Until stopped (or the end of a video file). Returns an exit code: 0 clean stop, 1 failure."""
        sdnotify.notify("READY=1", f"STATUS=watching {self.source.description}")
        if self.events.storage != "ok":
            log.error("storage %s: %s; events are kept in memory and published directly", self.events.storage,
                      self.events.storage_error)
        self._announce_loaded()
        log.info("running: device %s, source %s, %d persons", self.device_id, self.source.description,
                 self.recognizer.matcher.n_persons)
        code = 0
        try:
            for frame in self._frames():
                if self.stop.is_set():
                    break
                self._ping()
                self._guarded("storing door events", self._store_door_events)
                self._guarded("storing events kept in memory", self.events.flush)
                self._guarded("checking the gallery for changes", self._watch_gallery)
                self._guarded("mqtt", self._mqtt)
                if self._reload.is_set():
                    self._reload.clear()
                    if not self._guarded("reloading the gallery", self.reload):
                        self._reload.set()  # tried again next frame: the door must not go on with stale rules
                if frame is not None:
                    self._step_guarded(frame)
                if max_frames is not None and self.stats.frames >= max_frames:
                    break
        except SourceError as exc:
            log.error("camera failed: %s", exc)
            code = 1
        finally:
            sdnotify.notify("STOPPING=1")
            self.door.close()
            self._guarded("storing door events", self._store_door_events)
            self._guarded("storing events kept in memory", lambda: self.events.flush(force=True))
            if not self.gallery.read_only:
                self._guarded("clearing the loaded gallery version",
                              lambda: forget_loaded(self.gallery, self.device_id))
        log.info("stopped: %s", self.stats.as_dict())
        return code


def pin_factory(mode: str) -> Any:
    """gpiozero's pin factory: None (gpiozero picks the real one) on a Pi; MockFactory elsewhere or on request."""
    model = Path("/proc/device-tree/model")
    on_pi = model.is_file() and "raspberry pi" in model.read_text(errors="replace").lower()
    if mode == "auto" and on_pi:
        return None
    from gpiozero.pins.mock import MockFactory

    if mode == "auto":
        log.warning("=" * 70)
        log.warning("NOT A RASPBERRY PI: the door relay is SIMULATED (gpiozero MockFactory). Nothing will open.")
        log.warning("Set [door] pins = \"mock\" to silence this on a bench machine.")
        log.warning("=" * 70)
    return MockFactory()


def default_device_id() -> str:
    return os.environ.get("EDGE_APP_DEVICE_ID") or socket.gethostname()


def _fmt_score(score: float | None) -> str:  # for the one log line per door decision
    return "-" if score is None else f"{score:.3f}"


def _fmt_mask(masked: bool | None) -> str:
    return "unknown" if masked is None else "yes" if masked else "no"
