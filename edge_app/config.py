"""Strict TOML configuration, read into frozen dataclasses.

Validation is generic: each section is a dataclass, each key one of its fields, and the
field's type plus an optional ``rule(...)`` in its metadata say what is accepted. Adding a
section is one dataclass and one field on ``Config``; no per-key code. Every error names
the file, the section and the key, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import logging
import math
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from edge_app.errors import ConfigError, ConfigNotFoundError

__all__ = [
    "DEFAULT",
    "AccessConfig",
    "CameraConfig",
    "Config",
    "DeviceConfig",
    "DoorSection",
    "EventsConfig",
    "FeedbackConfig",
    "GalleryConfig",
    "LivenessConfig",
    "ModelsConfig",
    "MqttConfig",
    "RecognitionConfig",
    "describe",
    "load_config",
    "parse_config",
]

log = logging.getLogger(__name__)

_RULE = "edge_app.config.rule"


# The embedders a model set may offer (edge_app/models.py EMBEDDERS maps them to model files). The default fuses
# EdgeFace-XS and Intel's face-reidentification-retail-0095 with SFace for bare faces: 54.7 % of bare walk-ups granted
# on real-masked-dev (K=3) at the same stranger rate, against 49.7 % with EdgeFace-XS alone beside SFace and 35.7 %
# with SFace alone (docs/accuracy.md); each network costs a few ms per bare face. "auto" (the setting's default)
# takes the default embedder unless the gallery holds templates of another embedder only, so a gallery enrolled
# before an upgrade keeps opening the door.
EMBEDDER_NAMES = ("sface", "dlib", "sface+edgeface", "sface+edgeface+reid")
DEFAULT_EMBEDDER = "sface+edgeface+reid"
AUTO_EMBEDDER = "auto"


@dataclass(frozen=True)
class Rule:
    """Limits on a value beyond its type: a numeric range or a set of choices."""

    lo: float | None = None
    hi: float | None = None
    exclusive: bool = False  # both ends excluded: (lo, hi) rather than [lo, hi]
    choices: tuple[str, ...] = ()


def rule(lo: float | None = None, hi: float | None = None, *, exclusive: bool = False,
         choices: tuple[str, ...] = ()) -> Mapping[str, Rule]:
    """Field metadata for ``field(metadata=rule(...))``."""
    return {_RULE: Rule(lo, hi, exclusive, choices)}


@dataclass(frozen=True)
class RecognitionConfig:
    # None: use the value the models' manifest recommends for the bundled embedder.
    threshold: float | None = field(default=None, metadata=rule(-1, 1))
    masked_threshold: float | None = field(default=None, metadata=rule(-1, 1))
    # None: as calibrated (manifest); "plain" or "plain+masked" templates for a masked probe.
    masked_gallery: str | None = field(default=None, metadata=rule(choices=("plain", "plain+masked")))
    # None: as calibrated; the best person must beat the second best by this much (plain / masked probes).
    margin: float | None = field(default=None, metadata=rule(0, 1))
    masked_margin: float | None = field(default=None, metadata=rule(0, 1))
    # Thresholds and margins above may be raised, not lowered, below the values calibrated for the embedder in use
    # (MANIFEST.json: strangers granted <= 0.1 % per walk-up); true accepts the risk of a lower one.
    accept_weaker_thresholds: bool = False
    mask_probability: float = field(default=0.5, metadata=rule(0, 1, exclusive=True))
    require_mask: bool = False
    masked_templates_per_photo: int = field(default=3, metadata=rule(0, 10))
    detector: str = field(default="short", metadata=rule(choices=("short", "full")))
    # The short-range detector's extra passes (edge_app/vision/cascade.py, docs/detection.md):
    detector_refine_below: float = field(default=260.0, metadata=rule(0, 4096))  # px; 0: no refinement
    detector_close_up: bool = True  # padded pass for faces filling the frame
    detector_small_faces: bool = True  # full-range pass for faces of 40-100 px
    detector_tile: float = field(default=0.5, metadata=rule(0, 1))  # squares (x frame height) if nothing found; 0: off
    detector_tile_every: int = field(default=3, metadata=rule(1, 100))  # daemon: tiles on every n-th empty frame
    embedder: str = field(default=AUTO_EMBEDDER, metadata=rule(choices=(AUTO_EMBEDDER, *EMBEDDER_NAMES)))
    threads: int = field(default=2, metadata=rule(lo=1))


@dataclass(frozen=True)
class GalleryConfig:
    path: Path | None = None  # None: the CLI's default location


@dataclass(frozen=True)
class ModelsConfig:
    dir: Path | None = None  # None: EDGE_APP_MODELS or the bundled models


@dataclass(frozen=True)
class DeviceConfig:
    id: str | None = None  # None: the host name; names the kiosk in events and MQTT topics
    timezone: str | None = None  # IANA name, e.g. "Europe/Berlin"; None: the system's zone
    # Refuse people with a validity window or schedule while the clock is known NOT synchronised (a Pi boots
    # with the time it last saved). An offline kiosk with a battery-backed RTC and no NTP sets this false.
    require_clock_sync: bool = True

    def __post_init__(self) -> None:
        if self.timezone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"timezone: unknown time zone {self.timezone!r} (an IANA name like "
                                 "\"Europe/Berlin\")") from None


@dataclass(frozen=True)
class CameraConfig:
    source: str = "0"  # "0" (USB camera index), "picamera2", "rtsp://...", a video file
    width: int = field(default=640, metadata=rule(lo=64, hi=4096))
    height: int = field(default=480, metadata=rule(lo=48, hi=4096))
    no_frame_seconds: float = field(default=10.0, metadata=rule(lo=0.5, hi=3600))


@dataclass(frozen=True)
class AccessConfig:
    votes: int = field(default=3, metadata=rule(lo=1, hi=30))  # N agreeing frames ...
    window: int = field(default=5, metadata=rule(lo=1, hi=60))  # ... of the last M
    cooldown_seconds: float = field(default=10.0, metadata=rule(lo=0, hi=3600))
    every_nth_frame: int = field(default=1, metadata=rule(lo=1, hi=30))
    # A vote is made of consecutive frames: a longer gap (camera lost or stalled, a frozen picture dropped)
    # starts the votes again, so frames from before it never count towards a grant after it.
    max_gap_seconds: float = field(default=1.5, metadata=rule(lo=0.05, hi=60))

    def __post_init__(self) -> None:
        if self.votes > self.window:
            raise ValueError(f"votes ({self.votes}) cannot exceed window ({self.window})")


@dataclass(frozen=True)
class LivenessConfig:
    """Presentation-attack detection (docs/liveness.md): a recognised face must also be judged live."""

    enabled: bool = True
    # p(live) to count a frame live: the equal-error point of scripts/evaluate_liveness.py (docs/liveness.md)
    threshold: float = field(default=0.4, metadata=rule(0, 1, exclusive=True))
    votes: int = field(default=3, metadata=rule(lo=1, hi=30))  # live frames needed in the [access] window
    # Second cue: keypoints over the window must not move as one plane (a photo, a screen). Off by default:
    # a person who stands still fits a plane too and would wait until they move, and BlazeFace's keypoint
    # jitter alone gives rigid attacks residuals of 0.02-0.05 eye distances (docs/liveness.md).
    motion: bool = False
    motion_residual: float = field(default=0.1, metadata=rule(0, 1, exclusive=True))
    # After a spoof of a person is refused, that person is not granted for this long (reason spoof_hold): a replay
    # that passes some of its windows must not be retried every few seconds. 0 turns it off.
    hold_seconds: float = field(default=30.0, metadata=rule(lo=0, hi=3600))


@dataclass(frozen=True)
class DoorSection:
    relay_pin: int = field(default=17, metadata=rule(lo=0, hi=53))
    lock_type: str = field(default="fail_secure", metadata=rule(choices=("fail_secure", "fail_safe")))
    relay_active_high: bool = True
    pulse_seconds: float = field(default=3.0, metadata=rule(lo=0.2, hi=60))
    contact_pin: int | None = field(default=None, metadata=rule(lo=0, hi=53))
    contact_normally_open: bool = False
    exit_button_pin: int | None = field(default=None, metadata=rule(lo=0, hi=53))
    held_open_seconds: float = field(default=30.0, metadata=rule(lo=1, hi=3600))
    # "auto": gpiozero's default (real pins on a Pi); "mock": simulated pins, for a bench or CI.
    pins: str = field(default="auto", metadata=rule(choices=("auto", "mock")))

    def __post_init__(self) -> None:
        used = [p for p in (self.relay_pin, self.contact_pin, self.exit_button_pin) if p is not None]
        if len(used) != len(set(used)):
            raise ValueError(f"relay_pin, contact_pin and exit_button_pin must differ, got {used}")


_PIN = rule(lo=0, hi=53)  # BCM numbers


@dataclass(frozen=True)
class FeedbackConfig:
    """Optional LEDs and buzzer at the door (edge_app.hardware.feedback); no pin set = no feedback."""

    green_pin: int | None = field(default=None, metadata=_PIN)
    red_pin: int | None = field(default=None, metadata=_PIN)
    blue_pin: int | None = field(default=None, metadata=_PIN)  # only with rgb = true
    rgb: bool = False  # red/green/blue pins are one RGB LED
    led_active_high: bool = True  # false: common-anode RGB LED, or LEDs wired to 3V3
    buzzer_pin: int | None = field(default=None, metadata=_PIN)
    buzzer_active_high: bool = True
    show_seconds: float = field(default=2.0, metadata=rule(lo=0.2, hi=30))  # how long the LED tells the outcome

    def __post_init__(self) -> None:
        used = list(self.pins.items())
        for i, (name, pin) in enumerate(used):
            for other, other_pin in used[:i]:
                if pin == other_pin:
                    raise ValueError(f"{name} and {other} both use GPIO {pin}")
        if self.rgb and None in (self.red_pin, self.green_pin, self.blue_pin):
            raise ValueError("rgb = true needs red_pin, green_pin and blue_pin")
        if not self.rgb and self.blue_pin is not None:
            raise ValueError("blue_pin: only used with rgb = true (one RGB LED)")

    @property
    def pins(self) -> dict[str, int]:
        return {f"{n}_pin": p for n in ("green", "red", "blue", "buzzer")
                if (p := getattr(self, f"{n}_pin")) is not None}


@dataclass(frozen=True)
class EventsConfig:
    retention_days: int = field(default=90, metadata=rule(lo=1, hi=3650))
    snapshots: bool = False  # store a JPEG of the face with each decision (privacy: off by default)
    snapshot_dir: Path | None = None  # None: "snapshots" beside the gallery
    snapshot_retention_days: int = field(default=7, metadata=rule(lo=1, hi=365))


@dataclass(frozen=True)
class MqttConfig:
    enabled: bool = False
    host: str = "localhost"
    port: int = field(default=1883, metadata=rule(lo=1, hi=65535))
    prefix: str = "edge-app"
    groups: str = ""  # comma-separated fleet groups: commands on <prefix>/group/<name>/cmd reach this device
    username: str | None = None
    password_file: Path | None = None  # a file holding the password (not the password: the config is 0640)
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    admin_keys: str = ""  # comma-separated "ed25519:<base64>" public keys allowed to sign commands
    command_window_seconds: float = field(default=300.0, metadata=rule(lo=10, hi=86400))
    allow_remote_unlock: bool = False  # the signed door.unlock command
    state_interval_seconds: float = field(default=60.0, metadata=rule(lo=1, hi=3600))
    ha_discovery: bool = False
    ha_prefix: str = "homeassistant"
    ha_remote_unlock: bool = False  # Home Assistant's unsigned unlock button (also needs allow_remote_unlock)
    # Home Assistant unlocks obeyed per minute; two are also at least [door] pulse_seconds apart.
    ha_unlock_per_minute: int = field(default=4, metadata=rule(lo=1, hi=60))

    def __post_init__(self) -> None:
        for name in ("prefix", "ha_prefix"):
            value = getattr(self, name)
            if not value or any(c in value for c in "+#") or value.startswith("/") or value.endswith("/"):
                raise ValueError(f"{name}: not a usable MQTT topic prefix: {value!r}")
        for g in self.group_list:
            if any(c in g for c in "+#/"):
                raise ValueError(f"groups: {g!r} contains + # or /")
        if self.cert_file is not None and self.key_file is None:
            raise ValueError("cert_file is set but key_file is not: a client certificate needs its key")
        if self.ha_remote_unlock and not self.allow_remote_unlock:
            log.warning("[mqtt] ha_remote_unlock is true but allow_remote_unlock is false: Home Assistant's "
                        "unlock button will be refused (and audited)")
        if self.enabled and not self.admin_keys.strip():
            log.warning("[mqtt] admin_keys is empty: this device will refuse every admin command")

    @property
    def group_list(self) -> tuple[str, ...]:
        return tuple(g.strip() for g in self.groups.split(",") if g.strip())

    @property
    def admin_key_list(self) -> tuple[str, ...]:
        return tuple(k.strip() for k in self.admin_keys.split(",") if k.strip())


@dataclass(frozen=True)
class Config:
    """Every field whose type is a dataclass is a ``[section]`` of the file."""

    device: DeviceConfig = field(default_factory=DeviceConfig)
    recognition: RecognitionConfig = field(default_factory=RecognitionConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    access: AccessConfig = field(default_factory=AccessConfig)
    liveness: LivenessConfig = field(default_factory=LivenessConfig)
    door: DoorSection = field(default_factory=DoorSection)
    events: EventsConfig = field(default_factory=EventsConfig)
    feedback: FeedbackConfig = field(default_factory=FeedbackConfig)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    gallery: GalleryConfig = field(default_factory=GalleryConfig)
    models: ModelsConfig = field(default_factory=ModelsConfig)
    # Where it was read from; not compared, so equal settings are equal configs.
    source: Path | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        door = {n: getattr(self.door, n) for n in ("relay_pin", "contact_pin", "exit_button_pin")}
        for name, pin in self.feedback.pins.items():
            clash = [n for n, p in door.items() if p == pin]
            if clash:  # an LED or buzzer wired to the relay would open the door on every beep
                raise ConfigError(f"{self.source or '<config>'}: [feedback] {name}: GPIO {pin} is [door] {clash[0]}; "
                                  "feedback outputs never share a door pin")


DEFAULT = Config()

_SCALARS = (bool, int, float, str, Path)


@dataclass(frozen=True)
class _Key:
    type: type
    rule: Rule


def _schema() -> dict[str, tuple[type, dict[str, _Key]]]:
    """Section name -> (dataclass, key name -> accepted type and rule); checked at import."""
    schema: dict[str, tuple[type, dict[str, _Key]]] = {}
    for sec in fields(Config):
        cls = typing.get_type_hints(Config)[sec.name]
        if not (isinstance(cls, type) and is_dataclass(cls)):
            continue
        hints = typing.get_type_hints(cls)
        keys: dict[str, _Key] = {}
        for f in fields(cls):
            # TOML has no null, so "X | None" only means "may be left out": accept X.
            args = [a for a in typing.get_args(hints[f.name]) if a is not types.NoneType]
            typ = args[0] if len(args) == 1 else hints[f.name]
            if typ not in _SCALARS:
                raise TypeError(f"config: {cls.__name__}.{f.name}: unsupported type {hints[f.name]!r}")
            keys[f.name] = _Key(typ, f.metadata.get(_RULE, Rule()))
        schema[sec.name] = (cls, keys)
    return schema


_SCHEMA = _schema()


def _num(x: float) -> str:
    return f"{x:g}"


def _expected(key: _Key) -> str:
    r = key.rule
    if key.type is bool:
        return "true or false"
    if r.choices:
        return "one of " + ", ".join(f'"{c}"' for c in r.choices)
    if key.type is str:
        return "a string"
    if key.type is Path:
        return "a path (a non-empty string)"
    what = "an integer" if key.type is int else "a number"
    if r.lo is not None and r.hi is not None:
        if key.type is int and not r.exclusive:
            return f"{what} in {_num(r.lo)}..{_num(r.hi)}"
        return f"{what} in {'(' if r.exclusive else '['}{_num(r.lo)}, {_num(r.hi)}{')' if r.exclusive else ']'}"
    if r.lo is not None:
        return f"{what} {'>' if r.exclusive else '>='} {_num(r.lo)}"
    if r.hi is not None:
        return f"{what} {'<' if r.exclusive else '<='} {_num(r.hi)}"
    return what


def _toml_str(s: str) -> str:
    out = []
    for ch in s:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:  # TOML forbids raw control characters in strings
            out.append(f"\\u{ord(ch):04x}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _show(value: object) -> str:
    """How a found value is quoted in a message: as it looked in the file."""
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return _toml_str(value)
    return str(value)


def _in_range(x: float, r: Rule) -> bool:
    if r.lo is not None and (x <= r.lo if r.exclusive else x < r.lo):
        return False
    return not (r.hi is not None and (x >= r.hi if r.exclusive else x > r.hi))


def _convert(value: object, key: _Key, base: Path) -> tuple[bool, Any]:
    """(ok, converted value). bool is an int in Python but never a number here."""
    t, r = key.type, key.rule
    if t is bool:
        return isinstance(value, bool), value
    if isinstance(value, bool):
        return False, None
    if t is int:
        return isinstance(value, int) and _in_range(value, r), value
    if t is float:
        if not isinstance(value, int | float):
            return False, None
        x = float(value)  # TOML "1" is an integer; a threshold of 1 is fine
        return math.isfinite(x) and _in_range(x, r), x
    if not isinstance(value, str):
        return False, None
    if t is str:
        return not r.choices or value in r.choices, value
    if not value.strip():
        return False, None
    return True, base / Path(value).expanduser()  # an absolute path replaces base


_QUOTED, _BRACKETED = '"{}"', "[{}]"


def _suggest(name: str, known: list[str], fmt: str) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return "did you mean " + fmt.format(close[0]) + "?"
    return "known: " + ", ".join(fmt.format(k) for k in sorted(known))


def _section(name: str, table: object, label: str, base: Path) -> object:
    cls, keys = _SCHEMA[name]
    where = f"{label}: [{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table (a [{name}] section), got {_show(table)}")
    values: dict[str, Any] = {}
    for k, v in table.items():
        if k not in keys:
            raise ConfigError(f"{where} {k}: unknown key, {_suggest(k, list(keys), _QUOTED)}")
        ok, values[k] = _convert(v, keys[k], base)
        if not ok:
            raise ConfigError(f"{where} {k}: expected {_expected(keys[k])}, got {_show(v)}")
    try:
        return cls(**values)
    except ValueError as exc:  # checks across keys, in the section's __post_init__
        raise ConfigError(f"{where} {exc}") from None


def parse_config(text: str, source: str | Path = "<string>") -> Config:
    """Parse TOML text. ``source`` names the file in messages and anchors relative paths;
    a pseudo-name like ``"<string>"`` anchors them at the current directory instead."""
    label = str(source)
    pseudo = isinstance(source, str) and source.startswith("<") and source.endswith(">")
    path = None if pseudo else Path(source).absolute()
    base = Path.cwd() if path is None else path.parent
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:  # its message carries "(at line L, column C)"
        raise ConfigError(f"{label}: invalid TOML: {e}") from e
    sections: dict[str, Any] = {}
    for k, v in doc.items():
        if k in _SCHEMA:
            sections[k] = _section(k, v, label, base)
        elif not isinstance(v, dict | list):
            owners = [f"[{s}]" for s, (_, keys) in _SCHEMA.items() if k in keys]
            hint = f"it belongs in {' or '.join(owners)}" if owners else \
                "settings belong in a section: " + ", ".join(f"[{s}]" for s in sorted(_SCHEMA))
            raise ConfigError(f"{label}: {k}: a top-level key is not allowed, {hint}")
        else:
            raise ConfigError(f"{label}: [{k}]: unknown section, {_suggest(k, list(_SCHEMA), _BRACKETED)}")
    config = Config(**sections, source=path)
    if config.liveness.votes > config.access.window:  # the live frames are counted in the vote window
        raise ConfigError(f"{label}: [liveness] votes ({config.liveness.votes}) cannot exceed [access] window "
                          f"({config.access.window})")
    return config


def load_config(path: str | Path) -> Config:
    """Read and parse a config file; every failure is a ConfigError naming the file."""
    p = Path(path).expanduser()
    try:
        data = p.read_bytes()
    except FileNotFoundError as e:
        raise ConfigNotFoundError(f"{p}: config file not found") from e
    except OSError as e:  # a directory, no permission, I/O error
        raise ConfigError(f"{p}: cannot read config file: {e.strerror or e}") from e
    try:
        text = data.decode("utf-8-sig")  # TOML is UTF-8; tolerate the BOM some editors write
    except UnicodeDecodeError as e:
        raise ConfigError(f"{p}: not UTF-8 text (bad byte at offset {e.start})") from e
    config = parse_config(text, p)
    log.debug("config loaded from %s", config.source)
    return config


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)  # repr of a finite float is valid TOML and round-trips exactly
    return _toml_str(str(value))


def describe(config: Config) -> str:
    """The effective configuration as TOML (None values left out); parses back to ``config``."""
    lines = [f"# effective configuration, read from {_toml_str(str(config.source))}" if config.source
             else "# effective configuration (defaults and given values)"]
    for name in _SCHEMA:
        lines += ["", f"[{name}]"]
        section = getattr(config, name)
        for f in fields(section):
            value = getattr(section, f.name)
            if value is not None:
                lines.append(f"{f.name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"
