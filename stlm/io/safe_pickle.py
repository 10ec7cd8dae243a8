"""A restricted unpickler: reads data pickles (DCRNN adjacency files) without executing code.

``pickle.load`` calls whatever callable the file names (``os.system``, ``builtins.eval``, ...), so opening
an untrusted ``.pkl`` runs its author's code. Every global a pickle refers to passes through
``Unpickler.find_class``; :class:`RestrictedUnpickler` answers only for the small set below and refuses
everything else with :class:`UnsafePickleError`, *before* anything is called.

Allowed: plain containers and scalars (list, dict, tuple, str, bytes, numbers need no global at all;
``set``/``frozenset``/``complex``/``bytearray``/``OrderedDict`` do), ``_codecs.encode`` (how Python 3
writes bytes at protocols 0-2), and numpy array reconstruction: ``numpy.ndarray``, ``numpy.dtype``,
``multiarray._reconstruct`` / ``multiarray.scalar`` under both the numpy 1.x (``numpy.core``) and 2.x
(``numpy._core``) module paths, and ``numeric._frombuffer`` (protocol 5). These construct arrays and
scalars from raw bytes; none of them can reach the interpreter, the file system or a subprocess.

    >>> sensor_ids, sensor_id_to_ind, adj_mx = safe_load("adj_mx.pkl")  # DCRNN, Python 2 pickle

Python 2 pickles (DCRNN's) hold ``str`` as bytes: ``encoding="latin1"`` (the default here) decodes them
and is the encoding numpy needs for arrays pickled under Python 2.
"""

from __future__ import annotations

import builtins
import codecs
import collections
import io
import pickle
from os import PathLike
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

try:  # numpy >= 2 moved the implementation to numpy._core (numpy.core remains as a deprecated alias)
    from numpy._core import multiarray as _multiarray
    from numpy._core import numeric as _numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
    from numpy.core import numeric as _numeric  # type: ignore[no-redef]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referred to a global outside the allow-list; nothing from it was executed."""


def _numpy_globals() -> dict[tuple[str, str], Any]:
    # Both module spellings resolve to the objects of the numpy that is installed, so a numpy 1.x
    # pickle loads under numpy 2.x (and vice versa) without touching the deprecated numpy.core alias.
    allowed: dict[tuple[str, str], Any] = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype}
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = _multiarray.scalar
        allowed[(f"{package}.numeric", "_frombuffer")] = _numeric._frombuffer
    return allowed


def _builtin_globals() -> dict[tuple[str, str], Any]:
    allowed: dict[tuple[str, str], Any] = {}
    # Python 2 pickles say "__builtin__"; the default find_class would map it, our override sees it raw.
    for module in ("builtins", "__builtin__"):
        for name in ("set", "frozenset", "complex", "bytearray"):
            allowed[(module, name)] = getattr(builtins, name)
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    allowed[("_codecs", "encode")] = codecs.encode
    return allowed


ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {**_builtin_globals(), **_numpy_globals()}
"""(module, name) -> object: the only globals a pickle may refer to."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` that resolves only :data:`ALLOWED_GLOBALS`.

    Args:
        file: binary file object positioned at the pickle.
        origin: file name used in error messages.
        encoding: how to decode Python 2 ``str`` objects ("latin1" works for DCRNN and numpy arrays).
    """

    def __init__(self, file: BinaryIO, *, origin: str = "<pickle>", encoding: str = "latin1") -> None:
        super().__init__(file, encoding=encoding)
        self.origin = origin

    def find_class(self, module: str, name: str) -> Any:
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self.origin}: refused to load the global '{module}.{name}' from this pickle; nothing was "
                "executed. Only plain containers, strings, numbers and numpy arrays are allowed (all a DCRNN "
                "adjacency pickle needs). The file is not a data pickle (it may be malicious); if it comes from "
                "a source you trust, convert it to a plain format (.npz or CSV) with the code that made it."
            ) from None

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickleError(f"{self.origin}: refused a persistent id ({pid!r}); data pickles do not use them")


def safe_loads(data: bytes, *, origin: str = "<bytes>", encoding: str = "latin1") -> Any:
    """Unpickle ``data`` with :class:`RestrictedUnpickler`; see :func:`safe_load`."""
    return RestrictedUnpickler(io.BytesIO(data), origin=origin, encoding=encoding).load()


def safe_load(path: str | PathLike[str], *, encoding: str = "latin1") -> Any:
    """Read a pickle file without executing code.

    Raises:
        UnsafePickleError: the file refers to a global outside the allow-list (the message names it).
        pickle.UnpicklingError, EOFError, ValueError: the file is not a pickle, or is truncated/corrupt
            (re-raised as ``pickle.UnpicklingError`` naming the file).
    """
    origin = str(path)
    with Path(path).open("rb") as f:
        try:
            return RestrictedUnpickler(f, origin=origin, encoding=encoding).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
                AttributeError, UnicodeDecodeError) as e:
            # A truncated file ends in EOFError; garbage bytes give UnpicklingError/KeyError/ValueError.
            raise pickle.UnpicklingError(
                f"{origin}: not a readable pickle (truncated or corrupt?): {type(e).__name__}: {e}"
            ) from e
