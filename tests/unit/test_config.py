"""TOML config -> frozen dataclasses; every error names the file, the section and the key."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from edge_app.config import (
    DEFAULT,
    Config,
    DeviceConfig,
    DoorSection,
    GalleryConfig,
    ModelsConfig,
    RecognitionConfig,
    describe,
    load_config,
    parse_config,
)
from edge_app.errors import ConfigError, ConfigNotFoundError, EdgeAppError

FULL = """\
[recognition]
threshold = 0.93
masked_threshold = 0.90
mask_probability = 0.6
require_mask = true
masked_templates_per_photo = 5
detector = "full"
embedder = "dlib"
masked_gallery = "plain"
threads = 4

[gallery]
path = "/var/lib/edge-app/gallery.db"

[models]
dir = "models"
"""


def _raises(text: str, message: str) -> None:
    """parse_config(text) fails with exactly ``config.toml: <message>``."""
    with pytest.raises(ConfigError, match="^" + re.escape(f"config.toml: {message}") + "$"):
        parse_config(text, "config.toml")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


# --- valid files -----------------------------------------------------------------------------


@pytest.mark.parametrize("key,value,expected", [
    ("embedder", '"arcface"', 'one of "auto", "sface", "dlib", "sface+edgeface", "sface+edgeface+reid"'),
    ("masked_gallery", '"masked"', 'one of "plain", "plain+masked"'),
])
def test_choice_keys_name_the_choices(key, value, expected):
    with pytest.raises(ConfigError, match=re.escape(f"[recognition] {key}: expected {expected}")):
        parse_config(f"[recognition]\n{key} = {value}\n")


def test_empty_file_is_all_defaults(tmp_path):
    cfg = load_config(_write(tmp_path / "config.toml", ""))
    assert cfg == DEFAULT == Config()
    assert cfg.recognition == RecognitionConfig(threshold=None, masked_threshold=None, masked_gallery=None,
                                                mask_probability=0.5, require_mask=False,
                                                masked_templates_per_photo=3, detector="short",
                                                embedder="auto", threads=2)
    assert cfg.gallery.path is None and cfg.models.dir is None
    assert cfg.source == tmp_path / "config.toml"
    assert parse_config("").source is None


def test_full_example(tmp_path):
    path = _write(tmp_path / "etc" / "config.toml", FULL)
    cfg = load_config(path)
    assert cfg.recognition == RecognitionConfig(
        threshold=0.93, masked_threshold=0.90, mask_probability=0.6, require_mask=True,
        masked_templates_per_photo=5, detector="full", threads=4, embedder="dlib", masked_gallery="plain")
    assert cfg.gallery == GalleryConfig(Path("/var/lib/edge-app/gallery.db"))
    assert cfg.models == ModelsConfig(tmp_path / "etc" / "models")
    assert cfg.source == path


def test_sections_and_keys_are_optional():
    cfg = parse_config("[recognition]\nthreads = 1\n[gallery]\n")
    assert cfg.recognition == RecognitionConfig(threads=1)
    assert cfg.gallery == GalleryConfig() and cfg.models == ModelsConfig()


def test_dotted_keys_are_the_same_as_a_section():
    assert parse_config("recognition.threads = 3").recognition.threads == 3


def test_config_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULT.recognition.threads = 8  # type: ignore[misc]


def test_int_accepted_for_float():
    rec = parse_config("[recognition]\nthreshold = 1\nmasked_threshold = -1").recognition
    assert rec.threshold == 1.0 and isinstance(rec.threshold, float)
    assert rec.masked_threshold == -1.0 and isinstance(rec.masked_threshold, float)


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("threshold", "-1.0", -1.0), ("threshold", "1.0", 1.0), ("masked_threshold", "0", 0.0),
    ("mask_probability", "0.001", 0.001), ("mask_probability", "0.999", 0.999),
    ("masked_templates_per_photo", "0", 0), ("masked_templates_per_photo", "10", 10),
    ("threads", "1", 1), ("threads", "64", 64), ("detector", '"short"', "short"), ("detector", '"full"', "full"),
    ("require_mask", "false", False), ("require_mask", "true", True),
])
def test_boundaries_accepted(key, value, expected):
    rec = parse_config(f"[recognition]\n{key} = {value}").recognition
    got = getattr(rec, key)
    # The value itself and its type (an int threshold becomes a float; a count stays an int) ...
    assert got == expected and type(got) is type(expected)
    # ... and no other setting moved.
    others = {f.name: getattr(rec, f.name) for f in dataclasses.fields(rec) if f.name != key}
    assert others == {n: getattr(DEFAULT.recognition, n) for n in others}


# --- paths -----------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_folder_not_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = _write(tmp_path / "etc" / "edge" / "config.toml",
                  '[gallery]\npath = "data/gallery.db"\n[models]\ndir = "../models"\n')
    cfg = load_config(path)
    assert cfg.gallery.path == tmp_path / "etc" / "edge" / "data" / "gallery.db"
    assert cfg.models.dir == tmp_path / "etc" / "edge" / ".." / "models"
    # a relative config path is anchored at the cwd first, then the same rule applies
    assert load_config("etc/edge/config.toml") == cfg


def test_absolute_path_kept_and_tilde_expanded(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    cfg = load_config(_write(tmp_path / "config.toml",
                             '[gallery]\npath = "/srv/g.db"\n[models]\ndir = "~/models"\n'))
    assert cfg.gallery.path == Path("/srv/g.db")
    assert cfg.models.dir == tmp_path / "home" / "models"


def test_string_source_without_file_anchors_at_cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_config('[gallery]\npath = "g.db"').gallery.path == tmp_path / "g.db"


# --- unknown names ---------------------------------------------------------------------------


def test_unknown_section_suggests_closest():
    _raises("[recogniton]\nthreshold = 0.9", "[recogniton]: unknown section, did you mean [recognition]?")


def test_unknown_section_without_close_match_lists_known():
    _raises("[xyzzy]\n", "[xyzzy]: unknown section, known: [access], [camera], [device], [door], [events], "
                          "[feedback], [gallery], [liveness], [models], [mqtt], [recognition]")


def test_unknown_key_suggests_closest():
    _raises("[recognition]\nthreshhold = 0.9",
            '[recognition] threshhold: unknown key, did you mean "threshold"?')


def test_unknown_key_without_close_match_lists_known():
    _raises('[gallery]\ncolour = "red"', '[gallery] colour: unknown key, known: "path"')


def test_top_level_key_says_which_section_it_belongs_in():
    _raises("threshold = 0.9", "threshold: a top-level key is not allowed, it belongs in [recognition] or [liveness]")


def test_top_level_unknown_key_lists_sections():
    _raises("foo = 1", "foo: a top-level key is not allowed, "
                       "settings belong in a section: [access], [camera], [device], [door], [events], "
                       "[feedback], [gallery], [liveness], [models], [mqtt], [recognition]")


@pytest.mark.parametrize(("text", "found"), [("recognition = 3", "3"), ("[[recognition]]", "an array")])
def test_section_must_be_a_table(text, found):
    _raises(text, f"[recognition]: expected a table (a [recognition] section), got {found}")


# --- wrong types -----------------------------------------------------------------------------


def test_string_for_number():
    _raises('[recognition]\nthreshold = "high"', '[recognition] threshold: expected a number in [-1, 1], got "high"')


@pytest.mark.parametrize(("key", "expected"), [
    ("threads", "an integer >= 1"),
    ("masked_templates_per_photo", "an integer in 0..10"),
    ("threshold", "a number in [-1, 1]"),
    ("mask_probability", "a number in (0, 1)"),
])
def test_bool_is_not_a_number(key, expected):
    _raises(f"[recognition]\n{key} = true", f"[recognition] {key}: expected {expected}, got true")


def test_float_is_not_an_int():
    _raises("[recognition]\nthreads = 2.0", "[recognition] threads: expected an integer >= 1, got 2.0")


def test_number_is_not_a_bool():
    _raises("[recognition]\nrequire_mask = 1", "[recognition] require_mask: expected true or false, got 1")


def test_table_where_scalar_wanted():
    _raises("[recognition]\nthreshold = {value = 0.9}",
            "[recognition] threshold: expected a number in [-1, 1], got a table")
    _raises("[recognition.detector]\nname = 'full'",
            '[recognition] detector: expected one of "short", "full", got a table')


def test_array_where_scalar_wanted():
    _raises("[recognition]\nthreads = [1, 2]", "[recognition] threads: expected an integer >= 1, got an array")


@pytest.mark.parametrize("value", ["3", "true", '""', '"   "'])
def test_path_must_be_a_non_empty_string(value):
    _raises(f"[models]\ndir = {value}", f"[models] dir: expected a path (a non-empty string), got {value}")


# --- ranges and choices ----------------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "expected"), [
    ("threshold", "1.01", "a number in [-1, 1]"),
    ("threshold", "-1.5", "a number in [-1, 1]"),
    ("threshold", "nan", "a number in [-1, 1]"),
    ("masked_threshold", "2", "a number in [-1, 1]"),
    ("mask_probability", "0", "a number in (0, 1)"),
    ("mask_probability", "1", "a number in (0, 1)"),
    ("mask_probability", "1.5", "a number in (0, 1)"),
    ("masked_templates_per_photo", "-1", "an integer in 0..10"),
    ("masked_templates_per_photo", "11", "an integer in 0..10"),
    ("threads", "0", "an integer >= 1"),
    ("detector", '"big"', 'one of "short", "full"'),
    ("detector", '"Short"', 'one of "short", "full"'),
])
def test_out_of_range_or_not_a_choice(key, value, expected):
    _raises(f"[recognition]\n{key} = {value}", f"[recognition] {key}: expected {expected}, got {value}")


# --- file and syntax errors ------------------------------------------------------------------


def test_toml_syntax_error_names_file_line_and_column(tmp_path):
    path = _write(tmp_path / "config.toml", "[recognition]\nthreshold = = 0.9\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid TOML: ") + r".*line 2, column \d+"):
        load_config(path)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.toml"
    with pytest.raises(ConfigNotFoundError, match=re.escape(f"{path}: config file not found")) as e:
        load_config(path)
    for cls in (FileNotFoundError, ConfigError, ValueError, EdgeAppError):
        assert isinstance(e.value, cls)


def test_unreadable_file(tmp_path):
    # A directory, not chmod 000: the tests may run as root, which reads anything.
    with pytest.raises(ConfigError, match=re.escape(f"{tmp_path}: cannot read config file: ")) as e:
        load_config(tmp_path)
    assert not isinstance(e.value, FileNotFoundError)


def test_not_utf8(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b'[gallery]\npath = "\xff"\n')
    with pytest.raises(ConfigError, match=re.escape(f"{path}: not UTF-8 text")):
        load_config(path)


def test_utf8_bom_tolerated(tmp_path):
    path = tmp_path / "config.toml"
    path.write_bytes(b"\xef\xbb\xbf[recognition]\nthreads = 3\n")
    assert load_config(path).recognition.threads == 3


def test_errors_in_a_loaded_file_name_that_file(tmp_path):
    path = _write(tmp_path / "site.toml", "[recognition]\nthreads = 0\n")
    with pytest.raises(ConfigError, match="^" + re.escape(f"{path}: [recognition] threads: ")):
        load_config(path)


# --- describe --------------------------------------------------------------------------------


def test_describe_omits_none_and_shows_values():
    text = describe(DEFAULT)
    recognition = text.split("[recognition]\n", 1)[1].split("\n[", 1)[0]
    keys = [line.split(" = ")[0] for line in recognition.splitlines()]
    assert "threshold" not in keys and "masked_threshold" not in keys and "path" not in text and "dir" not in text
    assert "[recognition]\n" in text and 'detector = "short"' in text and "require_mask = false" in text
    assert "[gallery]\n" in text and "[models]\n" in text


@pytest.mark.parametrize("cfg", [
    DEFAULT,
    parse_config(FULL, "/etc/edge-app/config.toml"),
    Config(recognition=RecognitionConfig(threshold=0.1 + 0.2, masked_threshold=-1.0, mask_probability=1e-9),
           gallery=GalleryConfig(Path('/tmp/we"ird\\ dir\tx/ü.db')), models=ModelsConfig(Path("/opt/models")),
           door=DoorSection(contact_pin=5, exit_button_pin=6, pins="mock"),
           device=DeviceConfig(id="kiosk-7", timezone="Europe/Berlin")),
])
def test_describe_round_trips(cfg):
    back = parse_config(describe(cfg))
    assert back == cfg  # Config equality ignores source
    assert dataclasses.replace(back, source=cfg.source) == cfg


def test_describe_names_the_source(tmp_path):
    cfg = load_config(_write(tmp_path / "config.toml", FULL))
    assert str(tmp_path / "config.toml") in describe(cfg).splitlines()[0]
    assert parse_config(describe(cfg)) == cfg


@pytest.mark.parametrize("text,message", [
    ("[door]\nrelay_pin = 5\ncontact_pin = 5\n",
     "[door] relay_pin, contact_pin and exit_button_pin must differ, got [5, 5]"),
    ("[access]\nvotes = 6\nwindow = 5\n", "[access] votes (6) cannot exceed window (5)"),
    ('[device]\ntimezone = "Mars/Olympus"\n', "[device] timezone: unknown time zone 'Mars/Olympus'"),
    ('[door]\nlock_type = "magnet"\n', '[door] lock_type: expected one of "fail_secure", "fail_safe", got "magnet"'),
    ("[camera]\nwidth = 10\n", "[camera] width: expected an integer in 64..4096, got 10"),
    ('[mqtt]\nprefix = "a/#"\n', "[mqtt] prefix: not a usable MQTT topic prefix: 'a/#'"),
    ('[mqtt]\ngroups = "lobby, floor/2"\n', "[mqtt] groups: 'floor/2' contains + # or /"),
    ('[mqtt]\ncert_file = "c.pem"\n', "[mqtt] cert_file is set but key_file is not"),
    ("[mqtt]\nport = 0\n", "[mqtt] port: expected an integer in 1..65535, got 0"),
])
def test_daemon_sections_check_values_and_combinations(text, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_config(text, "kiosk.toml")
