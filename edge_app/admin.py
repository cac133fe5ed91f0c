"""`edge-admin`: the administrator's side. Keys, enrolment from photos, signed commands to a kiosk,
a group of kiosks or the whole fleet, and their results.

    edge-admin keygen --out admin.key
    edge-admin enrol --name "Ana Lima" photo1.jpg photo2.jpg --out ana.json
    edge-admin --broker mqtt.example.org --key admin.key push ana.json --device front-door
    (the connection options go before or after the command)
    edge-admin --broker ... --key admin.key push-photos --name Ana photo.jpg --group lobby
    edge-admin --broker ... --key admin.key remove "Ana Lima" --device front-door
    edge-admin --broker ... --key admin.key replace gallery.json --device front-door   (edge-app gallery export)
    edge-admin --broker ... --key admin.key capture --name "Ana Lima" --device front-door   (she stands at it)
    edge-admin --broker ... --key admin.key list|ping --device front-door
    edge-admin --broker ... --key admin.key unlock --device front-door [--seconds 5]

Exit codes: 0 every target answered ok; 1 an error (bad input, broker unreachable, a device refused);
2 usage; 4 no answer from a target before --timeout.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_app import __version__
from edge_app.config import DEFAULT_EMBEDDER, EMBEDDER_NAMES
from edge_app.errors import EdgeAppError
from edge_app.fsutil import write_private

log = logging.getLogger(__name__)

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_TIMEOUT = 0, 1, 2, 4


def say(text: str) -> None:
    print(text, file=sys.stderr)


# --- local work: keys and templates -------------------------------------------------------------


def cmd_keygen(args: argparse.Namespace) -> int:
    from edge_app.mqtt.security import generate_keypair, key_id, public_key_text, save_private_key

    priv, pub = generate_keypair()
    save_private_key(priv, args.out, overwrite=args.force)
    print(public_key_text(pub))
    say(f"private key written to {args.out} (mode 0600, key id {key_id(pub)}); put the line above in each "
        "kiosk's [mqtt] admin_keys")
    return EXIT_OK


def b64(v: np.ndarray, trim: bool = False) -> str:
    """Base64 of a float32 vector; ``trim`` leaves out its trailing zeros (kiosks put them back for masked
    templates: a fused embedder's masked template is zero past its first part, 80 % of the bytes)."""
    a = np.asarray(v, "<f4")
    if trim:
        nonzero = np.flatnonzero(a)
        a = a[: int(nonzero[-1]) + 1 if nonzero.size else 1]
    return base64.b64encode(a.tobytes()).decode()


def _trimmed(text: Any, where: str) -> str:
    try:
        raw = base64.b64decode(text if isinstance(text, str) else b"!", validate=True)
    except ValueError:  # binascii.Error is one
        raise EdgeAppError(f"{where}: 'embedding' is not base64 text") from None
    if not raw or len(raw) % 4:
        raise EdgeAppError(f"{where}: 'embedding' has {len(raw)} bytes, not a float32 vector")
    return b64(np.frombuffer(raw, "<f4"), trim=True)


def cmd_enrol(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from edge_app.enrol import PhotoStatus, embed_photo, expand_photos
    from edge_app.models import ModelSet

    photos = expand_photos(args.photos)
    if not photos:
        say(f"edge-admin: error: no image files in {', '.join(map(str, args.photos))}")
        return EXIT_ERROR
    ms = ModelSet(args.models, embedder=args.embedder)
    pipe = ms.pipeline()
    plain: list[np.ndarray] = []
    masked: list[np.ndarray] = []
    skipped = 0
    for p in tqdm(photos, desc=f"enrol {args.name}", unit="photo", disable=not sys.stderr.isatty(), file=sys.stderr):
        r = embed_photo(pipe, p, args.masked_templates)
        if r.status is not PhotoStatus.OK or r.embedding is None:
            say(f"skipped {p}: {r.detail}")
            skipped += 1
            continue
        (masked if r.face is not None and r.face.masked else plain).append(r.embedding)
        masked.extend(r.masked_embeddings)
    if not plain and not masked:
        say(f"edge-admin: error: no usable photo of {args.name!r}; nothing written")
        return EXIT_ERROR
    doc = {"name": args.name, "templates": {"model_sha": ms.embedder_sha, "dim": pipe.embedder.dim,
                                            "plain": [b64(e) for e in plain],
                                            "masked": [b64(e, trim=not args.full_templates) for e in masked]}}
    write_private(args.out, (json.dumps(doc) + "\n").encode())  # templates are biometric data: 0600
    say(f"{args.out}: {args.name}, {len(plain)} plain + {len(masked)} masked template(s) from "
        f"{len(photos) - skipped} photo(s), {skipped} skipped (embedder {ms.embedder_sha[:12]}…)")
    return EXIT_OK if not skipped else 3


# --- talking to kiosks ----------------------------------------------------------------------------


class Fleet:
    """One MQTT connection: sign a command, publish it to a device, group or everyone, collect results."""

    def __init__(self, args: argparse.Namespace) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        from edge_app.mqtt.security import load_private_key

        if args.key is None:
            raise EdgeAppError("--key ADMIN.key is needed to sign commands (make one with `edge-admin keygen`)")
        self.key = load_private_key(args.key)
        self.prefix = args.prefix
        host, _, port = args.broker.partition(":")
        self.results: dict[str, dict[str, Any]] = {}
        self._wanted: str | None = None
        self._got = threading.Condition()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._error: str | None = None
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"edge-admin-{time.time_ns()}")
        if args.username:
            password = args.password_file.read_text().strip() if args.password_file else None
            c.username_pw_set(args.username, password)
        if args.tls or args.ca:
            c.tls_set(ca_certs=str(args.ca) if args.ca else None, certfile=str(args.cert) if args.cert else None,
                      keyfile=str(args.cert_key) if args.cert_key else None)
        c.on_connect = self._on_connect
        c.on_subscribe = lambda *_a: self._subscribed.set()
        c.on_message = self._on_message
        self.client = c
        try:
            c.connect(host, int(port or (8883 if args.tls else 1883)), keepalive=30)
        except (OSError, ValueError) as exc:
            raise EdgeAppError(f"cannot reach the broker {args.broker}: {exc}") from exc
        c.loop_start()
        if not self._connected.wait(args.timeout):
            c.loop_stop()
            raise EdgeAppError(self._error or f"broker {args.broker} did not accept the connection in {args.timeout} s")
        c.subscribe(f"{self.prefix}/+/cmd/result", qos=1)
        # The broker must have the result subscription before any kiosk can answer.
        if not self._subscribed.wait(args.timeout):
            c.loop_stop()
            raise EdgeAppError(f"broker {args.broker} did not confirm the result subscription in {args.timeout} s")

    def _on_connect(self, _c: Any, _u: Any, _f: Any, reason_code: Any, _p: Any) -> None:
        if getattr(reason_code, "is_failure", False):
            self._error = f"broker refused the connection: {reason_code}"
        else:
            self._connected.set()

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        try:
            result = json.loads(msg.payload)
        except ValueError:
            return
        if isinstance(result, dict) and result.get("id") == self._wanted:
            with self._got:
                self.results[str(result.get("device") or msg.topic.split("/")[-3])] = result
                self._got.notify_all()

    def send(self, type_: str, args: dict[str, Any], target: str, expect: int | None, timeout: float) -> dict[str, Any]:
        """Publish one signed command and wait for ``expect`` results (None: all that come in ``timeout``)."""
        from edge_app.mqtt.security import sign_command

        raw = sign_command(self.key, type=type_, args=args, target=target)
        self._wanted = json.loads(base64.b64decode(json.loads(raw)["payload"]))["id"]
        self.results.clear()
        topic = (f"{self.prefix}/{target}/cmd" if not target.startswith("group:") and target != "*"
                 else f"{self.prefix}/group/{target[6:]}/cmd" if target != "*" else f"{self.prefix}/group/all/cmd")
        self.client.publish(topic, raw, qos=1).wait_for_publish(timeout)
        deadline = time.monotonic() + timeout
        with self._got:
            while expect is None or len(self.results) < expect:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._got.wait(left)
        return dict(self.results)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _target(args: argparse.Namespace) -> tuple[str, int | None]:
    """Exactly one target, named: no target (or an empty one, as an unset "$DEV" gives) is an error, never the
    whole fleet -- `edge-admin unlock` must not open every door because a variable was empty."""
    for option, value in (("--device", args.device), ("--group", args.group)):
        if value is not None and not value.strip():
            raise EdgeAppError(f"{option} is empty; name a kiosk (--device), a group (--group) or use --all")
    given = [o for o, v in (("--device", args.device), ("--group", args.group), ("--all", args.all)) if v]
    if len(given) > 1:  # argparse only sees a conflict on one side of the subcommand
        raise EdgeAppError(f"give one of --device, --group, --all, not {' and '.join(given)}")
    if args.device:
        return args.device, 1
    if args.group:
        return f"group:{args.group}", None
    if args.all:
        return "*", None
    raise EdgeAppError("no target: give --device ID, --group NAME, or --all for every kiosk under the prefix")


def _report(results: dict[str, dict[str, Any]], expect: int | None, as_json: bool) -> int:
    if as_json:
        print(json.dumps(results, indent=2))
    for device, r in sorted(results.items()):
        if not as_json:
            if r.get("ok"):
                print(f"{device}: ok {json.dumps(r.get('result'), ensure_ascii=False)}")
            else:
                err = r.get("error") or {}
                print(f"{device}: REFUSED {err.get('reason')}: {err.get('message')}")
    if not results:
        say("edge-admin: no answer before the timeout (is the device online and is this key in its admin_keys?)")
        return EXIT_TIMEOUT
    if expect is not None and len(results) < expect:
        return EXIT_TIMEOUT
    return EXIT_OK if all(r.get("ok") for r in results.values()) else EXIT_ERROR


def remote(type_: str, build: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        payload = build(args)
        target, expect = _target(args)
        fleet = Fleet(args)
        try:
            return _report(fleet.send(type_, payload, target, expect, args.timeout), expect, args.json)
        finally:
            fleet.close()

    return run


def _push_args(args: argparse.Namespace) -> dict[str, Any]:
    doc = _read_json(args.file)
    if not isinstance(doc, dict) or "name" not in doc:
        raise EdgeAppError(f"{args.file}: not an enrolment file (make one with `edge-admin enrol`)")
    return doc


# What gallery.replace takes of each exported person (created_at/updated_at are the kiosk's to set).
REPLACE_FIELDS = ("name", "active", "valid_from", "valid_until", "schedule", "note")


def _replace_args(args: argparse.Namespace) -> dict[str, Any]:
    """`edge-app gallery export` JSON -> gallery.replace arguments: templates regrouped per person into
    {"model_sha", "dim", "plain", "masked"}, which the export lists one by one."""
    from edge_app.gallery.store import EXPORT_FORMAT
    from edge_app.mqtt.security import DEFAULT_MAX_BYTES

    doc = _read_json(args.file)
    if not isinstance(doc, dict) or doc.get("format") != EXPORT_FORMAT or not isinstance(doc.get("persons"), list):
        raise EdgeAppError(f"{args.file}: not a gallery export (format {EXPORT_FORMAT!r}; make one with "
                           "`edge-app gallery export`)")
    persons = []
    shas: set[str] = set()
    for i, p in enumerate(doc["persons"]):
        where = f"{args.file}: persons[{i}]"
        if not isinstance(p, dict) or not isinstance(p.get("name"), str):
            raise EdgeAppError(f"{where}: not a person object with a name")
        person = {k: p[k] for k in REPLACE_FIELDS if k in p}
        templates = p.get("templates") or []
        if not isinstance(templates, list):
            raise EdgeAppError(f"{where} ({p['name']}): 'templates' is not a list")
        if templates:
            group: dict[str, Any] = {"plain": [], "masked": []}
            for j, t in enumerate(templates):
                if not isinstance(t, dict) or not all(k in t for k in ("model_sha", "dim", "embedding")):
                    raise EdgeAppError(f"{where} ({p['name']}) templates[{j}]: needs model_sha, dim and embedding")
                shas.add(str(t["model_sha"]))
                group.update(model_sha=t["model_sha"], dim=t["dim"])
                if t.get("masked") and not args.full_templates:
                    group["masked"].append(_trimmed(t["embedding"], f"{where} ({p['name']}) templates[{j}]"))
                else:
                    group["masked" if t.get("masked") else "plain"].append(t["embedding"])
            person["templates"] = group
        persons.append(person)
    if len(shas) > 1:  # the kiosk takes one embedder's templates; mixing would be refused person by person
        raise EdgeAppError(f"{args.file}: templates of {len(shas)} embedders ({', '.join(sorted(s[:12] for s in shas))}"
                           "); re-enrol on one embedder before replacing a kiosk's gallery")
    version = args.gallery_version if args.gallery_version is not None else doc.get("gallery_version")
    if isinstance(version, bool) or not isinstance(version, int):
        raise EdgeAppError(f"{args.file}: no integer gallery_version; give --gallery-version N")
    payload = {"version": version, "persons": persons}
    size = len(json.dumps(payload))
    if size > DEFAULT_MAX_BYTES * 0.7:  # base64 in the signed envelope adds a third
        raise EdgeAppError(f"{args.file}: {len(persons)} persons make a {size / 2**20:.1f} MiB command; a kiosk "
                           f"accepts {DEFAULT_MAX_BYTES / 2**20:.0f} MiB signed (about "
                           f"{DEFAULT_MAX_BYTES * 0.7 / 2**20:.1f} MiB of gallery): push persons one by one instead")
    return payload


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise EdgeAppError(f"no such file: {path}") from None
    except OSError as exc:
        raise EdgeAppError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise EdgeAppError(f"{path}: not JSON ({exc})") from None


def _photo_args(args: argparse.Namespace) -> dict[str, Any]:
    photos = []
    for p in args.photos:
        try:
            photos.append(base64.b64encode(Path(p).read_bytes()).decode())
        except OSError as exc:
            raise EdgeAppError(f"cannot read photo {p}: {exc.strerror or exc}") from None
    return {"name": args.name, "photos": photos}


def _net_options(suppress: bool) -> argparse.ArgumentParser:
    """The options every remote command takes. They are accepted before the subcommand (the main parser,
    with the real defaults) and after it (each subparser, with SUPPRESS defaults, so that an option not
    given after the subcommand does not overwrite the one given before it)."""
    net = argparse.ArgumentParser(add_help=False)

    def d(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    net.add_argument("--broker", default=d("localhost"), help="HOST[:PORT] (default localhost:1883, 8883 with --tls)")
    net.add_argument("--prefix", default=d("edge-app"), help="topic prefix of the fleet (default edge-app)")
    net.add_argument("--key", type=Path, default=d(None), help="the admin's private key (edge-admin keygen)")
    net.add_argument("--tls", action="store_true", default=d(False))
    net.add_argument("--ca", type=Path, default=d(None), help="CA certificate of the broker")
    net.add_argument("--cert", type=Path, default=d(None), help="client certificate")
    net.add_argument("--cert-key", type=Path, default=d(None), help="client certificate's key")
    net.add_argument("--username", default=d(None))
    net.add_argument("--password-file", type=Path, default=d(None))
    net.add_argument("--timeout", type=float, default=d(10.0), help="seconds to wait for answers (default 10)")
    net.add_argument("--json", action="store_true", default=d(False), help="print the results as JSON")
    who = net.add_mutually_exclusive_group()
    who.add_argument("--device", default=d(None), help="one kiosk's device id")
    who.add_argument("--group", default=d(None), help="every kiosk in this group")
    who.add_argument("--all", action="store_true", default=d(False), help="every kiosk under the prefix")
    return net


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="edge-admin", description="Manage edge-app kiosks over MQTT.",
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__,
                                 parents=[_net_options(suppress=False)])
    ap.add_argument("--version", action="version", version=f"edge-admin {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0)
    net = _net_options(suppress=True)

    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")
    p = sub.add_parser("keygen", help="make an admin key pair")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--force", action="store_true", help="overwrite an existing key file")
    p.set_defaults(func=cmd_keygen)
    p = sub.add_parser("enrol", help="photos -> plain + masked templates (same models as the kiosks)")
    p.add_argument("--name", required=True)
    p.add_argument("photos", nargs="+", type=Path)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--masked-templates", type=int, default=3, choices=range(0, 11), metavar="0..10")
    p.add_argument("--models", type=Path, default=None)
    p.add_argument("--embedder", choices=EMBEDDER_NAMES, default=DEFAULT_EMBEDDER)
    p.add_argument("--full-templates", action="store_true",
                   help="send masked templates with their trailing zeros (for kiosks older than this edge-admin, which "
                        "refuse the short form by its size)")
    p.set_defaults(func=cmd_enrol)
    p = sub.add_parser("push", parents=[net], help="send an enrolment file (templates)")
    p.add_argument("file", type=Path)
    p.set_defaults(func=remote("gallery.upsert", _push_args))
    p = sub.add_parser("push-photos", parents=[net], help="send photos; each kiosk embeds them itself")
    p.add_argument("--name", required=True)
    p.add_argument("photos", nargs="+")
    p.set_defaults(func=remote("gallery.upsert", _photo_args))
    p = sub.add_parser("remove", parents=[net], help="delete a person")
    p.add_argument("name")
    p.set_defaults(func=remote("gallery.delete", lambda a: {"name": a.name}))
    p = sub.add_parser("replace", parents=[net], help="replace the whole gallery (an `edge-app gallery export` file)")
    p.add_argument("file", type=Path)
    p.add_argument("--gallery-version", type=int, help="the version to record (default: the file's gallery_version)")
    p.add_argument("--full-templates", action="store_true",
                   help="send masked templates with their trailing zeros (for kiosks older than this edge-admin, which "
                        "refuse the short form by its size)")
    p.set_defaults(func=remote("gallery.replace", _replace_args))
    p = sub.add_parser("capture", parents=[net],
                       help="the kiosk takes enrolment shots of the person in front of its camera (e.g. with a mask)")
    p.add_argument("--name", required=True)
    p.add_argument("--seconds", type=float, help="how long the kiosk looks (5..120; default 20)")
    p.add_argument("--shots", type=int, help="shots to take (1..5; default 3)")
    p.set_defaults(func=remote("gallery.capture", lambda a: {"name": a.name, **({} if a.seconds is None else {
        "seconds": a.seconds}), **({} if a.shots is None else {"shots": a.shots})}))
    p = sub.add_parser("list", parents=[net], help="persons in the gallery")
    p.set_defaults(func=remote("gallery.list", lambda a: {}))
    p = sub.add_parser("ping", parents=[net], help="is it there, which gallery version")
    p.set_defaults(func=remote("ping", lambda a: {}))
    p = sub.add_parser("unlock", parents=[net], help="open the door (only if the kiosk allows remote unlock)")
    p.add_argument("--seconds", type=float)
    p.set_defaults(func=remote("door.unlock", lambda a: {} if a.seconds is None else {"seconds": a.seconds}))
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING - 10 * min(args.verbose, 2), stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args))
    except EdgeAppError as exc:
        say(f"edge-admin: error: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        say("edge-admin: interrupted")
        return 130
