"""Signed admin commands with real Ed25519 keys and a real SQLite gallery: every rejection reason,
that rejections leave the seen-commands table alone, window edges, key text and key files."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import pickle
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_app.errors import CryptoKeyError, CryptoKeyExistsError, CryptoKeyNotFoundError, EdgeAppError
from edge_app.gallery.outbox import SeenCommands
from edge_app.gallery.store import Gallery
from edge_app.mqtt.security import (
    DEFAULT_MAX_BYTES,
    Command,
    CommandRejected,
    CommandVerifier,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    public_key_text,
    save_private_key,
    sign_command,
)

NOW = 1_700_000_000.0
DEVICE = "kiosk-1"


@pytest.fixture(scope="module")
def admin() -> Ed25519PrivateKey:
    return generate_keypair()[0]


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def gallery(tmp_path: Path) -> Iterator[Gallery]:
    with Gallery(tmp_path / "g.db") as g:
        yield g


@pytest.fixture
def clock() -> list[float]:
    return [NOW]  # the test moves time by assigning clock[0]


@pytest.fixture
def verifier(admin: Ed25519PrivateKey, gallery: Gallery, clock: list[float]) -> CommandVerifier:
    v = CommandVerifier([admin.public_key()], SeenCommands(gallery), DEVICE, groups=["lobby"], clock=lambda: clock[0])
    # One command already executed, so "the table is unchanged" is not trivially about an empty table.
    v.verify(sign_command(admin, type="door.open", args={}, target=DEVICE, command_id="earlier-1", issued_at=NOW - 10))
    return v


def seen_rows(g: Gallery) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in g.db.execute("SELECT id, issued_at, seen_at FROM seen_commands ORDER BY id").fetchall()]


def sign(key: Ed25519PrivateKey, **kw: Any) -> bytes:
    fields: dict[str, Any] = {"type": "gallery.upsert", "args": {"name": "ana"}, "target": DEVICE,
                              "command_id": "cmd-0001", "issued_at": NOW}
    return sign_command(key, **(fields | kw))


def envelope(key: Ed25519PrivateKey, payload: bytes, **override: Any) -> bytes:
    """An envelope around arbitrary payload bytes, correctly signed unless overridden."""
    env: dict[str, Any] = {"v": 1, "alg": "ed25519", "kid": key_id(key.public_key()),
                           "payload": base64.b64encode(payload).decode(),
                           "sig": base64.b64encode(key.sign(payload)).decode()}
    for k, val in override.items():
        if val is ...:
            del env[k]
        else:
            env[k] = val
    return json.dumps(env).encode()


def payload_bytes(**override: Any) -> bytes:
    p: dict[str, Any] = {"id": "cmd-0001", "issued_at": NOW, "target": DEVICE, "type": "door.open", "args": {}}
    for k, val in override.items():
        if val is ...:
            del p[k]
        else:
            p[k] = val
    return json.dumps(p).encode()


def rejected(v: CommandVerifier, g: Gallery, raw: bytes, reason: str, match: str) -> CommandRejected:
    before = seen_rows(g)
    with pytest.raises(CommandRejected, match=match) as ei:
        v.verify(raw)
    assert ei.value.reason == reason, str(ei.value)
    assert seen_rows(g) == before  # a rejected command burns nothing
    return ei.value


# --- the good path ------------------------------------------------------------------------------


def test_a_good_command_round_trips(admin, verifier, gallery):
    raw = sign(admin, args={"name": "ana", "valid_until": "2030-01-01", "n": [1, 2.5, None]})
    cmd = verifier.verify(raw)
    assert cmd == Command(id="cmd-0001", issued_at=NOW, target=DEVICE, type="gallery.upsert",
                          args={"name": "ana", "valid_until": "2030-01-01", "n": [1, 2.5, None]},
                          kid=key_id(admin.public_key()), size=len(raw))
    assert "cmd-0001" in SeenCommands(gallery)
    env = json.loads(raw)
    assert set(env) == {"v", "alg", "kid", "payload", "sig"} and env["v"] == 1 and env["alg"] == "ed25519"
    assert len(base64.b64decode(env["sig"], validate=True)) == 64


def test_sign_command_defaults_to_a_uuid4_hex_id_and_the_current_time(admin, verifier, clock):
    import time

    clock[0] = time.time()
    cmd = verifier.verify(sign_command(admin, type="door.open", args={}, target="*"))
    assert len(cmd.id) == 32 and int(cmd.id, 16) >= 0
    assert abs(cmd.issued_at - clock[0]) < 5


def test_group_and_broadcast_targets_are_accepted(admin, verifier):
    assert verifier.verify(sign(admin, target="group:lobby", command_id="cmd-group")).target == "group:lobby"
    assert verifier.verify(sign(admin, target="*", command_id="cmd-star")).target == "*"


def test_exactly_at_the_window_edges_is_accepted_one_second_past_is_not(admin, verifier, gallery):
    assert verifier.verify(sign(admin, command_id="old-edge", issued_at=NOW - 300)).id == "old-edge"
    assert verifier.verify(sign(admin, command_id="new-edge", issued_at=NOW + 60)).id == "new-edge"
    rejected(verifier, gallery, sign(admin, command_id="old-past", issued_at=NOW - 301), "expired",
             "issued 301 s ago, the window is 300 s")
    rejected(verifier, gallery, sign(admin, command_id="new-past", issued_at=NOW + 61), "from_future",
             "issued 61 s in the future, the allowed clock skew is 60 s")


def test_old_ids_are_forgotten_once_past_window_and_skew(admin, verifier, gallery, clock):
    clock[0] = NOW + 400  # "earlier-1" (issued NOW - 10) is now older than 300 + 60 s
    verifier.verify(sign(admin, command_id="later-01", issued_at=clock[0]))
    assert "earlier-1" not in SeenCommands(gallery) and "later-01" in SeenCommands(gallery)


# --- one test per rejection reason --------------------------------------------------------------


def test_too_large_is_refused_before_parsing(verifier, gallery):
    e = rejected(verifier, gallery, b"\xff" * (DEFAULT_MAX_BYTES + 1), "too_large",
                 f"message is {DEFAULT_MAX_BYTES + 1} bytes, the limit is {DEFAULT_MAX_BYTES}")
    assert e.command_id is None


def test_max_bytes_is_inclusive(admin, gallery, clock):
    raw = sign(admin)
    v = CommandVerifier([admin.public_key()], SeenCommands(gallery), DEVICE, max_bytes=len(raw) + 10,
                        clock=lambda: clock[0])
    rejected(v, gallery, raw + b" " * 11, "too_large", "the limit is")
    assert v.verify(raw + b" " * 10).size == len(raw) + 10  # trailing JSON whitespace: still the same command


@pytest.mark.parametrize("case,match", [
    ("not_utf8", "envelope is not UTF-8"),
    ("not_json", "envelope is not JSON"),
    ("array", "envelope is a JSON list, not an object"),
    ("no_kid", "envelope field 'kid' missing"),
    ("no_v", "envelope field 'v' missing"),
    ("v_string", "envelope field 'v' must be an integer"),
    ("payload_int", "envelope field 'payload' must be a string"),
    ("kid_not_hex", "envelope field 'kid' must be 16 hex characters"),
    ("payload_b64", "envelope field 'payload' is not base64"),
    ("sig_unpadded", "envelope field 'sig' is not base64"),
    ("sig_63", "signature is 63 bytes, an Ed25519 signature is 64"),
    ("duplicate", "duplicate key 'sig'"),
])
def test_malformed_envelopes(admin, verifier, gallery, case, match):
    good = json.loads(sign(admin))
    raw = {
        "not_utf8": b'{"v": 1, "alg": "\xff"}',
        "not_json": b"{v: 1}",
        "array": b"[1, 2]",
        "no_kid": json.dumps({k: v for k, v in good.items() if k != "kid"}).encode(),
        "no_v": json.dumps({k: v for k, v in good.items() if k != "v"}).encode(),
        "v_string": json.dumps(good | {"v": "1"}).encode(),
        "payload_int": json.dumps(good | {"payload": 5}).encode(),
        "kid_not_hex": json.dumps(good | {"kid": "not-a-kid"}).encode(),
        "payload_b64": json.dumps(good | {"payload": "!!not base64!!"}).encode(),
        "sig_unpadded": json.dumps(good | {"sig": good["sig"].rstrip("=")}).encode(),
        "sig_63": json.dumps(good | {"sig": base64.b64encode(b"\0" * 63).decode()}).encode(),
        "duplicate": json.dumps(good).encode()[:-1] + b', "sig": "AAAA"}',
    }[case]
    assert rejected(verifier, gallery, raw, "malformed", match).command_id is None


@pytest.mark.parametrize("override,match,cid", [
    ({"type": ...}, "payload field 'type' missing", "cmd-0001"),
    ({"id": "short"}, "payload field 'id' must be 8..64 characters", None),
    ({"id": "has space!"}, "payload field 'id' must be", None),
    ({"id": 12345678}, "payload field 'id' must be", None),
    ({"issued_at": "1700000000"}, "payload field 'issued_at' must be finite unix seconds", "cmd-0001"),
    ({"issued_at": float("nan")}, "payload field 'issued_at' must be finite", "cmd-0001"),
    ({"issued_at": True}, "payload field 'issued_at' must be finite", "cmd-0001"),
    ({"args": [1]}, "payload field 'args' must be an object, got list", "cmd-0001"),
    ({"target": ""}, "payload field 'target' must be a non-empty string", "cmd-0001"),
])
def test_malformed_signed_payloads(admin, verifier, gallery, override, match, cid):
    e = rejected(verifier, gallery, envelope(admin, payload_bytes(**override)), "malformed", match)
    assert e.command_id == cid


def test_a_signed_payload_that_is_not_a_json_object_is_malformed(admin, verifier, gallery):
    rejected(verifier, gallery, envelope(admin, b'["cmd-0001"]'), "malformed", "payload is a JSON list")
    rejected(verifier, gallery, envelope(admin, b"\xfe\xff"), "malformed", "payload is not UTF-8")


@pytest.mark.parametrize("override,match", [
    ({"v": 2}, "envelope version 2 is not supported"),
    ({"alg": "rsa-pss"}, "algorithm 'rsa-pss' is not supported"),
])
def test_bad_version(admin, verifier, gallery, override, match):
    rejected(verifier, gallery, envelope(admin, payload_bytes(), **override), "bad_version", match)


def test_a_command_signed_by_a_non_admin_key_is_unknown_key(verifier, gallery):
    stranger = generate_keypair()[0]
    kid = key_id(stranger.public_key())
    rejected(verifier, gallery, sign(stranger), "unknown_key", f"kid {kid} is not an admin key of this device")


def test_a_payload_altered_after_signing_is_bad_signature(admin, verifier, gallery):
    env = json.loads(sign(admin, target="other-kiosk"))
    payload = base64.b64decode(env["payload"]).replace(b"other-kiosk", DEVICE.encode())
    env["payload"] = base64.b64encode(payload).decode()
    rejected(verifier, gallery, json.dumps(env).encode(), "bad_signature", "signature does not match the payload")


def test_one_flipped_signature_bit_is_bad_signature(admin, verifier, gallery):
    env = json.loads(sign(admin))
    sig = bytearray(base64.b64decode(env["sig"]))
    sig[17] ^= 0x04
    env["sig"] = base64.b64encode(bytes(sig)).decode()
    rejected(verifier, gallery, json.dumps(env).encode(), "bad_signature", "signature does not match")


def test_the_signature_is_checked_before_the_payload_is_read(admin, verifier, gallery):
    forged = envelope(admin, b"not json at all", sig=base64.b64encode(b"\0" * 64).decode())
    rejected(verifier, gallery, forged, "bad_signature", "signature does not match")


@pytest.mark.parametrize("target", ["kiosk-2", "group:parking", "group:", "**", "Kiosk-1"])
def test_wrong_target(admin, verifier, gallery, target):
    e = rejected(verifier, gallery, sign(admin, target=target), "wrong_target",
                 re.escape(f"target '{target}' is not this device (kiosk-1)"))
    assert e.command_id == "cmd-0001"


def test_expired(admin, verifier, gallery):
    e = rejected(verifier, gallery, sign(admin, issued_at=NOW - 412), "expired",
                 "issued 412 s ago, the window is 300 s")
    assert e.command_id == "cmd-0001"


def test_from_future(admin, verifier, gallery):
    rejected(verifier, gallery, sign(admin, issued_at=NOW + 3600), "from_future", "issued 3600 s in the future")


def test_replayed_keeps_the_first(admin, verifier, gallery, clock):
    raw = sign(admin)
    verifier.verify(raw)
    first = [r for r in seen_rows(gallery) if r[0] == "cmd-0001"]
    clock[0] += 200  # still inside the window
    e = rejected(verifier, gallery, raw, "replayed", "command cmd-0001 was already received")
    assert e.command_id == "cmd-0001" and [r for r in seen_rows(gallery) if r[0] == "cmd-0001"] == first


def test_a_rejected_command_does_not_burn_its_id(admin, verifier, gallery):
    rejected(verifier, gallery, sign(admin, target="kiosk-2"), "wrong_target", "target")
    assert verifier.verify(sign(admin)).id == "cmd-0001"  # the same id, now valid, still goes through


def test_echoed_values_are_truncated(admin, verifier, gallery):
    e = rejected(verifier, gallery, sign(admin, target="x" * 5000), "wrong_target", "target")
    assert "x" * 81 not in str(e) and len(str(e)) < 200


def test_command_rejected_is_a_value_error_and_pickles():
    e = CommandRejected("expired", "issued 412 s ago", "cmd-0001")
    assert isinstance(e, EdgeAppError) and isinstance(e, ValueError)
    assert str(e) == "expired: issued 412 s ago"
    e2 = pickle.loads(pickle.dumps(e))
    assert (e2.reason, e2.command_id, str(e2)) == ("expired", "cmd-0001", str(e))


def test_sign_command_refuses_what_the_device_would_call_malformed(admin):
    with pytest.raises(CommandRejected, match="payload field 'id' must be") as ei:
        sign_command(admin, type="door.open", args={}, target="*", command_id="bad id")
    assert ei.value.reason == "malformed"
    with pytest.raises(CommandRejected, match="not JSON serializable"):
        sign_command(admin, type="door.open", args={"x": object()}, target="*")


# --- keys ---------------------------------------------------------------------------------------


def test_key_id_is_the_first_8_bytes_of_sha256_of_the_raw_key(admin):
    pub = admin.public_key()
    raw = pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert key_id(pub) == hashlib.sha256(raw).hexdigest()[:16]


def test_public_key_text_round_trips_in_every_accepted_form(admin):
    pub = admin.public_key()
    text = public_key_text(pub)
    assert text.startswith("ed25519:")
    pem = pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    for form in (text, text.removeprefix("ed25519:"), pem, f"  {text}\n"):
        assert key_id(load_public_key(form)) == key_id(pub)


@pytest.mark.parametrize("text,match", [
    ("hello, I am a key", "public key is not 'ed25519:<base64>', base64 or PEM"),
    ("ed25519:" + base64.b64encode(b"k" * 31).decode(), "an Ed25519 public key is 32 bytes, this one is 31"),
    ("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not a readable PEM public key"),
])
def test_load_public_key_errors_say_what_is_wrong(text, match):
    with pytest.raises(CryptoKeyError, match=match):
        load_public_key(text)


def test_load_public_key_refuses_rsa_and_private_pem(rsa_key, admin):
    pem = rsa_key.public_key().public_bytes(serialization.Encoding.PEM,
                                            serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    with pytest.raises(CryptoKeyError, match="PEM public key is an RSA key, not Ed25519"):
        load_public_key(pem)
    private = admin.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()).decode()
    with pytest.raises(CryptoKeyError, match="private\\* key") as ei:
        load_public_key(private)
    assert private.splitlines()[1] not in str(ei.value)


def test_private_key_file_is_0600_round_trips_and_is_not_overwritten(tmp_path, admin):
    path = tmp_path / "admin.pem"
    old = os.umask(0)  # the mode must come from os.open, not from a friendly umask
    try:
        save_private_key(admin, path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_id(load_private_key(path).public_key()) == key_id(admin.public_key())
    before = path.read_bytes()
    with pytest.raises(CryptoKeyExistsError, match="already exists") as ei:
        save_private_key(generate_keypair()[0], path)
    assert isinstance(ei.value, FileExistsError) and path.read_bytes() == before
    path.chmod(0o644)
    other = generate_keypair()[0]
    save_private_key(other, path, overwrite=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert key_id(load_private_key(path).public_key()) == key_id(other.public_key())


def test_load_private_key_errors(tmp_path, rsa_key, caplog):
    with pytest.raises(CryptoKeyNotFoundError, match="private key file .*nope.pem does not exist") as ei:
        load_private_key(tmp_path / "nope.pem")
    assert isinstance(ei.value, FileNotFoundError)
    junk = tmp_path / "junk.pem"
    junk.write_text("definitely not a key\n")
    junk.chmod(0o600)
    with pytest.raises(CryptoKeyError, match="junk.pem is not a PEM private key file"):
        load_private_key(junk)
    rsa_path = tmp_path / "rsa.pem"
    rsa_path.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    rsa_path.chmod(0o600)
    with pytest.raises(CryptoKeyError, match="holds an RSA key, not Ed25519"):
        load_private_key(rsa_path)
    enc = tmp_path / "enc.pem"
    enc.write_bytes(generate_keypair()[0].private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw")))
    enc.chmod(0o600)
    with pytest.raises(CryptoKeyError, match="is encrypted"):
        load_private_key(enc)
    assert "readable by others" not in caplog.text


def test_a_world_readable_private_key_loads_with_a_warning(tmp_path, admin, caplog):
    path = tmp_path / "admin.pem"
    save_private_key(admin, path)
    path.chmod(0o644)
    assert key_id(load_private_key(path).public_key()) == key_id(admin.public_key())
    assert "readable by others (mode 0644)" in caplog.text


# --- the clock: synchronised, and set back (issue 10 item 9) ------------------------------------


def test_an_id_is_kept_until_out_of_the_window_by_receive_time_too(admin, verifier, gallery, clock):
    # The kiosk's clock runs 250 s ahead: a command issued at the admin's NOW arrives at kiosk time NOW+250,
    # inside the 300 s window. 120 s later (kiosk time) it is out of the window by issue time (+ skew), so
    # another command's clean-up used to forget it; then NTP sets the clock back 250 s and the captured
    # command is inside the window again.
    clock[0] = NOW + 250
    captured = sign(admin, command_id="captured-1", issued_at=NOW, type="door.unlock", args={})
    verifier.verify(captured)
    clock[0] = NOW + 370
    verifier.verify(sign(admin, command_id="later-0001", issued_at=NOW + 370))
    assert "captured-1" in SeenCommands(gallery)  # received 120 s ago: still inside the window by receive time
    clock[0] = NOW + 120  # set back by 250 s
    with pytest.raises(CommandRejected) as e:
        verifier.verify(captured)
    assert e.value.reason == "replayed"
    clock[0] = NOW + 250 + 300 + 60 + 1  # out of the window by both times: forgotten
    verifier.verify(sign(admin, command_id="later-0002", issued_at=clock[0]))
    assert "captured-1" not in SeenCommands(gallery)


def test_commands_are_refused_while_the_clock_is_not_synchronised(admin, gallery, clock):
    from edge_app.clock import ClockStatus

    status = [ClockStatus(False, "NOT synchronised (timedatectl NTPSynchronized=no)")]
    v = CommandVerifier([admin.public_key()], SeenCommands(gallery), DEVICE, clock=lambda: clock[0],
                        clock_sync=lambda: status[0])
    with pytest.raises(CommandRejected) as e:
        v.verify(sign(admin, command_id="unsynced-1"))
    assert e.value.reason == "clock_unsynced" and e.value.command_id == "unsynced-1"
    assert "NTPSynchronized=no" in str(e.value)
    assert "unsynced-1" not in SeenCommands(gallery)  # refused before its id was spent
    status[0] = ClockStatus(True, "synchronised (timedatectl)")
    assert v.verify(sign(admin, command_id="unsynced-1")).id == "unsynced-1"
    status[0] = ClockStatus(None, "cannot tell")  # no systemd (a container): the clock is taken as it is
    assert v.verify(sign(admin, command_id="unknown-01")).id == "unknown-01"


def test_check_is_stateless_and_accept_does_the_replay_check(admin, verifier, gallery):
    raw = sign(admin, command_id="two-step-1")
    before = seen_rows(gallery)
    cmd = verifier.check(raw)  # on MQTT's network thread: no SQLite
    assert cmd.id == "two-step-1" and seen_rows(gallery) == before
    verifier.accept(cmd)
    with pytest.raises(CommandRejected, match="replayed"):
        verifier.accept(verifier.check(raw))


def test_clock_sync_is_cached_and_shared_with_doctor(monkeypatch):
    import edge_app.clock
    from edge_app.cli.doctor import FAIL, check_clock
    from edge_app.clock import ClockStatus, ClockSync

    calls: list[int] = []
    t = [0.0]

    def probe() -> ClockStatus:
        calls.append(1)
        return ClockStatus(False, "no")

    sync = ClockSync(probe, cache_s=10, monotonic=lambda: t[0])
    assert [sync.status().synced for _ in range(50)] == [False] * 50 and len(calls) == 1
    t[0] = 10.0
    sync.status()
    assert len(calls) == 2
    monkeypatch.setattr(edge_app.clock, "clock_sync", probe)  # doctor asks the same function
    status, detail = check_clock()
    assert status == FAIL and detail.startswith("no: signed commands are refused")
