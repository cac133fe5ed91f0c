"""provisioning/setup.sh, run for real into a staging root (--root): the tree, its owners and modes, the config it
writes (read back by edge_app.config), the unit (checked by systemd-analyze); a second run changes nothing and
leaves the gallery alone; --dry-run writes nothing; every bad flag fails with exit 2 before anything is done.

The slow part is pip installing the package into the staged venv (--pip-no-deps, from a copy of the source so the
build does not write into the work tree): it happens once, in a module fixture; tests that run setup.sh again on
that tree work on a copy of it.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import pytest

from edge_app.config import Config, load_config
from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
SETUP = ROOT / "provisioning" / "setup.sh"
EXAMPLE = ROOT / "provisioning" / "config.example.toml"
SHIPPED_UNIT = ROOT / "systemd" / "edge-app.service"
SHIPPED_TMPFILES = ROOT / "systemd" / "edge-app.tmpfiles.conf"
TARGET_EXEC = "/opt/edge-app/venv/bin/edge-app run --config /etc/edge-app/config.toml"
SUMMARY = re.compile(r"^setup: (\d+) changed, (\d+) unchanged", re.M)


def tool(name: str) -> str:
    return require_tool(name, "systemd")


def run_setup(*args: str | Path, timeout: float = 60,
              stdin: int = subprocess.DEVNULL) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SETUP), *map(str, args)], stdin=stdin, capture_output=True, text=True,
                          timeout=timeout, check=False)


def summary(res: subprocess.CompletedProcess[str]) -> tuple[int, int]:
    m = SUMMARY.findall(res.stdout)
    assert m, res.stdout + res.stderr
    return int(m[-1][0]), int(m[-1][1])


def snapshot(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under root (bytecode caches aside): kind, mode, owner; for files also mtime and content hash."""
    out: dict[str, tuple[object, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != "__pycache__"]
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = p.lstat()
            rel = str(p.relative_to(root))
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_uid, st.st_gid)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", st.st_mode, st.st_uid, st.st_gid)
            else:
                out[rel] = ("file", st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                            hashlib.sha256(p.read_bytes()).hexdigest())
    return out


def copy_tree(src: Path, dst: Path) -> Path:
    """A copy with modes, mtimes and owners (copytree keeps the first two; owners are set here)."""
    shutil.copytree(src, dst, symlinks=True)
    for dirpath, dirnames, filenames in os.walk(src):
        for name in ["", *dirnames, *filenames]:
            s = Path(dirpath, name)
            st = s.lstat()
            os.chown(dst / s.relative_to(src), st.st_uid, st.st_gid, follow_symlinks=False)
    return dst


def mode_owner(p: Path) -> tuple[int, int, int]:
    st = p.stat()
    return stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid


def entry(file: Path, name: str) -> list[str]:
    for line in file.read_text().splitlines():
        parts = line.split(":")
        if parts[0] == name:
            return parts
    raise AssertionError(f"{name} not in {file}:\n{file.read_text()}")


PEM_CERT = "-----BEGIN CERTIFICATE-----\nMIIBfakecertificatebytesforthestagingtest\n-----END CERTIFICATE-----\n"
PEM_KEY = "-----BEGIN PRIVATE KEY-----\nMIGHfakekeybytesforthestagingtest\n-----END PRIVATE KEY-----\n"


@dataclass(frozen=True)
class Inputs:
    dir: Path
    source: Path  # a copy of the package source: what pip installs
    ca: Path
    cert: Path
    key: Path
    password: Path
    admin_key: str

    def flags(self, root: Path) -> list[str]:
        return ["--root", str(root), "--device-id", "kiosk-7", "--broker", "mqtts://broker.example:8884",
                "--ca", str(self.ca), "--cert", str(self.cert), "--key", str(self.key),
                "--mqtt-user", "kiosk", "--mqtt-password-file", str(self.password), "--admin-key", self.admin_key,
                "--relay-pin", "5", "--contact-pin", "6", "--exit-pin", "13", "--lock-type", "fail_safe",
                "--timezone", "Europe/Berlin", "--groups", "lobby,floor-2", "--camera", "picamera2",
                "--package", str(self.source), "--pip-no-deps", "--python", sys.executable]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Inputs:
    from edge_app.mqtt.security import generate_keypair, public_key_text

    d = tmp_path_factory.mktemp("setup-inputs")
    src = d / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    for name in ("edge_app", "models_tflite"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    (d / "ca.pem").write_text(PEM_CERT)
    (d / "client.pem").write_text(PEM_CERT.replace("fake", "client"))
    (d / "client.key").write_text(PEM_KEY)
    (d / "password").write_text("kiosk-secret\n")
    return Inputs(d, src, d / "ca.pem", d / "client.pem", d / "client.key", d / "password",
                  public_key_text(generate_keypair()[1]))


@dataclass(frozen=True)
class Staged:
    root: Path
    flags: list[str]
    result: subprocess.CompletedProcess[str]
    uid: int  # the staging edge-app user and group, as written in root/etc/passwd and root/etc/group
    gid: int


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory, inputs: Inputs) -> Staged:
    root = tmp_path_factory.mktemp("staging-root")
    flags = inputs.flags(root)
    res = run_setup(*flags, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    user = entry(root / "etc" / "passwd", "edge-app")
    return Staged(root, flags, res, int(user[2]), int(user[3]))


# --- 1. the staged tree ---------------------------------------------------------------------------------


def test_first_run_builds_the_tree(staged: Staged, inputs: Inputs):
    r, uid, gid = staged.root, staged.uid, staged.gid
    changed, unchanged = summary(staged.result)
    assert changed > 0 and unchanged == 0, staged.result.stdout

    exe = r / "opt/edge-app/venv/bin/edge-app"
    assert exe.is_file() and os.access(exe, os.X_OK)
    assert 100 <= uid < 1000 and entry(r / "etc/group", "edge-app")[2] == str(gid)
    for group in ("gpio", "video"):
        assert "edge-app" in entry(r / "etc/group", group)[3].split(","), group

    assert mode_owner(r / "etc/edge-app") == (0o750, 0, gid)
    assert mode_owner(r / "etc/edge-app/config.toml") == (0o640, 0, gid)
    assert mode_owner(r / "etc/edge-app/tls") == (0o750, 0, gid)
    for name, src in (("ca.pem", inputs.ca), ("client.pem", inputs.cert), ("client.key", inputs.key)):
        p = r / "etc/edge-app/tls" / name
        assert mode_owner(p) == (0o640, 0, gid), name
        assert p.read_bytes() == src.read_bytes(), name
    assert mode_owner(r / "etc/edge-app/mqtt-password") == (0o640, 0, gid)
    assert mode_owner(r / "var/lib/edge-app") == (0o750, uid, gid)
    assert not (r / "var/lib/edge-app/gallery.db").exists()  # the daemon creates it, setup.sh never does

    assert mode_owner(r / "etc/systemd/system/edge-app.service") == (0o644, 0, 0)
    assert mode_owner(r / "usr/lib/tmpfiles.d/edge-app.conf") == (0o644, 0, 0)
    assert (r / "usr/lib/tmpfiles.d/edge-app.conf").read_bytes() == SHIPPED_TMPFILES.read_bytes()


def test_config_has_the_flag_values(staged: Staged, inputs: Inputs):
    cfg = load_config(staged.root / "etc/edge-app/config.toml")
    assert cfg.device.id == "kiosk-7" and cfg.device.timezone == "Europe/Berlin"
    assert cfg.camera.source == "picamera2"
    assert (cfg.door.relay_pin, cfg.door.contact_pin, cfg.door.exit_button_pin) == (5, 6, 13)
    assert cfg.door.lock_type == "fail_safe"
    m = cfg.mqtt
    assert (m.enabled, m.host, m.port, m.tls) == (True, "broker.example", 8884, True)
    # Paths on the target system, not under the staging root.
    assert m.ca_file == Path("/etc/edge-app/tls/ca.pem")
    assert (m.cert_file, m.key_file) == (Path("/etc/edge-app/tls/client.pem"), Path("/etc/edge-app/tls/client.key"))
    assert (m.username, m.password_file) == ("kiosk", Path("/etc/edge-app/mqtt-password"))
    assert m.admin_key_list == (inputs.admin_key,)
    assert m.group_list == ("lobby", "floor-2")
    assert cfg.gallery.path == Path("/var/lib/edge-app/gallery.db")


def test_unit_passes_systemd_analyze_verify(staged: Staged, tmp_path: Path):
    unit = (staged.root / "etc/systemd/system/edge-app.service").read_text()
    assert f"ExecStart={TARGET_EXEC}" in unit.splitlines()
    stop_post = "ExecStopPost=/opt/edge-app/venv/bin/edge-app door-off --config /etc/edge-app/config.toml"
    assert stop_post in unit.splitlines()
    # Apart from ExecStart and ExecStopPost (which setup.sh sets), the unit is the one shipped in systemd/.
    set_by_setup = ("ExecStart=", "ExecStopPost=")
    strip = [line for line in SHIPPED_UNIT.read_text().splitlines() if not line.startswith(set_by_setup)]
    assert [line for line in unit.splitlines() if not line.startswith(set_by_setup)] == strip
    # verify checks that ExecStart's binary exists; /opt/edge-app does not on this host, so check a copy whose
    # ExecStart names the staged binary instead (the unit itself must keep the target path).
    staged_exe = staged.root / "opt/edge-app/venv/bin/edge-app"
    check = tmp_path / "edge-app.service"
    check.write_text(unit.replace("/opt/edge-app/venv/bin/edge-app", str(staged_exe)))
    res = subprocess.run([tool("systemd-analyze"), "verify", str(check)], capture_output=True, text=True,
                         timeout=60, check=False)
    problems = [line for line in (res.stdout + res.stderr).splitlines() if line.strip()]
    assert res.returncode == 0 and problems == [], problems


# --- 2. idempotence ---------------------------------------------------------------------------------------


def test_second_run_changes_nothing_and_keeps_the_gallery(staged: Staged, tmp_path: Path):
    root = copy_tree(staged.root, tmp_path / "root")
    gallery = root / "var/lib/edge-app/gallery.db"
    gallery.write_bytes(b"SQLite format 3\x00" + os.urandom(4096))
    os.chown(gallery, staged.uid, staged.gid)
    gallery.chmod(0o640)
    gallery_bytes = gallery.read_bytes()
    before = snapshot(root)

    flags = [str(root) if f == str(staged.root) else f for f in staged.flags]
    res = run_setup(*flags, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert summary(res) == (0, summary(staged.result)[0]), res.stdout
    assert "changed:" not in res.stdout.replace("unchanged:", "")
    assert not [line for line in res.stdout.splitlines() if line.startswith("+ ")], res.stdout
    assert snapshot(root) == before
    assert gallery.read_bytes() == gallery_bytes


def test_a_link_planted_in_the_state_folder_gives_the_service_user_nothing(staged: Staged, tmp_path: Path):
    """The service user owns /var/lib/edge-app and can put a link there; setup.sh runs as root and must not
    set owners or modes through it (before, a snapshots -> /etc/systemd/system link handed that to edge-app)."""
    root = copy_tree(staged.root, tmp_path / "root")
    units = root / "etc/systemd/system"
    before = mode_owner(units)
    (root / "var/lib/edge-app/snapshots").symlink_to(units)
    flags = [str(root) if f == str(staged.root) else f for f in staged.flags]
    res = run_setup(*flags, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert mode_owner(units) == before
    # And a link where setup.sh does set attributes is refused, naming it.
    state = root / "var/lib/edge-app"
    shutil.rmtree(state)
    state.symlink_to(units)
    res = run_setup(*flags, timeout=120)
    assert res.returncode != 0 and "/var/lib/edge-app is a symbolic link" in res.stderr, res.stdout + res.stderr
    assert mode_owner(units) == before


def test_changed_flag_rewrites_only_the_config(staged: Staged, tmp_path: Path):
    root = copy_tree(staged.root, tmp_path / "root")
    old = (root / "etc/edge-app/config.toml").read_bytes()
    before = snapshot(root)
    flags = [str(root) if f == str(staged.root) else f for f in staged.flags]
    flags[flags.index("--lock-type") + 1] = "fail_secure"
    res = run_setup(*flags, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert summary(res)[0] == 1, res.stdout
    assert "changed: /etc/edge-app/config.toml: replaced" in res.stdout
    assert load_config(root / "etc/edge-app/config.toml").door.lock_type == "fail_secure"
    backup = root / "etc/edge-app/config.toml.bak"
    assert backup.read_bytes() == old and mode_owner(backup) == (0o640, 0, staged.gid)
    after = snapshot(root)
    assert {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)} == {
        "etc/edge-app/config.toml", "etc/edge-app/config.toml.bak"}


# --- 3. dry run -----------------------------------------------------------------------------------------


def test_dry_run_on_a_fresh_root_writes_nothing(inputs: Inputs, tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    res = run_setup(*inputs.flags(root), "--dry-run")
    assert res.returncode == 0, res.stdout + res.stderr
    planned = [line for line in res.stdout.splitlines() if line.startswith("+ ")]
    assert any("-m venv --system-site-packages" in line for line in planned), res.stdout
    assert any("pip install" in line and "--no-deps" in line for line in planned), res.stdout
    assert "would change: /etc/edge-app/config.toml: written" in res.stdout
    assert "dry run: nothing was done" in res.stdout
    assert list(root.iterdir()) == []


def test_dry_run_on_a_provisioned_root_writes_nothing(staged: Staged):
    before = snapshot(staged.root)
    flags = [*staged.flags, "--dry-run"]
    flags[flags.index("--relay-pin") + 1] = "12"
    res = run_setup(*flags)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "would change: /etc/edge-app/config.toml: replaced" in res.stdout
    assert summary(res)[0] == 1, res.stdout
    assert snapshot(staged.root) == before


# --- 4. bad flags ---------------------------------------------------------------------------------------

BAD_FLAGS = [  # (flags, add a good --device-id?, expected in stderr)
    (["--frobnicate"], True, "--frobnicate: unknown flag"),
    (["--relay-pin", "99"], True, "--relay-pin: expected 0..27, got 99"),
    (["--relay-pin", "5", "--contact-pin", "5"], True, "--contact-pin: 5 is already --relay-pin"),
    (["--exit-pin", "17"], True, "--exit-pin: 17 is already the relay pin"),
    (["--lock-type", "magnet"], True, "--lock-type: expected fail_secure or fail_safe, got 'magnet'"),
    (["--broker", "http://x"], True, "--broker: expected mqtt://host[:port] or mqtts://host[:port], got 'http://x'"),
    (["--broker", "mqtt://x:70000"], True, "--broker: port expected 1..65535, got 70000"),
    (["--ca", "/nonexistent"], True, "--ca: no such file: /nonexistent"),
    (["--broker", "mqtts://x", "--cert", "{cert}"], True, "--cert: a client certificate needs its --key"),
    (["--broker", "mqtt://x", "--ca", "{cert}"], True, "--ca: TLS files need an mqtts:// broker"),
    (["--mqtt-user", "kiosk"], True, "--mqtt-user: needs --broker"),
    (["--admin-key", "garbage"], True, "--admin-key: expected ed25519:<base64 of 32 bytes>"),
    (["--admin-key", "ed25519:" + "A" * 42 + "=="], True, "--admin-key: expected ed25519:<base64 of 32 bytes>"),
    (["--device-id", "bad id!"], False, "--device-id: expected 1-64 of A-Z a-z 0-9 _ -, got 'bad id!'"),
    (["--timezone", "Mars/Base"], True, "--timezone: unknown time zone 'Mars/Base'"),
    (["--groups", "a/b"], True, "--groups: expected comma-separated names"),
    (["--python", "/nonexistent/python3"], True, "--python: not found or not executable"),
    (["--relay-pin", "4", "--relay-pin", "5"], True, "--relay-pin: given twice"),
    (["--device-id"], False, "--device-id: missing value"),
    ([], False, "--device-id: required"),  # stdin is not a terminal: nobody to ask
]


@pytest.mark.parametrize(("flags", "with_id", "message"), BAD_FLAGS, ids=[m.split(":")[0] + ":" + m.split(":")[1][:20]
                                                                          for _, _, m in BAD_FLAGS])
def test_bad_flag_fails_cleanly(flags: list[str], with_id: bool, message: str, tmp_path: Path):
    cert = tmp_path / "client.pem"
    cert.write_text(PEM_CERT)
    root = tmp_path / "root"
    root.mkdir()
    args = ["--root", str(root), "--pip-no-deps"]
    args += [] if "--python" in flags else ["--python", sys.executable]
    args += ["--device-id", "kiosk-1"] if with_id else []
    res = run_setup(*args, *(str(cert) if f == "{cert}" else f for f in flags))
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.startswith("setup.sh: error: ") and message in res.stderr, res.stderr
    assert res.stdout == ""
    assert list(root.iterdir()) == []


def test_help_lists_every_flag():
    res = run_setup("--help")
    assert res.returncode == 0, res.stderr
    for flag in ("--device-id", "--broker", "--ca", "--cert", "--key", "--mqtt-user", "--mqtt-password-file",
                 "--admin-key", "--relay-pin", "--contact-pin", "--exit-pin", "--lock-type", "--camera", "--timezone",
                 "--groups", "--package", "--pip-no-deps", "--python", "--root", "--dry-run", "--no-start"):
        assert flag in res.stdout, flag


def test_prompts_for_the_device_id_on_a_terminal(inputs: Inputs, tmp_path: Path):
    root = tmp_path / "root"
    root.mkdir()
    flags = inputs.flags(root)
    i = flags.index("--device-id")
    del flags[i:i + 2]
    controller, terminal = os.openpty()
    try:
        os.write(controller, b"kiosk-from-tty\n")
        res = run_setup(*flags, "--dry-run", stdin=terminal)
    finally:
        os.close(terminal)
        os.close(controller)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Device id" in res.stderr and "device kiosk-from-tty" in res.stdout
    assert list(root.iterdir()) == []


# --- 5. the example config --------------------------------------------------------------------------------


def _sections(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    current = ""
    for line in text.splitlines():
        m = re.match(r"^\[(\w+)\]", line)
        if m:
            current = m.group(1)
            out[current] = []
        elif current:
            out[current].append(line)
    return out


def test_example_config_loads_and_shows_every_key(tmp_path: Path):
    load_config(EXAMPLE)
    sections = _sections(EXAMPLE.read_text())
    for sec in fields(Config):
        if not (isinstance(sec.default_factory, type) and is_dataclass(sec.default_factory)):
            continue
        assert sec.name in sections, f"[{sec.name}] missing"
        for key in fields(sec.default_factory):
            pattern = re.compile(rf"^(# )?{key.name} = ")
            assert any(pattern.match(line) for line in sections[sec.name]), f"[{sec.name}] {key.name} missing"
    # The commented lines are valid settings too.
    uncommented = tmp_path / "all.toml"
    uncommented.write_text(re.sub(r"(?m)^# (\w+ = )", r"\1", EXAMPLE.read_text()))
    load_config(uncommented)
