"""`edge-admin` local commands: keys, enrolment files, and clear errors before any network."""

from __future__ import annotations

import json
import socket
import stat

from edge_app.admin import EXIT_ERROR, EXIT_OK, main
from edge_app.mqtt.security import load_private_key, load_public_key


def run(capsys, *argv):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_keygen_writes_a_private_key_0600_and_prints_the_public_line(tmp_path, capsys):
    key = tmp_path / "admin.key"
    code, out, err = run(capsys, "keygen", "--out", str(key))
    assert code == EXIT_OK
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    line = out.strip()
    assert line.startswith("ed25519:") and "admin_keys" in err
    pub = load_private_key(key).public_key()
    assert load_public_key(line).public_bytes_raw() == pub.public_bytes_raw()
    code, _, err = run(capsys, "keygen", "--out", str(key))
    assert code == EXIT_ERROR and "admin.key" in err  # never overwrites silently


def test_enrol_writes_plain_and_masked_templates_of_the_kiosk_models(tmp_path, capsys, faces_dev, model_set):
    out = tmp_path / "obama.json"
    code, _, err = run(capsys, "enrol", "--name", "Obama", str(faces_dev / "obama.jpg"),
                       str(faces_dev / "dlib_2008_002506.jpg"), "--out", str(out))
    assert code == 3  # done, one photo skipped
    assert "dlib_2008_002506.jpg: 3 faces found" in err
    doc = json.loads(out.read_text())
    t = doc["templates"]
    assert doc["name"] == "Obama" and t["model_sha"] == model_set.embedder_sha and t["dim"] == 128
    assert (len(t["plain"]), len(t["masked"])) == (1, 3)


def test_remote_commands_fail_clearly_before_the_network(tmp_path, capsys):
    code, _, err = run(capsys, "ping", "--device", "k1")
    assert code == EXIT_ERROR and "--key ADMIN.key is needed" in err
    key = tmp_path / "admin.key"
    run(capsys, "keygen", "--out", str(key))
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(capsys, "ping", "--device", "k1", "--key", str(key), "--broker", f"127.0.0.1:{port}",
                       "--timeout", "2")
    assert code == EXIT_ERROR and f"cannot reach the broker 127.0.0.1:{port}" in err
    code, _, err = run(capsys, "push", str(tmp_path / "missing.json"), "--device", "k1", "--key", str(key))
    assert code == EXIT_ERROR and "no such file" in err
