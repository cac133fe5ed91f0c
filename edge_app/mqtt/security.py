"""Signed admin commands: Ed25519 keys, the wire envelope, and the device-side verifier.

Envelope (the MQTT payload, UTF-8 JSON)::

    {"v": 1, "alg": "ed25519", "kid": "<16 hex>", "payload": "<base64>", "sig": "<base64>"}

``kid`` is the first 8 bytes of sha256 of the raw 32-byte public key; ``sig`` signs the payload
*bytes*, which are themselves a JSON object ``{"id", "issued_at", "target", "type", "args"}``.
Signing bytes rather than a re-serialised object means no canonical-JSON rules to agree on, and
the verifier never parses anything an admin did not sign.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import math
import os
import re
import stat
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, NoReturn

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from edge_app.clock import ClockStatus, ClockSync
from edge_app.errors import CommandRejected as CommandRejected
from edge_app.errors import ConfigError, CryptoKeyError, CryptoKeyExistsError, CryptoKeyNotFoundError
from edge_app.gallery.outbox import SeenCommands

log = logging.getLogger(__name__)

DEFAULT_WINDOW_S: Final = 300.0
DEFAULT_SKEW_S: Final = 60.0
DEFAULT_MAX_BYTES: Final = 4 * 1024 * 1024
ENVELOPE_VERSION: Final = 1
ALG: Final = "ed25519"
KEY_TEXT_PREFIX: Final = "ed25519:"
SIG_LEN: Final = 64
RAW_KEY_LEN: Final = 32
ECHO_MAX: Final = 80

_ID_RE: Final = re.compile(r"[A-Za-z0-9_-]{8,64}")
_KID_RE: Final = re.compile(r"[0-9a-f]{16}")


# --- keys ---------------------------------------------------------------------------------------


def _clip(value: object) -> str:
    """repr() of something from outside, cut to ECHO_MAX characters: messages end up in logs."""
    r = repr(value)
    return r if len(r) <= ECHO_MAX else r[:ECHO_MAX - 3] + "..."


def _kind(key: object) -> str:
    # cryptography's key classes are named RSAPublicKey, ECPrivateKey, ...: "RSA", "EC".
    return re.sub(r"(Public|Private)Key$", "", type(key).__name__) or type(key).__name__


def generate_keypair() -> tuple[Ed25519PrivateKey, Ed25519PublicKey]:
    key = Ed25519PrivateKey.generate()
    return key, key.public_key()


def _raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(pub: Ed25519PublicKey) -> str:
    """16 hex characters: the first 8 bytes of sha256 of the raw public key."""
    return hashlib.sha256(_raw(pub)).digest()[:8].hex()


def public_key_text(pub: Ed25519PublicKey) -> str:
    """``ed25519:<base64 of the raw 32 bytes>``: the form written in a device's config."""
    return KEY_TEXT_PREFIX + base64.b64encode(_raw(pub)).decode("ascii")


def load_public_key(text: str) -> Ed25519PublicKey:
    """An admin public key from ``ed25519:<base64>``, bare base64 of 32 bytes, or a PEM SubjectPublicKeyInfo."""
    if not isinstance(text, str):
        raise CryptoKeyError(f"public key must be text, got {type(text).__name__}")
    s = text.strip()
    if s.startswith("-----BEGIN"):
        if "PRIVATE KEY" in s.splitlines()[0]:  # an easy slip; never echo it
            raise CryptoKeyError("this is a PEM *private* key; give the public key")
        try:
            key = serialization.load_pem_public_key(s.encode("utf-8"))
        except (ValueError, UnsupportedAlgorithm) as e:
            raise CryptoKeyError(f"not a readable PEM public key: {str(e)[:ECHO_MAX]}") from None
        if not isinstance(key, Ed25519PublicKey):
            raise CryptoKeyError(f"PEM public key is an {_kind(key)} key, not Ed25519")
        return key
    b64 = s[len(KEY_TEXT_PREFIX):] if s.lower().startswith(KEY_TEXT_PREFIX) else s
    try:
        raw = base64.b64decode(b64, validate=True)
    except ValueError:  # binascii.Error, or non-ASCII text
        raise CryptoKeyError(f"public key is not '{KEY_TEXT_PREFIX}<base64>', base64 or PEM: {_clip(text)}") from None
    if len(raw) != RAW_KEY_LEN:
        raise CryptoKeyError(f"an Ed25519 public key is {RAW_KEY_LEN} bytes, this one is {len(raw)}: {_clip(text)}")
    try:
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as e:
        raise CryptoKeyError(f"not a valid Ed25519 public key: {e}") from None


def save_private_key(key: Ed25519PrivateKey, path: Path, *, overwrite: bool = False) -> None:
    """PEM PKCS8, unencrypted, mode 0600 from the moment the file exists (no chmod race)."""
    path = Path(path)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise CryptoKeyExistsError(f"private key file {path} already exists; not overwriting it") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(fd, 0o600)  # an overwritten file keeps its old mode otherwise
        f.write(pem)
    log.info("wrote private key %s (kid %s)", path, key_id(key.public_key()))


def load_private_key(path: Path) -> Ed25519PrivateKey:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise CryptoKeyNotFoundError(f"private key file {path} does not exist") from None
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        log.warning("private key file %s is readable by others (mode %04o); chmod 600 it", path, mode)
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError:  # cryptography's signal for "encrypted, and no password given"
        raise CryptoKeyError(f"private key file {path} is encrypted; an unencrypted PKCS8 PEM is needed") from None
    except (ValueError, UnsupportedAlgorithm):
        raise CryptoKeyError(f"{path} is not a PEM private key file") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise CryptoKeyError(f"private key file {path} holds an {_kind(key)} key, not Ed25519")
    return key


# --- commands -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Command:
    id: str
    issued_at: float
    target: str
    type: str
    args: dict[str, Any]
    kid: str  # which admin key signed it
    size: int  # of the whole envelope, bytes


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of duplicate keys; another parser may keep the first. Refuse the ambiguity.
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {_clip(k)}")
        out[k] = v
    return out


def _json_object(data: bytes, what: str) -> dict[str, Any]:
    """Parse UTF-8 JSON that must be an object; ValueError with a short reason otherwise."""
    try:
        obj = json.loads(data.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError as e:
        raise ValueError(f"{what} is not UTF-8 ({e.reason} at byte {e.start})") from None
    except RecursionError:
        raise ValueError(f"{what} is nested too deeply") from None
    except ValueError as e:
        raise ValueError(f"{what} is not JSON: {str(e)[:ECHO_MAX]}") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what} is a JSON {type(obj).__name__}, not an object")
    return obj


def _check_payload(p: dict[str, Any]) -> tuple[str, float, str, str, dict[str, Any]]:
    """The five payload fields, type-checked; ValueError naming the first wrong one."""
    for name in ("id", "issued_at", "target", "type", "args"):
        if name not in p:
            raise ValueError(f"payload field {name!r} missing")
    cid, issued_at, target, ctype, args = p["id"], p["issued_at"], p["target"], p["type"], p["args"]
    if not isinstance(cid, str) or not _ID_RE.fullmatch(cid):
        raise ValueError(f"payload field 'id' must be 8..64 characters [A-Za-z0-9_-], got {_clip(cid)}")
    # bool is an int; NaN/inf would slip through every time comparison.
    if isinstance(issued_at, bool) or not isinstance(issued_at, int | float) or not math.isfinite(issued_at):
        raise ValueError(f"payload field 'issued_at' must be finite unix seconds, got {_clip(issued_at)}")
    if not isinstance(target, str) or not target:
        raise ValueError(f"payload field 'target' must be a non-empty string, got {_clip(target)}")
    if not isinstance(ctype, str) or not ctype:
        raise ValueError(f"payload field 'type' must be a non-empty string, got {_clip(ctype)}")
    if not isinstance(args, dict):
        raise ValueError(f"payload field 'args' must be an object, got {type(args).__name__}")
    return cid, float(issued_at), target, ctype, args


def sign_command(key: Ed25519PrivateKey, *, type: str, args: dict[str, Any], target: str,
                 command_id: str | None = None, issued_at: float | None = None) -> bytes:
    """The envelope bytes for one command (admin side). Checks the fields the way the device will, so a
    command the device would call malformed is refused here (CommandRejected, reason "malformed")."""
    payload_obj = {"id": uuid.uuid4().hex if command_id is None else command_id,
                   "issued_at": time.time() if issued_at is None else issued_at,
                   "target": target, "type": type, "args": args}
    try:
        _check_payload(payload_obj)
        payload = json.dumps(payload_obj, separators=(",", ":"), sort_keys=True, ensure_ascii=False,
                             allow_nan=False).encode("utf-8")
    except (ValueError, TypeError) as e:  # TypeError: args holds something JSON cannot encode
        raise CommandRejected("malformed", str(e)[:200], command_id) from None
    envelope = {"v": ENVELOPE_VERSION, "alg": ALG, "kid": key_id(key.public_key()),
                "payload": base64.b64encode(payload).decode("ascii"),
                "sig": base64.b64encode(key.sign(payload)).decode("ascii")}
    return json.dumps(envelope, separators=(",", ":")).encode("utf-8")


class CommandVerifier:
    """Turns envelope bytes into a Command, or raises CommandRejected saying why (see ``verify``).

    ``check`` holds every test that needs no storage and is safe on any thread (MQTT's network thread
    runs it, so junk never takes a queue slot); ``accept`` does the rest (clock synchronised, replay) on
    the thread that owns the gallery. ``verify`` is both."""

    def __init__(self, admin_keys: Sequence[Ed25519PublicKey], seen: SeenCommands, device_id: str,
                 groups: Sequence[str] = (), window_s: float = DEFAULT_WINDOW_S, max_skew_s: float = DEFAULT_SKEW_S,
                 max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.time,
                 clock_sync: Callable[[], ClockStatus] | None = None) -> None:
        if not isinstance(device_id, str) or not device_id:
            raise ConfigError(f"device id must be a non-empty string, got {device_id!r}")
        if not window_s > 0 or not max_skew_s >= 0 or not max_bytes > 0:
            raise ConfigError(f"window_s and max_bytes must be > 0 and max_skew_s >= 0, got "
                              f"{window_s!r}, {max_bytes!r}, {max_skew_s!r}")
        self.keys = {key_id(k): k for k in admin_keys}
        if not self.keys:
            log.warning("no admin keys configured: every command will be rejected")
        self.seen = seen
        self.device_id = device_id
        self.groups = frozenset(groups)
        self.window_s = float(window_s)
        self.max_skew_s = float(max_skew_s)
        self.max_bytes = int(max_bytes)
        self.clock = clock
        self.clock_sync = clock_sync or ClockSync().status

    def verify(self, raw: bytes) -> Command:
        """Check, in order: size, envelope, key, signature, payload, target, time, clock, replay.

        Nothing is written to the seen-commands table unless every other check passed, so a
        rejected command does not burn its id.
        """
        return self.accept(self.check(raw))

    def check(self, raw: bytes) -> Command:
        """Everything but the clock and the replay checks; no I/O, thread-safe."""
        size = len(raw)
        if size > self.max_bytes:  # before any parsing: a huge message costs nothing but this
            self._reject("too_large", f"message is {size} bytes, the limit is {self.max_bytes}")
        try:
            env = _json_object(bytes(raw), "envelope")
        except ValueError as e:
            self._reject("malformed", str(e))

        # Version first: a future envelope may have other fields, and "bad_version" is the useful answer.
        for name in ("v", "alg"):
            if name not in env:
                self._reject("malformed", f"envelope field {name!r} missing")
        v, alg = env["v"], env["alg"]
        if isinstance(v, bool) or not isinstance(v, int):
            self._reject("malformed", f"envelope field 'v' must be an integer, got {_clip(v)}")
        if not isinstance(alg, str):
            self._reject("malformed", f"envelope field 'alg' must be a string, got {_clip(alg)}")
        if v != ENVELOPE_VERSION:
            self._reject("bad_version", f"envelope version {v} is not supported (only {ENVELOPE_VERSION})")
        if alg != ALG:
            self._reject("bad_version", f"algorithm {_clip(alg)} is not supported (only {ALG!r})")
        for name in ("kid", "payload", "sig"):
            if name not in env:
                self._reject("malformed", f"envelope field {name!r} missing")
            if not isinstance(env[name], str):
                self._reject("malformed", f"envelope field {name!r} must be a string, got {_clip(env[name])}")
        kid = env["kid"].lower()
        if not _KID_RE.fullmatch(kid):
            self._reject("malformed", f"envelope field 'kid' must be 16 hex characters, got {_clip(env['kid'])}")
        payload, sig = self._b64(env, "payload"), self._b64(env, "sig")
        if len(sig) != SIG_LEN:
            self._reject("malformed", f"signature is {len(sig)} bytes, an Ed25519 signature is {SIG_LEN}")

        pub = self.keys.get(kid)
        if pub is None:
            self._reject("unknown_key", f"kid {kid} is not an admin key of this device")
        try:
            pub.verify(sig, payload)
        except InvalidSignature:
            self._reject("bad_signature", f"signature does not match the payload for kid {kid}")

        # Signed by an admin from here on, but still checked: a buggy admin tool is not a reason to crash.
        cid: str | None = None
        try:
            p = _json_object(payload, "payload")
            maybe_id = p.get("id")
            cid = maybe_id if isinstance(maybe_id, str) and _ID_RE.fullmatch(maybe_id) else None
            cid, issued_at, target, ctype, args = _check_payload(p)
        except ValueError as e:
            self._reject("malformed", str(e), cid)

        if not (target == "*" or target == self.device_id
                or (target.startswith("group:") and target[len("group:"):] in self.groups)):
            self._reject("wrong_target", f"target {_clip(target)} is not this device ({self.device_id}), "
                                         f"one of its groups or '*'", cid)
        self._check_time(cid, issued_at, self.clock())
        return Command(id=cid, issued_at=issued_at, target=target, type=ctype, args=args, kid=kid, size=size)

    def accept(self, cmd: Command) -> Command:
        """The checks that need the clock's state and the seen-commands table (the gallery's thread)."""
        sync = self.clock_sync()
        if sync.synced is False:
            self._reject("clock_unsynced", f"this device's clock is not synchronised ({sync.detail}); signed "
                                           "commands are refused until it is", cmd.id)
        now = self.clock()
        self._check_time(cmd.id, cmd.issued_at, now)  # again: the command may have waited in the queue
        # An id is forgotten only when it is out of the window by its issue time AND by the time we got it:
        # were the clock set back after a command arrived, the receive time still keeps its id.
        horizon = now - self.window_s - self.max_skew_s
        self.seen.forget_before(horizon, received_before=horizon)
        if not self.seen.add(cmd.id, cmd.issued_at, received_at=now):
            self._reject("replayed", f"command {cmd.id} was already received", cmd.id)
        log.debug("accepted command %s (%s) from kid %s", cmd.id, cmd.type, cmd.kid)
        return cmd

    def _check_time(self, cid: str, issued_at: float, now: float) -> None:
        if issued_at < now - self.window_s:
            self._reject("expired", f"issued {now - issued_at:.0f} s ago, the window is {self.window_s:g} s", cid)
        if issued_at > now + self.max_skew_s:
            self._reject("from_future", f"issued {issued_at - now:.0f} s in the future, the allowed clock skew "
                                        f"is {self.max_skew_s:g} s", cid)

    @staticmethod
    def _b64(env: dict[str, Any], name: str) -> bytes:
        try:
            return base64.b64decode(env[name], validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            CommandVerifier._reject("malformed", f"envelope field {name!r} is not base64: {_clip(env[name])}")

    @staticmethod
    def _reject(reason: str, message: str, command_id: str | None = None) -> NoReturn:
        raise CommandRejected(reason, message, command_id)


__all__ = ["DEFAULT_MAX_BYTES", "DEFAULT_SKEW_S", "DEFAULT_WINDOW_S", "Command", "CommandRejected", "CommandVerifier",
           "generate_keypair", "key_id", "load_private_key", "load_public_key", "public_key_text",
           "save_private_key", "sign_command"]
