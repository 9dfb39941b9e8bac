"""The human policy prior: result object, save to ``.npz``, ``load_prior``.

File layout (``numpy.savez``, no pickles unless states are not integer tuples):

* ``states``: ``(N, L)`` int64 (or an object array of tuples), topological order;
* ``terminal``: ``(N,)`` bool;
* ``policy``: ``(N, goals, actions)`` float (NaN rows for terminal states);
* ``values``: ``(N, goals)`` float;
* ``goal_ids``, ``goal_humans``, ``goal_weights``: one entry per goal column;
* ``state_goal_weights``: ``(N, goals)`` (only when the goals depend on the state: the
  weight of each goal in each state, 0 where the state does not generate it);
* ``meta``: a JSON string (world, parameters, goal labels, run summary, mode).

:func:`load_prior` never unpickles unless asked (``allow_pickle=True``): a prior whose
states are not integer tuples stores them pickled, and unpickling a file from someone
else can run arbitrary code.
"""

from __future__ import annotations

import json
import os

import numpy as np

FORMAT_VERSION = 1


class HumanPolicyPrior:
    """Answers ``prior(state, h, goal)`` -> action probabilities; ``prior(state, h)`` -> marginal.

    ``goal`` is a goal object (matched by its ``goal_id``, else by equality, or by its
    ``label()`` in a loaded prior) or an integer goal id. The marginal weighs each goal of human ``h`` by its generator weight. For a
    terminal state there is no policy: ``None`` is returned.
    """

    def __init__(
        self,
        states: list,
        terminal: np.ndarray,
        policy: np.ndarray,
        values: np.ndarray,
        goal_ids: np.ndarray,
        goal_humans: np.ndarray,
        goal_weights: np.ndarray,
        meta: dict | None = None,
        goals: list | None = None,
        state_goal_weights: np.ndarray | None = None,
    ):
        self.states = states
        self._index = None  # state -> row, built on first use (a StateTable searches instead)
        self.terminal = np.asarray(terminal, dtype=bool)
        self.policy = policy
        self.values = values
        self.goal_ids = np.asarray(goal_ids, dtype=np.int64)
        self.goal_humans = np.asarray(goal_humans, dtype=np.int64)
        self.goal_weights = np.asarray(goal_weights, dtype=np.float64)
        self.meta = meta or {}
        self.goals = goals  # goal objects in column order (in-memory results only)
        self.state_goal_weights = state_goal_weights
        self.human_agent_indices = sorted(set(self.goal_humans.tolist()))
        self.dag = None
        self.timings: dict = {}
        # policy_on="none" (nothing written): the root's (row 0) policy rows only
        self.root_policy: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.states)

    @property
    def state_to_idx(self):
        """``state -> row`` (a dict, or a binary search over compact states)."""
        if self._index is None:
            if hasattr(self.states, "index_of"):
                from .states import KeyIndex

                self._index = KeyIndex(self.states)
            else:
                self._index = {s: i for i, s in enumerate(self.states)}
        return self._index

    def _row(self, state) -> int:
        try:
            return self.state_to_idx[
                tuple(state) if isinstance(state, (list, np.ndarray)) else state
            ]
        except KeyError:
            raise KeyError(
                f"state {state!r} is not in the prior (not reachable from the root)"
            ) from None

    def goal_column(self, human_agent_index: int, goal) -> int:
        """Column of ``goal`` (object or goal id) for human ``human_agent_index``."""
        goal_id = goal if isinstance(goal, (int, np.integer)) else getattr(goal, "goal_id", None)
        cols = np.flatnonzero(self.goal_humans == human_agent_index)
        if goal_id is None and self.goals is not None:
            for c in cols:
                if self.goals[c] == goal:
                    return int(c)
        labels = self.meta.get("goal_labels")
        if goal_id is None and self.goals is None and labels and hasattr(goal, "label"):
            # A loaded prior has no goal objects: match a fresh goal by its stored label.
            hit = [c for c in cols if labels[c] == goal.label()]
            if len(hit) == 1:
                return int(hit[0])
        hit = cols[self.goal_ids[cols] == goal_id] if goal_id is not None else cols[:0]
        if not hit.size:
            raise KeyError(f"goal {goal!r} is not a goal of human {human_agent_index}")
        return int(hit[0])

    def __call__(self, state, human_agent_index: int, possible_goal=None) -> np.ndarray | None:
        i = self._row(state)
        if self.terminal[i]:
            return None
        if self.policy is not None:
            policy = self.policy[i]
        elif i == 0 and self.root_policy is not None:
            policy = self.root_policy
        else:
            raise RuntimeError(
                "this prior holds no policies here (MPI: they are gathered on rank 0; "
                "policy_on='none': only the root's); query the prior on rank 0, or "
                "compute it with policy_on='root' or 'all'"
            )
        if possible_goal is not None:
            c = self.goal_column(human_agent_index, possible_goal)
            if self.state_goal_weights is not None and not self.state_goal_weights[i, c] > 0:
                raise KeyError(f"goal {possible_goal!r} is not a goal of this state")
            return np.asarray(policy[c], dtype=np.float64)
        cols = np.flatnonzero(self.goal_humans == human_agent_index)
        if not cols.size:
            raise KeyError(
                f"agent {human_agent_index} has no prior (humans: {self.human_agent_indices})"
            )
        if self.state_goal_weights is not None:
            w = self.state_goal_weights[i, cols]
            cols, w = cols[w > 0], w[w > 0]
        else:
            w = self.goal_weights[cols]
        return (w[:, None] * policy[cols].astype(np.float64)).sum(axis=0) / w.sum()

    def value(self, state, human_agent_index: int, goal) -> float:
        """``V_h(state, goal)``."""
        return float(self.values[self._row(state), self.goal_column(human_agent_index, goal)])

    def goal_labels(self) -> list[str]:
        """Human-readable goal descriptions, in goal-column order."""
        return list(self.meta.get("goal_labels", []))

    def save(self, path: str | os.PathLike) -> None:
        """Write the prior atomically (temp file + rename) as ``.npz``."""
        from parallel_core.io import atomic_write

        if self.policy is None:
            raise ValueError("this prior holds no policies (policy_on='none', or an MPI rank other than 0): nothing to save")
        arr = _states_array(self.states)
        meta = dict(self.meta)
        meta["format_version"] = FORMAT_VERSION
        extra = {}
        if self.state_goal_weights is not None:
            extra["state_goal_weights"] = self.state_goal_weights
        with atomic_write(path, "wb") as f:
            np.savez(
                f,
                states=arr,
                terminal=self.terminal,
                policy=self.policy,
                values=self.values,
                goal_ids=self.goal_ids,
                goal_humans=self.goal_humans,
                goal_weights=self.goal_weights,
                meta=np.array(json.dumps(meta)),
                **extra,
            )


def _states_array(states) -> np.ndarray:
    if hasattr(states, "array"):  # a StateTable
        return states.array()
    try:
        arr = np.array(states, dtype=np.int64)
        if arr.ndim == 2 and all(type(s) is tuple for s in states[:1]):
            return arr
    except (ValueError, TypeError, OverflowError):
        pass
    out = np.empty(len(states), dtype=object)
    for i, s in enumerate(states):  # element-wise: numpy would unpack equal-length tuples
        out[i] = s
    return out


class PriorFileError(ValueError):
    """The file is not a readable prior (garbage, truncated, wrong format, pickled states)."""


_REQUIRED = ("states", "terminal", "policy", "values", "goal_ids", "goal_humans", "goal_weights", "meta")


def load_prior(path: str | os.PathLike, *, allow_pickle: bool = False) -> HumanPolicyPrior:
    """Read a prior written by :meth:`HumanPolicyPrior.save` (or ``empo-prior --output``).

    Nothing is unpickled unless ``allow_pickle=True`` (needed only for priors whose states
    are not integer tuples, and only for files you trust). A file that is not a prior,
    or is truncated, raises :class:`PriorFileError` with one clear line.
    """
    import zipfile

    name = os.fspath(path)
    with open(name, "rb") as f:  # FileNotFoundError/PermissionError propagate as they are
        magic = f.read(4)
    if magic != b"PK\x03\x04":  # an .npz is a zip file
        raise PriorFileError(
            f"{name} is not a readable prior (not an .npz file; write priors with "
            "empo-prior --output or HumanPolicyPrior.save)"
        )
    try:
        with np.load(name, allow_pickle=allow_pickle) as z:
            if not hasattr(z, "files"):
                raise PriorFileError(f"{name} is a single .npy array, not a prior (.npz)")
            missing = [k for k in _REQUIRED if k not in z.files]
            if missing:
                raise PriorFileError(
                    f"{name} is an .npz file but not a prior: it lacks {missing} "
                    "(write priors with empo-prior --output or HumanPolicyPrior.save)"
                )
            fields = {k: z[k] for k in z.files}
    except PriorFileError:
        raise
    except FileNotFoundError:
        raise
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise PriorFileError(
                f"{name} stores its states with pickle (they are not integer tuples); "
                "unpickling can run code from the file: pass allow_pickle=True only for a "
                "file you trust"
            ) from None
        raise PriorFileError(f"{name} is not a readable prior: {exc}") from None
    except (zipfile.BadZipFile, EOFError, OSError, KeyError) as exc:
        raise PriorFileError(
            f"{name} is not a readable prior (truncated or not an .npz file: {exc})"
        ) from None
    try:
        meta = json.loads(str(fields["meta"]))
    except json.JSONDecodeError:
        raise PriorFileError(f"{name}: the prior's metadata is not valid JSON") from None
    states_arr = fields["states"]
    if states_arr.dtype == object:
        states = [tuple(s) if isinstance(s, list) else s for s in states_arr.tolist()]
    else:
        states = [tuple(row) for row in states_arr.tolist()]
    N = len(states)
    policy, values = fields["policy"], fields["values"]
    if policy.shape[:1] != (N,) or values.shape[:1] != (N,) or len(fields["terminal"]) != N:
        raise PriorFileError(f"{name}: array lengths disagree; the file is damaged")
    return HumanPolicyPrior(
        states,
        fields["terminal"],
        policy,
        values,
        fields["goal_ids"],
        fields["goal_humans"],
        fields["goal_weights"],
        meta,
        state_goal_weights=fields.get("state_goal_weights"),
    )
