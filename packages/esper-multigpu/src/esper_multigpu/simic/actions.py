"""The factored action space and its masks.

An action is four categorical choices: ``op`` (WAIT, GERMINATE, CULL, FOSSILIZE), ``slot``,
``blueprint`` and ``blend``. ``slot`` matters for every op except WAIT; ``blueprint`` and
``blend`` only for GERMINATE. Masks remove what is physically impossible *now*:
germinating into an occupied or disabled slot, culling an empty slot, fossilising a seed
that is not through its probation gate (G4), and culling a seed that helps: CULL is the
mirror of G4 (:meth:`SeedSlot.can_cull`), allowed for a BLENDING seed that hurts
(contribution < 0), a PROBATIONARY seed that fails G4 and a seed stuck in TRAINING (G2
failed); a seed still in isolation has changed nothing yet. The ``noop`` blueprint (an
identity seed, kept for tests) is not offered unless asked for (``blueprints``):
germinating it only fills a slot.
"""

from __future__ import annotations

import numpy as np

from ..kasmina.blueprints import BLUEPRINT_NAMES
from ..kasmina.host import SLOT_NAMES
from ..kasmina.slot import BLEND_SCHEDULES, SeedSlot, SeedStage
from ..tolaria.env import Action

OPS: tuple[str, ...] = ("WAIT", "GERMINATE", "CULL", "FOSSILIZE")
HEAD_SIZES = {
    "op": len(OPS),
    "slot": len(SLOT_NAMES),
    "blueprint": len(BLUEPRINT_NAMES),
    "blend": len(BLEND_SCHEDULES),
}


def action_masks(
    slots: dict[str, SeedSlot],
    enabled: tuple[str, ...],
    max_seeds: int | None = None,
    blueprints: list[str] | tuple[str, ...] | None = None,
) -> dict[str, np.ndarray]:
    """Boolean masks: ``op`` (4,), ``slot_by_op`` (4, 3), ``blueprint`` (6,), ``blend`` (2,).

    ``max_seeds``: no GERMINATE while that many seeds are live or fossilised (the budget);
    ``blueprints``: the blueprints on offer (default: all but ``noop``).
    """
    slot_by_op = np.zeros((len(OPS), len(SLOT_NAMES)), dtype=bool)
    n_seeds = sum(1 for s in slots.values() if s.is_live or s.stage == SeedStage.FOSSILIZED)
    budget_left = max_seeds is None or n_seeds < max_seeds
    for k, name in enumerate(SLOT_NAMES):
        slot = slots[name]
        if name not in enabled:
            continue
        slot_by_op[1, k] = slot.is_empty and budget_left
        slot_by_op[2, k] = slot.can_cull()
        slot_by_op[3, k] = slot.can_fossilize()
    op = np.array([True, *slot_by_op[1:].any(axis=1)])
    slot_by_op[0, :] = True  # WAIT ignores the slot head; any value is fine and carries no weight
    return {
        "op": op,
        "slot_by_op": slot_by_op,
        "blueprint": np.array(
            [b in blueprints if blueprints is not None else b != "noop" for b in BLUEPRINT_NAMES]
        ),
        "blend": np.ones(len(BLEND_SCHEDULES), dtype=bool),
    }


def decode_action(op: int, slot: int, blueprint: int, blend: int) -> Action:
    name = OPS[op]
    if name == "WAIT":
        return Action("WAIT")
    if name == "GERMINATE":
        return Action(name, SLOT_NAMES[slot], BLUEPRINT_NAMES[blueprint], BLEND_SCHEDULES[blend])
    return Action(name, SLOT_NAMES[slot])


def encode_action(action: Action) -> tuple[int, int, int, int]:
    return (
        OPS.index(action.op),
        SLOT_NAMES.index(action.slot) if action.slot else 0,
        BLUEPRINT_NAMES.index(action.blueprint) if action.blueprint else 0,
        BLEND_SCHEDULES.index(action.blend) if action.blend else 0,
    )
