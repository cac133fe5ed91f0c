"""A real mosquitto broker for tests, on a free loopback port, plus test certificates.

    broker = Broker(tmp_path).start()     # plain, anonymous
    broker = Broker(tmp_path, tls=make_certs(tmp_path / "pki"), require_certificate=True,
                    users={"kiosk": "secret"}).start()
    broker.stop(); broker.start()         # same port, same config (restart() does both)

Needs Debian's mosquitto package (/usr/sbin/mosquitto, mosquitto_passwd); missing, the test fails
(it is never skipped: an MQTT test that does not run proves nothing).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.conftest import require_tool

MOSQUITTO = Path("/usr/sbin/mosquitto")
HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


# --- certificates -------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> Path:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)
    return path


def _write_cert(cert: x509.Certificate, path: Path) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False, sans: list[x509.GeneralName] | None = None,
          usage: x509.ObjectIdentifier | None = None) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer else name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
         .add_extension(ski, critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False))
    if ca:
        b = b.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                          content_commitment=False, key_encipherment=False, data_encipherment=False,
                                          key_agreement=False, encipher_only=False, decipher_only=False),
                            critical=True)
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage is not None:
        b = b.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_ca(directory: Path, name: str = "edge-app test CA") -> tuple[Path, Path]:
    """A self-signed CA: (cert path, key path)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = _cert(name, key, None, key, ca=True)
    stem = name.replace(" ", "-")
    return _write_cert(cert, directory / f"{stem}.crt"), _write_key(key, directory / f"{stem}.key")


def make_certs(directory: Path, client_name: str = "kiosk") -> TlsFiles:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate, all signed by it."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("edge-app test CA", ca_key, None, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _cert("localhost", server_key, ca, ca_key, usage=ExtendedKeyUsageOID.SERVER_AUTH,
                   sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))])
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _cert(client_name, client_key, ca, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return TlsFiles(ca_cert=_write_cert(ca, directory / "ca.crt"), ca_key=_write_key(ca_key, directory / "ca.key"),
                    server_cert=_write_cert(server, directory / "server.crt"),
                    server_key=_write_key(server_key, directory / "server.key"),
                    client_cert=_write_cert(client, directory / "client.crt"),
                    client_key=_write_key(client_key, directory / "client.key"))


# --- the broker ---------------------------------------------------------------------------------


def _tool(name: str) -> str:
    return require_tool(name, "mosquitto")


class Broker:
    """mosquitto on 127.0.0.1:<free port>, configured in `directory`. `persistence` keeps retained
    messages and persistent sessions (with their queued messages) across stop()/start()."""

    def __init__(self, directory: Path, *, tls: TlsFiles | None = None, require_certificate: bool = False,
                 users: Mapping[str, str] | None = None, allow_anonymous: bool | None = None,
                 persistence: bool = False, port: int | None = None) -> None:
        if not MOSQUITTO.is_file():
            pytest.fail(f"{MOSQUITTO} not found: install Debian's mosquitto package", pytrace=False)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.tls = tls
        self.users = dict(users or {})  # so a test can log in as one of them
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = self.directory / "mosquitto.log"
        lines = [
            "per_listener_settings false",
            # As root mosquitto would switch to the "mosquitto" user, who cannot read our tmp files.
            f"user {pwd.getpwuid(os.geteuid()).pw_name}",
            f"listener {self.port} {HOST}",
            f"allow_anonymous {str(allow_anonymous if allow_anonymous is not None else not users).lower()}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
        ]
        if persistence:
            store = self.directory / "store"
            store.mkdir(exist_ok=True)
            lines += ["persistence true", f"persistence_location {store}/"]
        if tls is not None:
            lines += [f"cafile {tls.ca_cert}", f"certfile {tls.server_cert}", f"keyfile {tls.server_key}",
                      f"require_certificate {str(require_certificate).lower()}"]
        if users:
            pw = self.directory / "passwd"
            tool = _tool("mosquitto_passwd")
            for i, (user, password) in enumerate(users.items()):
                subprocess.run([tool, *(["-c"] if i == 0 else []), "-b", str(pw), user, password],
                               check=True, capture_output=True, timeout=10)
            pw.chmod(0o600)
            lines.append(f"password_file {pw}")
        self.conf = self.directory / "mosquitto.conf"
        self.conf.write_text("\n".join(lines) + "\n")

    def start(self, timeout: float = 10.0) -> Broker:
        if self.proc is not None and self.proc.poll() is None:
            return self
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([str(MOSQUITTO), "-c", str(self.conf)], stdout=log, stderr=log,
                                     stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if _port_open(self.port):
                return self
            time.sleep(0.02)
        self.stop()
        pytest.fail(f"mosquitto did not accept connections on {HOST}:{self.port} within {timeout} s; "
                    f"its output:\n{self.output()}", pytrace=False)

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a clean shutdown: persistence is written), then wait; SIGKILL if it hangs."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def restart(self) -> Broker:
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """What mosquitto logged so far (all runs)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def __enter__(self) -> Broker:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
