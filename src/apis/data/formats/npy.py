"""Reading ``.npy`` files that hold a pickled dict of arrays (Cellpose's ``_seg.npy``) without running pickled
code.

``np.save(path, a_dict)`` stores a 0-d object array whose one element is pickled; ``np.load(...,
allow_pickle=True)`` would then import and call whatever the pickle names, so a crafted file runs code. Here a
restricted unpickler admits only what arrays, numpy scalars and builtin containers need (numpy's array and
scalar reconstructors, ``numpy.ndarray``, ``numpy.dtype``, builtin containers and scalars) and refuses any other
name *before* anything is called.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np

# numpy's reconstructors, taken from numpy's own pickling so they follow its module moves (numpy.core →
# numpy._core); pickles from either numpy name them by the module they were written with.
_RECONSTRUCT = np.zeros(1).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_ALLOWED: dict[tuple[str, str], Any] = {
    **{(m, "_reconstruct"): _RECONSTRUCT for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _SCALAR for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    # Containers and scalars; bytes and bytearray are left out: called with a number they allocate that much.
    **{(m, t.__name__): t for m in ("builtins", "__builtin__")
       for t in (dict, list, tuple, set, frozenset, int, float, complex, str, bool)},
}


class NpyError(ValueError):
    """A .npy file that cannot be read; the message names the file."""


class ForbiddenPickle(NpyError):
    """The pickle names something other than arrays and containers; ``type_name`` is that name."""

    def __init__(self, path: Path, type_name: str):
        self.type_name = type_name
        super().__init__(f"{path}: holds a pickled object of type {type_name}")


class _ArraysOnly(pickle.Unpickler):
    def __init__(self, file, path: Path):
        super().__init__(file)
        self.path = path

    def find_class(self, module: str, name: str) -> Any:
        found = _ALLOWED.get((module, name))
        if found is None:
            raise ForbiddenPickle(self.path, f"{module}.{name}")
        return found


def load_npy(path: Path) -> Any:
    """The content of a .npy file: an array, or for a pickled object array its object (a dict of arrays for
    ``np.save(path, a_dict)``). Raises :class:`ForbiddenPickle` for a pickle naming anything else,
    :class:`NpyError` for a file that is not a readable .npy."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise NpyError(f"{path}: cannot read it ({e.strerror or e})") from None
    f = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
        else:
            raise NpyError(f"{path}: .npy format version {version[0]}.{version[1]} is not read here")
        if not dtype.hasobject:
            f.seek(0)
            return np.load(f, allow_pickle=False)
        obj = _ArraysOnly(f, path).load()
    except NpyError:
        raise
    except (ValueError, TypeError, EOFError, pickle.UnpicklingError, AttributeError, IndexError, KeyError) as e:
        raise NpyError(f"{path}: not a readable .npy file ({type(e).__name__}: {e})") from None
    if isinstance(obj, np.ndarray) and obj.dtype.hasobject and obj.shape == () and shape == ():
        return obj.item()
    return obj
