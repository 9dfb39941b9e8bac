"""A seed slot and the seed lifecycle.

Lifecycle (stages are also the integer codes used in observations and telemetry)::

    DORMANT -> GERMINATED -> TRAINING -> BLENDING -> PROBATIONARY -> FOSSILIZED
                  \\____________\\___________\\____________\\-> CULLED (-> DORMANT)

* GERMINATED / TRAINING: the seed sees a *detached* copy of the host features and its
  output is added straight-through (``h + (d - d.detach())``): the forward value equals
  the host's, the host gets no gradient from the seed, and the seed gets the gradient it
  would get at alpha = 1. The seed learns without disturbing the host.
* BLENDING: ``h + alpha * d(h)`` with alpha rising on a linear or sigmoid schedule.
* PROBATIONARY: alpha = 1; the counterfactual contribution decides fossilise or cull.
* FOSSILIZED: alpha = 1 for good; the seed's parameters are frozen and its optimizer dropped.
* CULLED: the seed and its optimizer are dropped and the slot is DORMANT again.

Gate thresholds live in :data:`GATES` (documented in docs/esper-multigpu.md).
"""

from __future__ import annotations

import enum
import math
from dataclasses import asdict, dataclass, field

import torch
from torch import nn

from ..config import BLEND_SCHEDULES, Gates
from .blueprints import build_seed


class SeedStage(enum.IntEnum):
    DORMANT = 0
    GERMINATED = 1
    TRAINING = 2
    BLENDING = 3
    PROBATIONARY = 4
    FOSSILIZED = 5
    CULLED = 6


LIVE_STAGES = (SeedStage.GERMINATED, SeedStage.TRAINING, SeedStage.BLENDING, SeedStage.PROBATIONARY)


GATES = Gates()


class GateError(RuntimeError):
    """A lifecycle transition that the gates refuse (e.g. fossilising a harmful seed)."""


def blend_alpha(schedule: str, progress: float) -> float:
    """Alpha at ``progress`` in [0, 1] of the blend: linear, or a sigmoid pinned to 0 and 1."""
    p = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return p
    if schedule == "sigmoid":
        s = lambda t: 1.0 / (1.0 + math.exp(-10.0 * (t - 0.5)))  # noqa: E731
        return (s(p) - s(0.0)) / (s(1.0) - s(0.0))
    raise ValueError(
        f"unknown blend schedule {schedule!r}; choose from {', '.join(BLEND_SCHEDULES)}"
    )


@dataclass
class SlotTelemetry:
    """What the trainer measured about one slot's seed during the last epoch."""

    grad_norm: float = 0.0
    grad_health: float = 0.0
    vanishing: bool = False
    exploding: bool = False
    accuracy: float = 0.0  # validation accuracy with this seed at alpha = 1 (functional override)
    accuracy_delta: float = 0.0
    contribution: float = 0.0  # val acc(current alphas) - val acc(this slot's alpha = 0)

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class SlotState:
    stage: SeedStage = SeedStage.DORMANT
    blueprint: str | None = None
    blend: str = "linear"
    alpha: float = 0.0
    epochs_in_stage: int = 0
    germinated_epoch: int = -1
    seed_params: int = 0
    telemetry: SlotTelemetry = field(default_factory=SlotTelemetry)


class SeedSlot(nn.Module):
    """One place in the host where a seed can grow; owns the seed and its optimizer."""

    def __init__(self, name: str, channels: int, spatial: tuple[int, int], gates: Gates = GATES):
        super().__init__()
        self.name = name
        self.channels = channels
        self.spatial = spatial
        self.gates = gates
        self.seed: nn.Module | None = None
        self.optimizer: torch.optim.Optimizer | None = None
        self.state = SlotState()

    # ----------------------------------------------------------------- forward
    def forward(self, h: torch.Tensor, alpha_override: float | None = None) -> torch.Tensor:
        """Host features plus this seed's contribution.

        ``alpha_override`` replaces the slot's alpha for this call only (the functional
        counterfactual): nothing on the module changes.
        """
        stage = self.state.stage
        if self.seed is None or stage in (SeedStage.DORMANT, SeedStage.CULLED):
            return h
        isolated = stage in (SeedStage.GERMINATED, SeedStage.TRAINING)
        if alpha_override is None and isolated:
            delta = self.seed(h.detach())
            return h + (delta - delta.detach())  # value == h; seed still gets d(loss)/d(out)
        alpha = self.state.alpha if alpha_override is None else float(alpha_override)
        if alpha == 0.0:
            return h
        delta = self.seed(h.detach() if isolated else h)
        return h + alpha * delta

    # --------------------------------------------------------------- lifecycle
    @property
    def stage(self) -> SeedStage:
        return self.state.stage

    @property
    def is_empty(self) -> bool:
        return self.state.stage == SeedStage.DORMANT

    @property
    def is_live(self) -> bool:
        return self.state.stage in LIVE_STAGES

    def can_cull(self) -> bool:
        """Whether a controller may cull this seed now: the mirror of the G4 gate. A
        measured seed may be culled when it hurts (counterfactual contribution below 0
        while BLENDING) or, at alpha = 1 (PROBATIONARY), when its contribution is not
        above ``min_contribution``; a seed stuck in isolation (still TRAINING after
        ``min_training_epochs``: G2 failed) may be culled. A seed still in isolation has
        changed nothing yet, and culling one that helps only destroys what it added."""
        st = self.state
        if st.stage == SeedStage.BLENDING:
            return st.telemetry.contribution < 0.0
        if st.stage == SeedStage.PROBATIONARY:
            return st.telemetry.contribution <= self.gates.min_contribution
        return (
            st.stage == SeedStage.TRAINING and st.epochs_in_stage >= self.gates.min_training_epochs
        )

    def seed_parameters(self) -> list[nn.Parameter]:
        return [] if self.seed is None else list(self.seed.parameters())

    def germinate(
        self,
        blueprint: str,
        blend: str,
        epoch: int,
        generator: torch.Generator,
        lr: float,
        device: torch.device | str = "cpu",
    ) -> dict:
        """G0: put a new seed of ``blueprint`` into this (empty) slot, with its own optimizer."""
        if not self.is_empty:
            raise GateError(f"slot {self.name} is {self.stage.name}, not DORMANT: cannot germinate")
        if blend not in BLEND_SCHEDULES:
            raise ValueError(f"unknown blend schedule {blend!r}")
        seed = build_seed(blueprint, self.channels, self.spatial, generator).to(device)
        self.seed = seed
        params = [p for p in seed.parameters() if p.requires_grad]
        # fused: the env skips a non-finite step through `found_inf` without a host sync
        self.optimizer = torch.optim.Adam(params, lr=lr, fused=True) if params else None
        n_params = sum(p.numel() for p in params)
        self.state = SlotState(
            stage=SeedStage.GERMINATED,
            blueprint=blueprint,
            blend=blend,
            germinated_epoch=epoch,
            seed_params=n_params,
        )
        return self._event("germinated", epoch)

    def step_epoch(self, epoch: int) -> list[dict]:
        """Advance the automatic gates (G1..G3) after an epoch; returns lifecycle events."""
        st = self.state
        events: list[dict] = []
        if not self.is_live:
            if st.stage == SeedStage.FOSSILIZED:
                st.epochs_in_stage += 1
            return events
        st.epochs_in_stage += 1
        g = self.gates
        if st.stage == SeedStage.GERMINATED:
            # G1: the seed's parameters are finite after its first isolated epoch
            if all(torch.isfinite(p).all() for p in self.seed_parameters()):
                self._enter(SeedStage.TRAINING)
                events.append(self._event("training", epoch))
            else:
                events.append(self.cull(epoch, reason="non-finite parameters"))
        elif st.stage == SeedStage.TRAINING:
            # G2: long enough in isolation and the gradient signal is healthy
            if (
                st.epochs_in_stage >= g.min_training_epochs
                and st.telemetry.grad_health >= g.min_grad_health
            ):
                self._enter(SeedStage.BLENDING)
                st.alpha = blend_alpha(st.blend, 1.0 / g.blend_epochs)
                events.append(self._event("blending", epoch))
        elif st.stage == SeedStage.BLENDING:
            # G3: the schedule has reached alpha = 1
            progress = (st.epochs_in_stage + 1) / g.blend_epochs
            if progress >= 1.0:
                self._enter(SeedStage.PROBATIONARY)
                st.alpha = 1.0
                events.append(self._event("probationary", epoch))
            else:
                st.alpha = blend_alpha(st.blend, progress)
        return events

    def can_fossilize(self) -> bool:
        st = self.state
        return (
            st.stage == SeedStage.PROBATIONARY
            and st.epochs_in_stage >= self.gates.min_probation_epochs
            and st.telemetry.contribution > self.gates.min_contribution
        )

    def fossilize(self, epoch: int) -> dict:
        """G4: make the seed permanent (alpha = 1, parameters frozen, optimizer dropped)."""
        st = self.state
        if st.stage != SeedStage.PROBATIONARY:
            raise GateError(
                f"slot {self.name} is {st.stage.name}: only PROBATIONARY seeds fossilise"
            )
        if not self.can_fossilize():
            raise GateError(
                f"slot {self.name}: fossilise refused (contribution {st.telemetry.contribution:+.4f} "
                f"must exceed {self.gates.min_contribution} after {self.gates.min_probation_epochs} "
                f"probation epoch(s); has {st.epochs_in_stage})"
            )
        for p in self.seed_parameters():
            p.requires_grad_(False)
        self.optimizer = None
        self._enter(SeedStage.FOSSILIZED)
        st.alpha = 1.0
        return self._event("fossilized", epoch)

    def cull(self, epoch: int, reason: str = "controller") -> dict:
        """Remove a live seed (any stage from GERMINATED to PROBATIONARY); the slot is DORMANT again."""
        if not self.is_live:
            raise GateError(f"slot {self.name} is {self.stage.name}: only live seeds can be culled")
        event = self._event("culled", epoch)
        event["reason"] = reason
        self.seed = None
        self.optimizer = None
        self.state = SlotState()
        return event

    def clear(self) -> None:
        """Drop whatever the slot holds (used when an environment resets its host)."""
        self.seed = None
        self.optimizer = None
        self.state = SlotState()

    def progress(self) -> float:
        """How far the seed is through its current stage, in [0, 1]."""
        st, g = self.state, self.gates
        if st.stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
            return min(1.0, st.epochs_in_stage / max(1, g.min_training_epochs))
        if st.stage == SeedStage.BLENDING:
            return st.alpha
        if st.stage == SeedStage.PROBATIONARY:
            return min(1.0, st.epochs_in_stage / max(1, g.min_probation_epochs))
        if st.stage == SeedStage.FOSSILIZED:
            return 1.0
        return 0.0

    def _enter(self, stage: SeedStage) -> None:
        self.state.stage = stage
        self.state.epochs_in_stage = 0

    def _event(self, kind: str, epoch: int) -> dict:
        st = self.state
        return {
            "event": kind,
            "slot": self.name,
            "epoch": epoch,
            "blueprint": st.blueprint,
            "blend": st.blend,
            "stage": st.stage.name,
            "alpha": st.alpha,
            "contribution": st.telemetry.contribution,
            "seed_params": st.seed_params,
        }
