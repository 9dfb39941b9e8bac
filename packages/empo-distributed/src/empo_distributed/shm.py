"""Arrays shared by the local worker processes of one rank, without copies.

Each array is a file on a memory-backed filesystem (``/dev/shm`` on Linux) mapped with
``numpy.memmap`` by the parent and by every worker: workers read the DAG and the value
arrays and write their rows in place. Files (unlike ``multiprocessing.shared_memory``)
work with every start method and need no resource tracker; the parent deletes the
directory when the solve ends, also on errors.
"""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np


def _shm_root() -> str | None:
    root = "/dev/shm"
    return root if os.path.isdir(root) and os.access(root, os.W_OK) else None


class SharedArrays:
    """A directory of memory-mapped arrays; ``spec()`` is what a worker needs to attach."""

    def __init__(self, prefix: str = "empo-"):
        self.dir = tempfile.mkdtemp(prefix=prefix, dir=_shm_root())
        self.arrays: dict[str, np.memmap] = {}
        self._spec: dict[str, tuple] = {}

    def create(
        self, name: str, shape: tuple, dtype, fill=None, copy_from: np.ndarray | None = None
    ):
        path = os.path.join(self.dir, f"{name}.bin")
        shape = tuple(int(s) for s in shape)
        if int(np.prod(shape)) == 0:  # memmap cannot map empty files
            arr = np.zeros(shape, dtype=dtype)
        else:
            arr = np.memmap(path, dtype=dtype, mode="w+", shape=shape)
            if copy_from is not None:
                arr[...] = copy_from
            elif fill is not None:
                arr[...] = fill
        self.arrays[name] = arr
        self._spec[name] = (path, np.dtype(dtype).str, shape)
        return arr

    def share(self, name: str, array: np.ndarray):
        """A shared copy of ``array`` (made once; workers then map it for free)."""
        return self.create(name, array.shape, array.dtype, copy_from=array)

    def spec(self) -> dict:
        return dict(self._spec)

    def close(self) -> None:
        self.arrays.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False


def attach(spec: dict) -> dict[str, np.ndarray]:
    """Map every array of a ``SharedArrays.spec()`` (read-write) in this process."""
    out = {}
    for name, (path, dtype, shape) in spec.items():
        if int(np.prod(shape)) == 0:
            out[name] = np.zeros(shape, dtype=dtype)
        else:
            out[name] = np.memmap(path, dtype=dtype, mode="r+", shape=tuple(shape))
    return out
