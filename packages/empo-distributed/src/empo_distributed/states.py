"""Compact state storage for worlds with integer-array states (the built-in worlds).

A :class:`StateTable` holds one int64 key per state (8 bytes, sorted: keys are mixed
radix in tuple order) instead of a Python tuple and a dict entry per state (~250 bytes).
It behaves as the read-only list of state tuples the rest of the package and EMPO's API
expect; ``index_of`` replaces the ``state -> index`` dict with a binary search.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


class StateTable(Sequence):
    """Sorted int64 keys + the world's ``encode``/``decode``, seen as a list of tuples."""

    def __init__(self, keys: np.ndarray, codec):
        self.keys = np.asarray(keys, dtype=np.int64)
        self.codec = codec  # an object with encode(rows) / decode(keys)

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, i):
        if isinstance(i, slice):
            return StateTable(self.keys[i], self.codec)
        if isinstance(i, np.ndarray):
            return [tuple(r) for r in self.codec.decode(self.keys[i]).tolist()]
        return tuple(self.codec.decode(self.keys[i : i + 1] if i >= 0 else self.keys[[i]])[0].tolist())

    def __iter__(self):
        for start in range(0, len(self.keys), 65536):
            yield from (tuple(r) for r in self.codec.decode(self.keys[start : start + 65536]).tolist())

    def __eq__(self, other) -> bool:
        if isinstance(other, StateTable):
            return np.array_equal(self.keys, other.keys)
        return list(self) == list(other)

    def array(self) -> np.ndarray:
        """States as an ``(N, L)`` int64 array (decoded on demand)."""
        return self.codec.decode(self.keys)

    def steps(self) -> np.ndarray:
        """The first element (step count) of every state."""
        if hasattr(self.codec, "steps"):
            return self.codec.steps(self.keys)
        return self.array()[:, 0] if len(self) else np.zeros(0, dtype=np.int64)

    def index_of(self, state) -> int:
        """Row of ``state``; ``KeyError`` when it is not a state of the table."""
        try:
            row = np.asarray([tuple(state)], dtype=np.int64)
            key = self.codec.encode(row)[0]
        except (TypeError, ValueError, OverflowError, IndexError):
            raise KeyError(state) from None
        i = int(np.searchsorted(self.keys, key))
        if i < len(self.keys) and self.keys[i] == key and tuple(self.codec.decode(self.keys[i : i + 1])[0]) == tuple(state):
            return i
        raise KeyError(state)

    def __contains__(self, state) -> bool:
        try:
            self.index_of(state)
            return True
        except KeyError:
            return False

    def __repr__(self) -> str:
        return f"StateTable({len(self)} states)"


class KeyIndex(Mapping):
    """``state -> index`` over a :class:`StateTable`, without a dict entry per state."""

    def __init__(self, table: StateTable):
        self.table = table

    def __getitem__(self, state) -> int:
        return self.table.index_of(state)

    def __iter__(self):
        return iter(self.table)

    def __len__(self) -> int:
        return len(self.table)


class GridCodec:
    """Picklable ``encode``/``decode`` for ``(step, pos_0, ..)`` rows with positions < cells."""

    def __init__(self, cells: int, agents: int):
        self.cells, self.agents = int(cells), int(agents)

    def encode(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.shape[1] != 1 + self.agents or (rows[:, 1:] >= self.cells).any() or (rows < 0).any():
            raise ValueError("not a state of this world")
        key = rows[:, 0].copy()
        for i in range(1, rows.shape[1]):
            key = key * self.cells + rows[:, i]
        return key

    def steps(self, keys: np.ndarray) -> np.ndarray:
        """The step (first element) of each key, without decoding the rest."""
        return np.asarray(keys, dtype=np.int64) // self.cells**self.agents

    def decode(self, keys: np.ndarray) -> np.ndarray:
        out = np.empty((len(keys), 1 + self.agents), dtype=np.int64)
        rest = np.asarray(keys, dtype=np.int64)
        for i in range(self.agents, 0, -1):
            rest, out[:, i] = np.divmod(rest, self.cells)
        out[:, 0] = rest
        return out
