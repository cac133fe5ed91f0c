"""`edge-admin` local commands: keys, enrolment files, and clear errors before any network."""

from __future__ import annotations

import base64
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
    assert doc["name"] == "Obama" and t["model_sha"] == model_set.embedder_sha
    assert t["dim"] == model_set.embedder_dim == 128 + 512 + 256  # SFace, EdgeFace-XS, face-reidentification-0095
    assert (len(t["plain"]), len(t["masked"])) == (1, 3)
    # Masked templates are SFace's part alone (zeros in the others', left out on the wire); plain ones whole.
    assert [len(base64.b64decode(e)) for e in t["plain"] + t["masked"]] == [896 * 4] + [128 * 4] * 3
    assert out.stat().st_mode & 0o777 == 0o600  # templates are biometric data, whatever the umask


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


def test_connection_options_go_before_or_after_the_command(tmp_path):
    from edge_app.admin import build_parser

    ap = build_parser()
    common = ["--broker", "mqtt.example:1884", "--key", "admin.key", "--timeout", "3", "--json"]
    before = vars(ap.parse_args([*common, "ping", "--device", "D"]))
    after = vars(ap.parse_args(["ping", *common, "--device", "D"]))
    before.pop("func"), after.pop("func")
    assert before == after
    assert (before["broker"], str(before["key"]), before["timeout"], before["json"], before["device"]) == (
        "mqtt.example:1884", "admin.key", 3.0, True, "D")
    # An option given before is not overwritten by the command's own (absent) copy; one given after wins.
    mixed = ap.parse_args(["--device", "D", "--timeout", "3", "ping", "--timeout", "5"])
    assert (mixed.device, mixed.timeout, mixed.broker, mixed.prefix) == ("D", 5.0, "localhost", "edge-app")


def test_one_target_even_across_both_sides_of_the_command(tmp_path, capsys):
    key = tmp_path / "admin.key"
    run(capsys, "keygen", "--out", str(key))
    code, _, err = run(capsys, "--device", "D", "ping", "--group", "lobby", "--key", str(key))
    assert code == EXIT_ERROR and "give one of --device, --group, --all, not --device and --group" in err


def test_no_target_or_an_empty_one_is_an_error_never_the_whole_fleet(tmp_path, capsys):
    """`edge-admin unlock` with a forgotten target (or an unset "$DEV") must not open every door."""
    key = tmp_path / "admin.key"
    run(capsys, "keygen", "--out", str(key))
    for argv, message in ((["unlock"], "no target: give --device ID, --group NAME, or --all"),
                          (["unlock", "--device", ""], "--device is empty"),
                          (["remove", "Ana", "--group", " "], "--group is empty")):
        code, _, err = run(capsys, "--broker", "127.0.0.1:9", "--key", str(key), *argv)
        assert code == EXIT_ERROR and message in err, (argv, err)
        assert "connect" not in err.lower()  # refused before the network


def _export(tmp_path, persons: object, **extra: object):  # type: ignore[no-untyped-def]
    path = tmp_path / f"export{len(list(tmp_path.glob('export*.json')))}.json"
    path.write_text(json.dumps({"format": "edge-app-gallery", "gallery_version": 7, "persons": persons, **extra}))
    return path


def test_replace_refuses_what_is_not_a_usable_export_before_the_network(tmp_path, capsys):
    key = tmp_path / "admin.key"
    run(capsys, "keygen", "--out", str(key))
    enrol_file = tmp_path / "ana.json"
    enrol_file.write_text(json.dumps({"name": "Ana", "templates": {}}))
    t = {"model_sha": "aa" * 32, "dim": 128, "embedding": "AAAA", "masked": False}
    cases = [
        (enrol_file, "not a gallery export (format 'edge-app-gallery'"),
        (_export(tmp_path, [{"name": "Ana", "templates": [t, {**t, "model_sha": "bb" * 32}]}]),
         "templates of 2 embedders (aaaaaaaaaaaa, bbbbbbbbbbbb)"),
        (_export(tmp_path, [{"name": "Ana", "templates": [{"dim": 128}]}]),
         "persons[0] (Ana) templates[0]: needs model_sha, dim and embedding"),
        (_export(tmp_path, [{"templates": []}]), "persons[0]: not a person object with a name"),
        (_export(tmp_path, [], gallery_version="x"), "no integer gallery_version; give --gallery-version N"),
    ]
    for path, message in cases:
        code, _, err = run(capsys, "replace", str(path), "--device", "k1", "--key", str(key), "--broker",
                           "127.0.0.1:1")
        assert code == EXIT_ERROR and message in err, (message, err)
