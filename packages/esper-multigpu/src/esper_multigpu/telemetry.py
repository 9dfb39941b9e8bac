"""Telemetry: one versioned JSONL schema for runs, epochs, slots, lifecycle events and batches.

Every line is a JSON object with ``schema`` (= :data:`SCHEMA_VERSION`) and ``type``. The
fields of each type are listed in :data:`SCHEMA` (name -> allowed JSON types; every field
is required, ``None`` in the types means the value may be null). :func:`validate_record`
checks a record, :func:`validate_file` a whole file; ``esper telemetry validate FILE``
does the same from the shell. The sink validates every record before writing it.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from parallel_core.io import atomic_write

SCHEMA_VERSION = "esper.telemetry/1"

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
        "seed": _int,
        "obs_dim": _int,
        "start_batch": _int,
    },
    "epoch": {
        **_KEYS,
        **_WHERE,
        "train_loss": _num,
        "val_loss": _num,
        "train_acc": _num,
        "val_acc": _num,
        "plateau_epochs": _int,
        "host_params": _int,
        "seed_params": _int,
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
        "returns": (list,),
        "final_val_acc": (list,),
        "mean_return": _num,
        "mean_final_val_acc": _num,
        "stage_counts": (dict,),
        "events": (dict,),
        "env_epochs": _int,
        "wall_s": _num,
        "env_epochs_per_s": _num,
        "ppo": _opt((dict,)),
    },
}

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


class TelemetrySink:
    """Writes validated records to ``<dir>/<name>.jsonl``; the file appears complete or not at all."""

    def __init__(self, directory: str | os.PathLike | None, name: str):
        self.path = None if directory is None else Path(directory) / f"{name}.jsonl"
        self._ctx = None
        self._file = None
        self.counts: dict[str, int] = {}

    def __enter__(self) -> TelemetrySink:
        if self.path is not None:
            self._ctx = atomic_write(self.path, "w", encoding="utf-8")
            self._file = self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> bool:
        if self._ctx is not None:
            self._ctx.__exit__(*exc)
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
        return rec
