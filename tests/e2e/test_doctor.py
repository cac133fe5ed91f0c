"""`edge-app doctor` on a healthy and on a broken install (real models, real broker, real files)."""

from __future__ import annotations

import json
import socket

import numpy as np

from edge_app.cli import EXIT_ERROR, EXIT_OK, main
from tests.conftest import edit_manifest, write_video


def run(capsys, *argv):  # type: ignore[no-untyped-def]
    code = main(list(argv))
    out, _ = capsys.readouterr()
    return code, out


def video(path):  # type: ignore[no-untyped-def]
    return write_video(path, [np.full((240, 320, 3), 80, np.uint8)] * 3, fps=5)


def test_healthy_install(tmp_path, capsys, mqtt_broker):
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(f"""
[camera]
source = "{video(tmp_path / 'cam.avi')}"
[door]
pins = "mock"
relay_pin = 17
contact_pin = 27
[gallery]
path = "{tmp_path / 'state' / 'gallery.db'}"
[mqtt]
enabled = true
host = "127.0.0.1"
port = {mqtt_broker.port}
""")
    code, out = run(capsys, "doctor", "--config", str(cfg), "--json")
    report = json.loads(out)
    status = {c["check"]: c["status"] for c in report["checks"]}
    assert code == EXIT_OK and report["ok"] is True, report
    assert status == {"platform": "ok", "config": "ok", "models": "ok", "camera": "ok", "camera_stack": "skip",
                      "gpio": "ok", "sqlite": "ok", "mqtt": "ok", "clock": status["clock"], "disk": "ok",
                      "coral": status["coral"]}
    assert status["clock"] in ("ok", "warn")  # no timedatectl in a container: a warning, not a failure
    detail = {c["check"]: c["detail"] for c in report["checks"]}
    assert "320x240" in detail["camera"] and "GPIO27" in detail["gpio"] and "accepted" in detail["mqtt"]
    assert "eye centres from the eye-landmark model" in detail["models"], detail["models"]
    code, out = run(capsys, "doctor", "--config", str(cfg))
    assert code == EXIT_OK and out.splitlines()[0].split()[:2] == ["config", "OK"]


def test_broken_install_names_each_problem(tmp_path, models_copy, capsys):
    models = models_copy
    (models / "mask_classifier.tflite").write_bytes(b"corrupt")
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the state folder should be")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(f"""
[camera]
source = "{tmp_path / 'missing.avi'}"
[door]
pins = "mock"
[gallery]
path = "{blocker / 'gallery.db'}"
[models]
dir = "{models}"
[mqtt]
enabled = true
host = "127.0.0.1"
port = {closed_port}
""")
    code, out = run(capsys, "doctor", "--config", str(cfg), "--json")
    report = json.loads(out)
    rows = {c["check"]: c for c in report["checks"]}
    assert code == EXIT_ERROR and report["ok"] is False
    assert rows["models"]["status"] == "fail" and "mask_classifier.tflite: sha256" in rows["models"]["detail"]
    assert rows["camera"]["status"] == "fail" and "missing.avi" in rows["camera"]["detail"]
    assert rows["sqlite"]["status"] == "fail" and "not-a-dir" in rows["sqlite"]["detail"]
    assert rows["mqtt"]["status"] == "fail" and str(closed_port) in rows["mqtt"]["detail"]
    assert rows["gpio"]["status"] == "ok"


def test_bad_config_is_a_failed_check_not_a_crash(tmp_path, capsys):
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text("[door]\nrelay_pn = 17\n")
    code, out = run(capsys, "doctor", "--config", str(cfg))
    assert code == EXIT_ERROR
    assert out.splitlines()[0].split()[:2] == ["config", "FAIL"]
    assert 'relay_pn: unknown key, did you mean "relay_pin"?' in out
    code, out = run(capsys, "doctor", "--config", str(tmp_path / "nope.toml"), "--skip", "camera")
    assert code == EXIT_ERROR and "nope.toml: config file not found" in out


def test_mqtt_over_tls_with_client_certificate_and_password(tmp_path, capsys, mqtt_tls_broker, mqtt_certs):
    from tests.mqtt_broker import make_ca

    password = tmp_path / "mqtt-password"
    password.write_text("kiosk-secret\n")

    def config(ca):  # type: ignore[no-untyped-def]
        cfg = tmp_path / "kiosk.toml"
        cfg.write_text(f"""
[mqtt]
enabled = true
host = "127.0.0.1"
port = {mqtt_tls_broker.port}
tls = true
ca_file = "{ca}"
cert_file = "{mqtt_certs.client_cert}"
key_file = "{mqtt_certs.client_key}"
username = "kiosk"
password_file = "{password}"
""")
        return cfg

    code, out = run(capsys, "doctor", "--config", str(config(mqtt_certs.ca_cert)), "--json", "--skip",
                    "camera,gpio,models", "--db", str(tmp_path / "g.db"))
    rows = {c["check"]: c for c in json.loads(out)["checks"]}
    assert rows["mqtt"]["status"] == "ok" and "over TLS" in rows["mqtt"]["detail"], rows["mqtt"]
    other_ca, _ = make_ca(tmp_path / "other-ca", "another CA")
    code, out = run(capsys, "doctor", "--config", str(config(other_ca)), "--json", "--skip", "camera,gpio,models",
                    "--db", str(tmp_path / "g.db"))
    rows = {c["check"]: c for c in json.loads(out)["checks"]}
    assert code == EXIT_ERROR and rows["mqtt"]["status"] == "fail" and "certificate verify failed" in \
        rows["mqtt"]["detail"]


def test_models_check_fails_when_liveness_is_on_and_its_networks_are_missing(tmp_path, models_copy, capsys):
    models = models_copy
    edit_manifest(models, lambda m: m["models"].pop("liveness_v1se"))
    cfg = tmp_path / "kiosk.toml"
    cfg.write_text(f'[models]\ndir = "{models}"\n')
    code, out = run(capsys, "doctor", "--config", str(cfg), "--json", "--skip", "camera,gpio,mqtt,sqlite,clock,disk")
    rows = {c["check"]: c for c in json.loads(out)["checks"]}
    assert code == EXIT_ERROR and rows["models"]["status"] == "fail"
    assert "liveness needs liveness_v2, liveness_v1se" in rows["models"]["detail"]
    cfg.write_text(f'[models]\ndir = "{models}"\n[liveness]\nenabled = false\n')
    code, out = run(capsys, "doctor", "--config", str(cfg), "--json", "--skip", "camera,gpio,mqtt,sqlite,clock,disk")
    rows = {c["check"]: c for c in json.loads(out)["checks"]}
    assert code == EXIT_OK and "liveness OFF" in rows["models"]["detail"]


def test_models_check_warns_when_the_gallery_holds_only_another_embedders_templates(tmp_path, capsys, faces_dev):
    """A gallery the configured embedder cannot use opens the door for nobody: doctor says so (WARN) and how to fix
    it; with embedder = "auto" the same gallery is used through its own embedder and the check is OK."""
    db = tmp_path / "gallery.db"
    old = tmp_path / "old.toml"
    old.write_text(f'[recognition]\nembedder = "sface"\n[gallery]\npath = "{db}"\n')
    assert main(["enroll", "--config", str(old), "--name", "Obama", str(faces_dev / "obama.jpg")]) == EXIT_OK
    skip = "camera,gpio,mqtt,sqlite,clock,disk,coral"
    fused = tmp_path / "fused.toml"
    fused.write_text(f'[recognition]\nembedder = "sface+edgeface"\n[gallery]\npath = "{db}"\n')
    capsys.readouterr()
    code, out = run(capsys, "doctor", "--config", str(fused), "--json", "--skip", skip)
    models = next(c for c in json.loads(out)["checks"] if c["check"] == "models")
    assert code == EXIT_OK and models["status"] == "warn", models
    assert "4 template(s) are all another embedder's: nobody is recognised with sface+edgeface" in models["detail"]
    auto = tmp_path / "auto.toml"
    auto.write_text(f'[gallery]\npath = "{db}"\n')
    code, out = run(capsys, "doctor", "--config", str(auto), "--json", "--skip", skip)
    models = next(c for c in json.loads(out)["checks"] if c["check"] == "models")
    assert models["status"] == "ok" and "sface embedder" in models["detail"], models
    assert "gallery: 4 template(s) of this embedder" in models["detail"]
