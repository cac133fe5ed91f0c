"""Checks of what callers hand the gallery: names, dates, schedules, model hashes and embeddings. Each bad
value is a GalleryInputError that names the field and what is wrong with it."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from edge_app.errors import GalleryInputError

MAX_NAME_LEN: Final = 128
_SHA_RE: Final = re.compile(r"[0-9a-f]{64}")
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")

DateLike = str | date | None
ScheduleLike = str | Mapping[str, Any] | list[Any] | None


def clean_name(name: str) -> str:
    """Stripped name, or GalleryInputError saying what is wrong with it."""
    if not isinstance(name, str):
        raise GalleryInputError(f"person name must be a string, got {type(name).__name__}")
    s = name.strip()
    if not s:
        raise GalleryInputError("person name is empty")
    if len(s) > MAX_NAME_LEN:
        raise GalleryInputError(f"person name is {len(s)} characters, the limit is {MAX_NAME_LEN}: "
                                f"{s[:40]!r}...")
    if _CONTROL_RE.search(s):  # names end up in logs, MQTT topics and on screen
        raise GalleryInputError(f"person name contains control characters: {s!r}")
    return s


def check_sha(model_sha: str) -> str:
    s = model_sha.strip().lower() if isinstance(model_sha, str) else ""
    if not _SHA_RE.fullmatch(s):
        raise GalleryInputError(f"model_sha must be 64 hex characters (sha256), got {model_sha!r}")
    return s


def iso_or_none(value: DateLike, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    if isinstance(value, str):
        s = value.strip()
        try:
            datetime.fromisoformat(s)
        except ValueError:
            raise GalleryInputError(f"{field} is not an ISO-8601 date/time: {value!r}") from None
        return s  # kept as written: a bare date may mean "whole day" to the access policy
    raise GalleryInputError(f"{field} must be an ISO-8601 string or a date, got {type(value).__name__}")


def check_window(valid_from: str | None, valid_until: str | None) -> None:
    if valid_from and valid_until:
        a, b = datetime.fromisoformat(valid_from), datetime.fromisoformat(valid_until)
        if (a.tzinfo is None) == (b.tzinfo is None) and a > b:
            raise GalleryInputError(f"valid_from {valid_from} is after valid_until {valid_until}")


def schedule_json(schedule: ScheduleLike) -> str | None:
    if schedule is None:
        return None
    if isinstance(schedule, str):
        try:
            json.loads(schedule)
        except ValueError as e:
            raise GalleryInputError(f"schedule is not valid JSON: {e}") from None
        return schedule
    try:
        return json.dumps(schedule, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise GalleryInputError(f"schedule is not JSON-serialisable: {e}") from None


def json_default(o: object) -> object:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, date):
        return o.isoformat()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable")


def per_row(value: Any, n: int, field: str) -> list[Any]:
    """A scalar repeated n times, or a sequence of exactly n values."""
    if value is None or isinstance(value, bool | int | float | np.generic):
        return [value] * n
    seq = list(value)
    if len(seq) != n:
        raise GalleryInputError(f"{field} has {len(seq)} values for {n} embeddings")
    return seq


def unit_rows(embeddings: npt.ArrayLike) -> npt.NDArray[np.float32]:
    """Validated, L2-normalised little-endian float32 copy of a (n, d) float array."""
    try:
        arr = np.asarray(embeddings)
    except ValueError as e:
        raise GalleryInputError(f"embeddings are not an array: {e}") from None
    if arr.ndim != 2:
        raise GalleryInputError(f"embeddings must be 2-D (n, dim), got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.floating):
        raise GalleryInputError(f"embeddings must be floating point, got dtype {arr.dtype}")
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise GalleryInputError(f"embeddings are empty: shape {arr.shape}")
    x = arr.astype(np.float64)  # norm in float64: no overflow/underflow for extreme float32 rows
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if bad.size:
        raise GalleryInputError(f"embedding rows {bad.tolist()} contain NaN or inf")
    norms = np.linalg.norm(x, axis=1)
    zero = np.flatnonzero(norms == 0)
    if zero.size:
        raise GalleryInputError(f"embedding rows {zero.tolist()} are all zeros")
    unit: npt.NDArray[np.float32] = (x / norms[:, None]).astype("<f4")
    return unit
