"""One environment: a fresh host trained for ``max_epochs`` while a controller grows seeds in it.

The environment owns a persistent model, a persistent CUDA stream and (for fp16) its own
GradScaler. ``reset`` re-initialises the model in place for the next episode, so a device
keeps the same allocations from batch to batch instead of fragmenting its memory.
Training is split into ``begin_epoch`` / ``train_batch`` / ``end_epoch`` so the vectorised
loop can interleave the batches of every environment on a device across their streams.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..kasmina.host import SLOT_NAMES, MorphogeneticModel
from ..kasmina.slot import GATES, Gates, SeedStage
from ..tamiyo.signals import TrainingSignals

AMP_MODES = ("off", "bf16", "fp16")


@dataclass(frozen=True)
class EnvConfig:
    max_epochs: int = 25
    batch_size: int = 64
    host_lr: float = 1e-3
    seed_lr: float = 1e-3
    width: int = 16
    grad_clip: float = 5.0
    #: validation samples used for the per-slot counterfactual evaluations (all when smaller)
    counterfactual_samples: int = 2048
    eval_chunk: int = 512


@dataclass
class Action:
    """One controller decision. ``op`` is WAIT / GERMINATE / CULL / FOSSILIZE."""

    op: str = "WAIT"
    slot: str | None = None
    blueprint: str | None = None
    blend: str = "linear"


def effective_amp(amp: str, device: str) -> str:
    """The AMP mode that actually applies on ``device``: AMP is CUDA-only, so CPU runs in float32."""
    if amp not in AMP_MODES:
        raise ValueError(f"--amp must be one of {', '.join(AMP_MODES)}, got {amp!r}")
    return amp if device.startswith("cuda") else "off"


class MorphoEnv:
    def __init__(
        self,
        index: int,
        device: str,
        data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        n_classes: int,
        slots: tuple[str, ...] = SLOT_NAMES,
        config: EnvConfig = EnvConfig(),
        amp: str = "off",
        gates: Gates = GATES,
    ):
        self.index = index
        self.device = device
        self.config = config
        self.x_train, self.y_train, self.x_val, self.y_val = data
        self.amp = effective_amp(amp, device)
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.amp)
        self.model = MorphogeneticModel(
            in_channels=self.x_train.shape[1],
            n_classes=n_classes,
            image_size=self.x_train.shape[-1],
            width=config.width,
            enabled_slots=slots,
            gates=gates,
        ).to(device)
        # one stream per environment for its whole life (not one per batch)
        self.stream = torch.cuda.Stream(device=device) if device.startswith("cuda") else None
        if self.stream is not None:
            # the data upload and the model's weights were queued on the default stream
            self.stream.wait_stream(torch.cuda.current_stream(device))
        self.generator = torch.Generator()
        self.scaler: torch.amp.GradScaler | None = None
        self.host_opt: torch.optim.Optimizer | None = None
        self.signals = TrainingSignals(config.max_epochs)
        self.epoch = 0

    # ------------------------------------------------------------------ setup
    def stream_context(self):
        """This env's CUDA stream, or a null context on CPU."""
        return (
            torch.cuda.stream(self.stream) if self.stream is not None else contextlib.nullcontext()
        )

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def reset(self, seed: int) -> None:
        """Start a new episode: fresh host weights from ``seed``, empty slots, new optimizers."""
        self.generator.manual_seed(seed)
        with self.stream_context():
            self.model.reset_(self.generator)
        self.host_opt = torch.optim.Adam(self.model.host_parameters(), lr=self.config.host_lr)
        # fp16 needs loss scaling; the scaler is per env so one env's overflow never skips another's step
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        self.signals = TrainingSignals(self.config.max_epochs)
        self.signals.host_params = self.model.host_param_count()
        self.epoch = 0

    @property
    def n_batches(self) -> int:
        return math.ceil(len(self.x_train) / self.config.batch_size)

    # --------------------------------------------------------------- training
    def begin_epoch(self) -> None:
        self.epoch += 1
        self.model.train()
        perm = torch.randperm(len(self.x_train), generator=self.generator)
        if self.stream is not None:
            perm = perm.pin_memory()  # so the copy below is truly asynchronous
        with self.stream_context():
            self._perm = perm.to(self.device, non_blocking=True)
            zero = lambda: torch.zeros((), device=self.device)  # noqa: E731
            self._loss_sum, self._correct = zero(), zero()
            self._grad = {
                name: {
                    "norm": zero(),
                    "healthy": zero(),
                    "vanish": zero(),
                    "explode": zero(),
                    "n": 0,
                }
                for name in SLOT_NAMES
            }

    def train_batch(self, i: int) -> None:
        """One optimisation step on batch ``i`` of this epoch's permutation (queued on this env's stream)."""
        bs = self.config.batch_size
        with self.stream_context():
            idx = self._perm[i * bs : (i + 1) * bs]
            xb, yb = self.x_train[idx], self.y_train[idx]
            optimizers = [self.host_opt] + [
                s.optimizer for s in self.model.slots.values() if s.optimizer is not None
            ]
            for opt in optimizers:
                opt.zero_grad(set_to_none=True)
            with self.autocast():
                logits = self.model(xb)
            loss = F.cross_entropy(logits.float(), yb)
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                for opt in optimizers:  # unscale before telemetry and clipping read the gradients
                    self.scaler.unscale_(opt)
            else:
                loss.backward()
            self._record_seed_gradients()
            torch.nn.utils.clip_grad_norm_(self.model.host_parameters(), self.config.grad_clip)
            for slot in self.model.slots.values():
                if slot.optimizer is not None:
                    torch.nn.utils.clip_grad_norm_(slot.seed_parameters(), self.config.grad_clip)
            for opt in optimizers:
                if self.scaler is not None:
                    self.scaler.step(opt)
                else:
                    opt.step()
            if self.scaler is not None:
                self.scaler.update()
            self._loss_sum += loss.detach() * len(yb)
            self._correct += (logits.detach().argmax(1) == yb).sum()

    def _record_seed_gradients(self) -> None:
        g: Gates = next(iter(self.model.slots.values())).gates
        for name, slot in self.model.slots.items():
            if slot.optimizer is None:
                continue
            grads = [p.grad for p in slot.seed_parameters() if p.grad is not None]
            acc = self._grad[name]
            acc["n"] += 1
            if not grads:
                acc["vanish"] += 1
                continue
            norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())
            finite = torch.isfinite(norm)
            acc["norm"] += torch.where(finite, norm, torch.zeros_like(norm))
            acc["vanish"] += (norm < g.grad_vanish).float()
            acc["explode"] += ((norm > g.grad_explode) | ~finite).float()
            acc["healthy"] += (finite & (norm >= g.grad_vanish) & (norm <= g.grad_explode)).float()

    def train_epoch(self) -> None:
        """A whole epoch for this env alone (the vectorised loop interleaves instead)."""
        self.begin_epoch()
        for i in range(self.n_batches):
            self.train_batch(i)

    # ------------------------------------------------------------- evaluation
    @torch.no_grad()
    def evaluate(
        self, alpha_override: dict[str, float] | None = None, limit: int | None = None
    ) -> tuple[float, float]:
        """(loss, accuracy) on the validation set, optionally with some slots' alpha overridden."""
        x, y = self.x_val, self.y_val
        if limit is not None:
            x, y = x[:limit], y[:limit]
        was_training = self.model.training
        self.model.eval()
        with self.stream_context():  # accumulators too: everything of this env stays on its stream
            loss_sum = torch.zeros((), device=self.device)
            correct = torch.zeros((), device=self.device)
            for s in range(0, len(x), self.config.eval_chunk):
                xb, yb = x[s : s + self.config.eval_chunk], y[s : s + self.config.eval_chunk]
                with self.autocast():
                    logits = self.model(xb, alpha_override=alpha_override)
                loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
                correct += (logits.argmax(1) == yb).sum()
            loss, acc = (loss_sum / len(y)).item(), (correct / len(y)).item()
        self.model.train(was_training)
        return loss, acc

    def end_epoch(self) -> dict:
        """Validation, per-slot counterfactuals and telemetry, then the automatic lifecycle gates.

        Returns the epoch record: signals, per-slot telemetry and lifecycle events.
        """
        n = len(self.x_train)
        with self.stream_context():
            train_loss = (self._loss_sum / n).item()
            train_acc = (self._correct / n).item()
        val_loss, val_acc = self.evaluate()
        self.signals.update(self.epoch, train_loss, train_acc, val_loss, val_acc)
        self.signals.seed_params = self.model.seed_param_count()

        limit = self.config.counterfactual_samples
        subset_acc = val_acc if len(self.x_val) <= limit else self.evaluate(limit=limit)[1]
        for name, slot in self.model.slots.items():
            st, tel = slot.state, slot.state.telemetry
            if slot.seed is None:
                continue
            acc = self._grad[name]
            if acc["n"]:
                with self.stream_context():
                    tel.grad_norm = (acc["norm"] / acc["n"]).item()
                    tel.grad_health = (acc["healthy"] / acc["n"]).item()
                    tel.vanishing = bool((acc["vanish"] / acc["n"]).item() > 0.5)
                    tel.exploding = bool((acc["explode"] / acc["n"]).item() > 0.0)
            else:
                # a parameterless seed (noop) or a frozen one has no gradient to be unhealthy
                tel.grad_norm, tel.vanishing, tel.exploding = 0.0, False, False
                tel.grad_health = 1.0 if slot.optimizer is None else 0.0
            # seed accuracy: the model with this seed fully on (functional override)
            seed_acc = subset_acc if st.alpha == 1.0 else self.evaluate({name: 1.0}, limit=limit)[1]
            first_measurement = st.stage == SeedStage.GERMINATED and st.epochs_in_stage == 0
            prev = seed_acc if first_measurement else tel.accuracy
            tel.accuracy_delta = seed_acc - prev
            tel.accuracy = seed_acc
            # counterfactual contribution: what the model loses without this slot
            if st.alpha > 0.0:
                tel.contribution = subset_acc - self.evaluate({name: 0.0}, limit=limit)[1]
            else:
                tel.contribution = 0.0
        events = []
        for slot in self.model.slots.values():
            events.extend(slot.step_epoch(self.epoch))
        return {"events": events}

    # ---------------------------------------------------------------- actions
    def apply(self, action: Action) -> list[dict]:
        """Carry out a controller decision; returns the lifecycle events it caused."""
        if action.op == "WAIT":
            return []
        slot = self.model.slots[action.slot]
        if action.op == "GERMINATE":
            with self.stream_context():
                event = self.model.germinate(
                    action.slot,
                    action.blueprint,
                    action.blend,
                    self.epoch,
                    self.generator,
                    self.config.seed_lr,
                )
            return [event]
        if action.op == "CULL":
            return [slot.cull(self.epoch)]
        if action.op == "FOSSILIZE":
            return [slot.fossilize(self.epoch)]
        raise ValueError(f"unknown op {action.op!r}")

    def stage_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for slot in self.model.slots.values():
            counts[slot.stage.name] = counts.get(slot.stage.name, 0) + 1
        return counts

    def params_finite(self) -> bool:
        return all(bool(torch.isfinite(p).all()) for p in self.model.parameters())
