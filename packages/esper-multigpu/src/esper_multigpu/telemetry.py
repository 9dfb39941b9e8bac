"""Telemetry: one versioned JSONL schema for runs, epochs, slots, lifecycle events and batches.

Every line is a JSON object with ``schema`` (= :data:`SCHEMA_VERSION`) and ``type``. The
fields of each type are listed in :data:`SCHEMA` (name -> allowed JSON types; every field
is required, ``None`` in the types means the value may be null). :func:`validate_record`
checks a record, :func:`validate_file` a whole file; ``esper telemetry validate FILE``
does the same from the shell. The sink validates every record before writing it.

The file survives the run: each record is appended and flushed as it is written (``tail
-f`` follows a run), so Ctrl-C, SIGTERM or a crash lose nothing written before; the run
ends with an ``end`` record saying how (completed, interrupted, terminated, crashed). A
resumed run appends to the file; a fresh run moves an existing file aside
(``ppo.jsonl`` -> ``ppo.1.jsonl``) instead of overwriting it. TensorBoard scalars go
beside it (``<dir>/tb/<name>``) when the ``tensorboard`` package is installed.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

SCHEMA_VERSION = "esper.telemetry/2"

_num = (int, float)
_int = (int,)
_str = (str,)
_bool = (bool,)
_opt = lambda *t: tuple(x for tt in t for x in tt) + (type(None),)  # noqa: E731

_KEYS = {"schema": _str, "type": _str}
_WHERE = {"batch": _int, "env": _int, "episode": _int, "device": _str, "epoch": _int}

SCHEMA: dict[str, dict[str, tuple]] = {
    "run": {
        **_KEYS,
        "mode": _str,
        "task": _str,
        "devices": (list,),
        "assignment": (dict,),
        "policy_device": _opt(_str),
        "n_envs": _int,
        "episodes": _int,
        "max_epochs": _int,
        "slots": (list,),
        "amp": _str,
        "amp_effective": (dict,),
        "seed": _int,
        "obs_dim": _int,
        "start_batch": _int,
        "start_episode": _int,
        "resumed_from": _opt(_str),
    },
    "epoch": {
        **_KEYS,
        **_WHERE,
        "train_loss": _num,
        "val_loss": _num,
        "train_acc": _num,
        "val_acc": _num,
        "shadow_acc": _opt(_num),
        "added_acc": _num,
        "plateau_epochs": _int,
        "host_params": _int,
        "seed_params": _int,
        "skipped_steps": _int,
        "actions": (list,),
        "reward": _opt(_num),
        "reward_parts": _opt((dict,)),
    },
    "slot": {
        **_KEYS,
        **_WHERE,
        "slot": _str,
        "enabled": _bool,
        "stage": _str,
        "blueprint": _opt(_str),
        "blend": _str,
        "alpha": _num,
        "epochs_in_stage": _int,
        "progress": _num,
        "grad_norm": _num,
        "grad_health": _num,
        "vanishing": _bool,
        "exploding": _bool,
        "accuracy": _num,
        "accuracy_delta": _num,
        "contribution": _num,
    },
    "lifecycle": {
        **_KEYS,
        **_WHERE,
        "event": _str,
        "slot": _str,
        "blueprint": _opt(_str),
        "blend": _str,
        "stage": _str,
        "alpha": _num,
        "contribution": _num,
        "seed_params": _int,
        "reason": _opt(_str),
    },
    "batch": {
        **_KEYS,
        "batch": _int,
        "n_envs": _int,
        "episodes": (list,),
        "returns": (list,),
        "final_val_acc": (list,),
        "added_acc": (list,),
        "seed_params": (list,),
        "mean_return": _num,
        "mean_final_val_acc": _num,
        "stage_counts": (dict,),
        "events": (dict,),
        "skipped_steps": _int,
        "env_epochs": _int,
        "wall_s": _num,
        "env_epochs_per_s": _num,
        "ppo": _opt((dict,)),
    },
    # --keep-policy val: one validation of the policy after ``batch`` updates on the
    # validation hosts (episodes ``first_episode`` ..), and the batch kept so far
    "validation": {
        **_KEYS,
        "batch": _int,
        "first_episode": _int,
        "episodes": _int,
        "policy": _str,
        "mean_return": _num,
        "mean_val_acc": _num,
        "added_params": _num,
        "returns": (list,),
        "val_acc": (list,),
        "kept_batch": _int,
        "wall_s": _num,
    },
    # the policy a run kept (at its end): rule, batch (its number of updates), scores, file
    "kept": {
        **_KEYS,
        "rule": _str,
        "batch": _opt(_int),
        "return": _opt(_num),
        "val_acc": _opt(_num),
        "added_params": _opt(_num),
        "file": _opt(_str),
    },
    "end": {
        **_KEYS,
        "status": _str,
        "episodes_done": _int,
        "error": _opt(_str),
    },
}
END_STATUS = ("completed", "interrupted", "terminated", "crashed")

EVENTS = ("germinated", "training", "blending", "probationary", "fossilized", "culled")
STAGES = ("DORMANT", "GERMINATED", "TRAINING", "BLENDING", "PROBATIONARY", "FOSSILIZED", "CULLED")


def validate_record(rec: object) -> list[str]:
    """Problems with one record (empty list = valid)."""
    if not isinstance(rec, dict):
        return ["record is not a JSON object"]
    if rec.get("schema") != SCHEMA_VERSION:
        return [f"schema is {rec.get('schema')!r}, expected {SCHEMA_VERSION!r}"]
    kind = rec.get("type")
    if kind not in SCHEMA:
        return [f"unknown record type {kind!r} (known: {', '.join(SCHEMA)})"]
    fields = SCHEMA[kind]
    errors = []
    for name, types in fields.items():
        if name not in rec:
            errors.append(f"{kind}: missing field {name!r}")
            continue
        value = rec[name]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok:
            errors.append(f"{kind}.{name}: {type(value).__name__} not allowed")
        elif isinstance(value, float) and not math.isfinite(value):
            errors.append(f"{kind}.{name}: non-finite number")
    for name in rec:
        if name not in fields:
            errors.append(f"{kind}: unexpected field {name!r}")
    if kind in ("slot", "lifecycle") and rec.get("stage") not in STAGES:
        errors.append(f"{kind}.stage: {rec.get('stage')!r} is not a stage")
    if kind == "end" and rec.get("status") not in END_STATUS:
        errors.append(f"end.status: {rec.get('status')!r} is not one of {', '.join(END_STATUS)}")
    if kind == "lifecycle" and rec.get("event") not in EVENTS:
        errors.append(f"lifecycle.event: {rec.get('event')!r} is not an event")
    return errors


def validate_file(path: str | os.PathLike) -> tuple[int, list[str]]:
    """(number of records, problems with line numbers) for a telemetry JSONL file."""
    errors: list[str] = []
    n = 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            n += 1
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                errors.append(f"line {lineno}: not JSON ({exc.msg})")
                continue
            errors.extend(f"line {lineno}: {e}" for e in validate_record(rec))
    return n, errors


def read_records(path: str | os.PathLike) -> list[dict]:
    """Every parseable record of a telemetry file (a torn last line is skipped)."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def _set_aside(path: Path) -> Path | None:
    """Move an existing non-empty ``path`` to the first free ``<stem>.<k><suffix>``."""
    if not path.exists() or path.stat().st_size == 0:
        return None
    k = 1
    while (aside := path.with_name(f"{path.stem}.{k}{path.suffix}")).exists():
        k += 1
    os.replace(path, aside)
    return aside


class TelemetrySink:
    """Appends validated records to ``<dir>/<name>.jsonl``, flushed one by one.

    ``append=False`` (a fresh run) moves an existing file aside first; ``append=True``
    (``--resume``) continues it. On leaving the ``with`` block the sink writes an ``end``
    record whose status says how the run ended (an exception's type decides), and closes
    the file: what was written stays written.
    """

    def __init__(
        self,
        directory: str | os.PathLike | None,
        name: str,
        append: bool = False,
        tensorboard: bool = False,
    ):
        self.path = None if directory is None else Path(directory) / f"{name}.jsonl"
        self.tb_dir = None if directory is None or not tensorboard else Path(directory) / "tb" / name
        self.append = append
        self.set_aside: Path | None = None
        self._file = None
        self._tb = None
        self.counts: dict[str, int] = {}
        self.episodes_done = 0

    def __enter__(self) -> TelemetrySink:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.append:
                self.set_aside = _set_aside(self.path)
            self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in __exit__
            if self.tb_dir is not None:
                try:
                    from torch.utils.tensorboard import SummaryWriter
                except ImportError:  # tensorboard not installed: JSONL only
                    self._tb = None
                else:
                    self._tb = SummaryWriter(str(self.tb_dir))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            status, error = "completed", None
        elif issubclass(exc_type, KeyboardInterrupt):
            status, error = "interrupted", None
        elif exc_type.__name__ == "Terminated":  # parallel_core.cli: SIGTERM
            status, error = "terminated", None
        else:
            status, error = "crashed", f"{exc_type.__name__}: {exc}"
        try:
            self.write("end", status=status, episodes_done=self.episodes_done, error=error)
        finally:
            if self._file is not None:
                self._file.close()
                self._file = None
            if self._tb is not None:
                self._tb.close()
                self._tb = None
        return False

    def write(self, kind: str, **fields) -> dict:
        rec = {"schema": SCHEMA_VERSION, "type": kind, **fields}
        errors = validate_record(rec)
        if errors:
            raise ValueError(
                f"telemetry record does not match {SCHEMA_VERSION}: {'; '.join(errors)}"
            )
        self.counts[kind] = self.counts.get(kind, 0) + 1
        if self._file is not None:
            self._file.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self._file.flush()  # one record at a time: `tail -f` sees it, a kill keeps it
        if self._tb is not None and kind == "batch":
            self._scalars(rec)
        return rec

    def _scalars(self, rec: dict) -> None:
        """TensorBoard: per-episode return, accuracy, added accuracy and seed parameters;
        per-batch PPO statistics (x axis: episode index)."""
        for ep, ret, acc, added, params in zip(
            rec["episodes"], rec["returns"], rec["final_val_acc"], rec["added_acc"], rec["seed_params"]
        ):
            self._tb.add_scalar("episode/return", ret, ep)
            self._tb.add_scalar("episode/val_acc", acc, ep)
            self._tb.add_scalar("episode/added_acc", added, ep)
            self._tb.add_scalar("episode/seed_params", params, ep)
        last = rec["episodes"][-1]
        self._tb.add_scalar("batch/env_epochs_per_s", rec["env_epochs_per_s"], last)
        for k, v in (rec.get("ppo") or {}).items():
            if isinstance(v, int | float) and not isinstance(v, bool):
                self._tb.add_scalar(f"ppo/{k}", v, last)
        self._tb.flush()
