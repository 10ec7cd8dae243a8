"""Helpers shared by the file readers: path resolution, format sniffing, node ids, the missing-value policy.

Private to ``stlm.data.sources``; the readers (``h5``, ``npz``, ``csv``, ``adjacency``) are the public face.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from stlm.data.sources.base import DataValidationError


class DataFileNotFoundError(DataValidationError, FileNotFoundError):
    """A configured input file does not exist (catchable as either ``DataValidationError`` or ``FileNotFoundError``)."""


def resolve_input(path: str | PathLike[str], key: str) -> Path:
    """Resolve ``path`` (``~`` and relative to the current directory) and check it is a non-empty file.

    Args:
        path: as the user wrote it (kept verbatim in messages).
        key: the config key that holds it (e.g. ``"dataset.path"``), named in the fix.
    """
    resolved = Path(path).expanduser().resolve()
    if not resolved.exists():
        raise DataFileNotFoundError(
            f"{path}: file not found (looked for {resolved}; relative paths resolve against the directory you ran "
            f"from, {Path.cwd()}). Fix {key}: give an absolute path or run from the directory the path is relative to."
        )
    if not resolved.is_file():
        raise DataValidationError(f"{path}: is a directory, not a file ({resolved}); set {key} to the data file inside it")
    if resolved.stat().st_size == 0:
        raise DataValidationError(
            f"{path}: the file is empty (0 bytes at {resolved}); it is probably an interrupted download or copy: fetch it again"
        )
    return resolved


# First bytes of the formats a user may hand to the wrong reader.
_SIGNATURES = (
    (b"\x89HDF\r\n\x1a\n", "hdf5"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),  # an empty zip archive
    (b"\x93NUMPY", "npy"),
    (b"\x80", "pickle"),  # pickle protocol >= 2
    (b"CDF\x01", "netcdf3"),
    (b"CDF\x02", "netcdf3"),
    (b"\x1f\x8b", "gzip"),
)

FORMAT_HINTS = {
    "hdf5": "an HDF5 file (METR-LA / PEMS-BAY .h5: use dataset=metr_la)",
    "zip": "a zip archive (a PEMS .npz: use dataset=pems)",
    "npy": "a single numpy .npy array (use dataset=pems)",
    "pickle": "a Python pickle (an adjacency .pkl: pass it as dataset.adjacency)",
    "netcdf3": "a netCDF file (a gridded climate data set)",
    "gzip": "a gzip-compressed file (decompress it first: gunzip FILE)",
    "text": "a text file (a wide CSV: use dataset=csv; a graph CSV: pass it as dataset.adjacency)",
    "binary": "a binary file of unknown format",
}


def sniff_format(path: Path) -> str:
    """Guess a file's format from its first bytes: one of the keys of :data:`FORMAT_HINTS`.

    Protocol-0 pickles (DCRNN's Python 2 files) are text starting with ``(``, which no CSV does.
    """
    with path.open("rb") as f:
        head = f.read(4096)
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if head.startswith(b"(") and b"\n" in head:
        return "pickle"
    # Text in any 8-bit encoding (UTF-8, Latin-1) has no NUL bytes; binary formats nearly always do.
    return "binary" if b"\x00" in head else "text"


def as_missing_value(value: Any, key: str = "dataset.missing_value") -> float | None:
    """None, or the value as a float (config files may give ``0``, ``.nan`` or the string ``"nan"``)."""
    if value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataValidationError(f"{key} must be a number, .nan or null (no missing values); got {value!r}") from None


def normalise_id(node_id: Any) -> str:
    """Node ids compare as strings: 773869, 773869.0, np.int64(773869) and '773869' all become '773869'."""
    if isinstance(node_id, bytes):
        node_id = node_id.decode("latin1")
    if isinstance(node_id, (bool, np.bool_)):
        return str(node_id)
    if isinstance(node_id, (int, np.integer)):
        return str(int(node_id))
    if isinstance(node_id, (float, np.floating)) and float(node_id).is_integer():
        return str(int(node_id))
    return str(node_id).strip()


def numeric_sort_key(node_id: str) -> tuple[int, int | str]:
    """Sort integer-like ids numerically ('2' before '10'), the others after them as text."""
    stripped = node_id[1:] if node_id.startswith("-") else node_id
    return (0, int(node_id)) if stripped.isdigit() else (1, node_id)


def preview(ids: Sequence[str], k: int = 10) -> str:
    """``'a', 'b', ... (and 12 more)`` for messages."""
    if not ids:
        return "none"
    shown = ", ".join(repr(i) for i in ids[:k])
    return shown + (f", ... (and {len(ids) - k} more)" if len(ids) > k else "")


def duplicates(ids: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    dup: list[str] = []
    for i in ids:
        if i in seen and i not in dup:
            dup.append(i)
        seen.add(i)
    return dup


def to_ns(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """pandas 3 parses to s/ms/us resolution; the contract's arithmetic (``asi8``) assumes one unit: ns."""
    return pd.DatetimeIndex(index).as_unit("ns")


def mask_missing(
    raw: np.ndarray,
    *,
    missing_value: float | None,
    nan_is_missing: bool,
    where: str,
    locate: Callable[[int, int, int], str],
    fix: str,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the missing-value policy to a numeric [T, N, C] array.

    Policy (the same for every reader):
      * ``missing_value`` given (a number, or NaN): the data set declares missing entries. Values equal to it,
        NaN and +-inf are all masked.
      * ``missing_value`` None and ``nan_is_missing`` (the CSV reader: empty cells are the format's marker):
        NaN is masked, +-inf is refused.
      * otherwise (no declaration): NaN and +-inf are refused.
    A refusal is a :class:`DataValidationError` naming ``where`` and the first offending entry via ``locate``.

    Returns:
        values [T, N, C] float32 with 0 where masked, and mask [T, N, C] bool (True = observed).
    """
    declared = missing_value is not None
    nan = np.isnan(raw)
    if nan.any() and not (declared or nan_is_missing):
        raise DataValidationError(f"{where}: NaN at {_first(nan, locate)}, and the data set declares no missing values. {fix}")
    finite = ~nan & np.isfinite(raw)
    inf = ~finite & ~nan
    if inf.any() and not declared:
        raise DataValidationError(f"{where}: infinite value at {_first(inf, locate)}, and the data set declares no missing values. {fix}")
    mask = finite
    if declared and not np.isnan(missing_value):
        mask &= raw != missing_value
    values = np.where(mask, raw, 0).astype(np.float32)
    too_big = mask & ~np.isfinite(values)
    if too_big.any():
        raise DataValidationError(f"{where}: value beyond float32 range at {_first(too_big, locate)}; rescale the data")
    return values, mask


def _first(flags: np.ndarray, locate: Callable[[int, int, int], str]) -> str:
    t, n, c = np.unravel_index(int(np.argmax(flags)), flags.shape)
    return f"{locate(int(t), int(n), int(c))} ({int(flags.sum())} such entries in all)"
