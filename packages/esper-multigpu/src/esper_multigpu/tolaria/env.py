"""One environment: a fresh host trained for ``max_epochs`` while a controller grows seeds in it.

The environment owns a persistent model, a persistent CUDA stream and (for fp16) its own
GradScaler. ``reset`` re-initialises the model in place for the next episode, so a device
keeps the same allocations from batch to batch instead of fragmenting its memory.
Training is split into ``begin_epoch`` / ``train_batch`` / ``queue_eval`` / ``finish_epoch``
so the vectorised loop can interleave the batches of every environment on a device across
their streams, and then queue every environment's evaluation before it waits once.

No host synchronisation per batch: the finite check of the loss and gradients is a
device tensor handed to the fused Adam step as ``found_inf`` (the contract GradScaler
itself uses), so a bad step is skipped on the device and counted in a device tensor that
is read once per epoch.

**The paired fixed host.** At the first germination of an episode the environment forks
a *shadow*: a copy of the host (weights, batch-norm statistics and optimizer state) that
from then on trains on exactly the same batches without any seed. Until that moment the
grown model and a fixed host are the same computation, so the shadow is, bit for bit,
the fixed host this episode would have had; the reward credits the grown model only for
the accuracy it has *above* the shadow (simic/rewards.py).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..config import AMP_MODES, EnvConfig
from ..kasmina.host import SLOT_NAMES, MorphogeneticModel
from ..kasmina.slot import GATES, Gates, SeedStage
from ..tamiyo.signals import TrainingSignals


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


def make_adam(params, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel, which skips a step on a ``found_inf`` tensor without a host sync."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def _step(optimizers, found_inf: torch.Tensor) -> None:
    """Step every optimizer unless ``found_inf`` (a 0/1 float tensor on the device) is set.

    The fused Adam kernel reads ``optimizer.found_inf`` and leaves parameters, moments and
    the step count unchanged when it is non-zero: the check stays on the device.
    """
    for opt in optimizers:
        opt.found_inf = found_inf
        try:
            opt.step()
        finally:
            del opt.found_inf


class MorphoEnv:
    def __init__(
        self,
        index: int,
        device: str,
        data: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
        n_classes: int,
        slots: tuple[str, ...] = SLOT_NAMES,
        config: EnvConfig | None = None,
        amp: str = "off",
        gates: Gates = GATES,
    ):
        config = config or EnvConfig()
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
        # the paired fixed host: same architecture, allocated once, forked at germination
        self.shadow = copy.deepcopy(self.model.host)
        self.shadow_opt: torch.optim.Optimizer | None = None
        self.shadow_scaler: torch.amp.GradScaler | None = None
        # one stream per environment for its whole life (not one per batch)
        self.stream = torch.cuda.Stream(device=device) if device.startswith("cuda") else None
        if self.stream is not None:
            # the data upload and the model's weights were queued on the default stream
            self.stream.wait_stream(torch.cuda.current_stream(device))
        self.generator = torch.Generator()  # host and seed initialisation
        # the data order has its own stream of randomness, so germinating a seed (which
        # draws its weights) leaves the batches unchanged: the shadow sees the fixed host's
        self.data_generator = torch.Generator()
        self.scaler: torch.amp.GradScaler | None = None
        self.host_opt: torch.optim.Optimizer | None = None
        self.signals = TrainingSignals(config.max_epochs)
        self.epoch = 0
        self.shadow_acc: float | None = None
        self.skipped_steps = 0
        self._pending = None

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
        init_seed, data_seed = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint32)
        self.generator.manual_seed(int(init_seed))
        self.data_generator.manual_seed(int(data_seed))
        with self.stream_context():
            self.model.reset_(self.generator)
        self.host_opt = make_adam(self.model.host_parameters(), self.config.host_lr)
        self.shadow_opt = None
        self.shadow_scaler = None
        self.shadow_acc = None
        # fp16 needs loss scaling; the scaler is per env so one env's overflow never skips another's step
        self.scaler = torch.amp.GradScaler("cuda") if self.amp == "fp16" else None
        self.signals = TrainingSignals(self.config.max_epochs)
        self.signals.host_params = self.model.host_param_count()
        self.epoch = 0
        self.skipped_steps = 0

    @property
    def n_batches(self) -> int:
        """Optimisation steps per epoch: one pass over the data, or ``config.train_batches`` if fewer."""
        full = math.ceil(len(self.x_train) / self.config.batch_size)
        return min(full, self.config.train_batches or full)

    @property
    def has_shadow(self) -> bool:
        return self.shadow_opt is not None

    def _fork_shadow(self) -> None:
        """Copy the host and its optimizer state into the shadow (the fixed host of this episode)."""
        with self.stream_context():
            self.shadow.load_state_dict(self.model.host.state_dict())
            self.shadow_opt = make_adam(self.shadow.parameters(), self.config.host_lr)
            self.shadow_opt.load_state_dict(copy.deepcopy(self.host_opt.state_dict()))
        if self.scaler is not None:  # once per episode: reading the scale is a host sync
            self.shadow_scaler = torch.amp.GradScaler(self.scaler._device)
            self.shadow_scaler.load_state_dict(self.scaler.state_dict())

    # --------------------------------------------------------------- training
    def begin_epoch(self) -> None:
        self.epoch += 1
        self.model.train()
        self.shadow.train()
        perm = torch.randperm(len(self.x_train), generator=self.data_generator)
        if self.stream is not None:
            perm = perm.pin_memory()  # so the copy below is truly asynchronous
        with self.stream_context():
            self._perm = perm.to(self.device, non_blocking=True)
            zero = lambda: torch.zeros((), device=self.device)  # noqa: E731
            self._loss_sum, self._correct, self._skipped = zero(), zero(), zero()
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
            bad = ~torch.isfinite(loss)
            host_norm = torch.nn.utils.clip_grad_norm_(
                self.model.host_parameters(), self.config.grad_clip
            )
            bad = bad | ~torch.isfinite(host_norm)
            for name, slot in self.model.slots.items():
                if slot.optimizer is None:
                    continue
                params = [p for p in slot.seed_parameters() if p.grad is not None]
                norm = (
                    torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
                    if params
                    else None
                )
                self._record_seed_gradient(name, norm)
                if norm is not None:
                    bad = bad | ~torch.isfinite(norm)
            found_inf = bad.float()
            _step(optimizers, found_inf)  # skipped on the device when anything was not finite
            if self.scaler is not None:
                self.scaler.update()  # reads the inf checks unscale_ recorded; no host sync
            self._skipped += found_inf
            self._loss_sum += torch.where(bad, 0.0, loss.detach()) * len(yb)
            self._correct += (logits.detach().argmax(1) == yb).sum()
            if self.shadow_opt is not None:
                self._train_shadow(xb, yb)

    def _train_shadow(self, xb: torch.Tensor, yb: torch.Tensor) -> None:
        """The same step for the paired fixed host: same batch, same precision, no seeds."""
        self.shadow_opt.zero_grad(set_to_none=True)
        with self.autocast():
            logits = self.shadow(xb)
        loss = F.cross_entropy(logits.float(), yb)
        if self.shadow_scaler is not None:
            self.shadow_scaler.scale(loss).backward()
            self.shadow_scaler.unscale_(self.shadow_opt)
        else:
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.shadow.parameters(), self.config.grad_clip)
        _step([self.shadow_opt], (~torch.isfinite(loss) | ~torch.isfinite(norm)).float())
        if self.shadow_scaler is not None:
            self.shadow_scaler.update()

    def _record_seed_gradient(self, name: str, norm: torch.Tensor | None) -> None:
        """Accumulate one batch's gradient health of a seed (device tensors, no sync)."""
        g: Gates = self.model.slots[name].gates
        acc = self._grad[name]
        acc["n"] += 1
        if norm is None:
            acc["vanish"] += 1
            return
        norm = norm.float()
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
    @torch.inference_mode()
    def _eval_many(self, variants: list[tuple[dict[str, float], int | None]], model=None) -> list[tuple]:
        """(mean loss, accuracy) on the validation set, as device tensors (no sync), of
        ``self.model`` for each ``(alpha_override, limit)``, in one pass per chunk for the
        variants over the same samples: their shared prefixes run once
        (``MorphogeneticModel.forward_many``), so the values are those of separate passes,
        bit for bit. ``model``: another network (the shadow host), run plainly once per
        variant."""
        if model is None:
            forward = self.model.forward_many
        else:
            def forward(xb, overrides):
                return [model(xb) for _ in overrides]
        n_val = len(self.x_val)
        by_n: dict[int, list[int]] = {}
        for k, (_, limit) in enumerate(variants):
            by_n.setdefault(n_val if limit is None else min(limit, n_val), []).append(k)
        out: list[tuple | None] = [None] * len(variants)
        for n, idx in by_n.items():
            x, y = self.x_val[:n], self.y_val[:n]
            overrides = [variants[k][0] for k in idx]
            loss_sum = [torch.zeros((), device=self.device) for _ in idx]
            correct = [torch.zeros((), device=self.device) for _ in idx]
            for s in range(0, n, self.config.eval_chunk):
                xb, yb = x[s : s + self.config.eval_chunk], y[s : s + self.config.eval_chunk]
                with self.autocast():
                    all_logits = forward(xb, overrides)
                for j, logits in enumerate(all_logits):
                    loss_sum[j] += F.cross_entropy(logits.float(), yb, reduction="sum")
                    correct[j] += (logits.argmax(1) == yb).sum()
            for j, k in enumerate(idx):
                out[k] = (loss_sum[j] / n, correct[j] / n)
        return out

    def evaluate(
        self, alpha_override: dict[str, float] | None = None, limit: int | None = None
    ) -> tuple[float, float]:
        """(loss, accuracy) on the validation set, optionally with some slots' alpha overridden."""
        was_training = self.model.training
        self.model.eval()
        with self.stream_context():
            loss, acc = self._eval_many([(alpha_override or {}, limit)])[0]
            out = torch.stack([loss, acc]).tolist()
        self.model.train(was_training)
        return out[0], out[1]

    def queue_eval(self) -> None:
        """Queue this epoch's whole evaluation on the env's stream; nothing waits here.

        Validation, the seed-on and counterfactual evaluations of every seed, the paired
        fixed host, the gradient statistics and the skipped-step count end up in ONE small
        tensor copied to (pinned) host memory; :meth:`finish_epoch` reads it.
        """
        limit = self.config.counterfactual_samples
        n = len(self.x_train)
        keys: list[tuple] = []
        vals: list[torch.Tensor] = []

        def put(key, t):
            keys.append(key)
            vals.append(torch.as_tensor(t, dtype=torch.float32, device=self.device).reshape(()))

        self.model.eval()
        self.shadow.eval()
        with self.stream_context():
            put(("train_loss",), self._loss_sum / n)
            put(("train_acc",), self._correct / n)
            put(("skipped",), self._skipped)
            # every pass of the model at once (the counterfactuals share their prefixes)
            variants: dict[tuple, tuple[dict[str, float], int | None]] = {("val",): ({}, None)}
            if len(self.x_val) > limit:
                variants[("subset_acc",)] = ({}, limit)
            for name, slot in self.model.slots.items():
                if slot.seed is None:
                    continue
                if slot.state.alpha != 1.0:  # the model with this seed fully on (functional override)
                    variants[(name, "seed_acc")] = ({name: 1.0}, limit)
                if slot.state.alpha > 0.0:  # what the model loses without this slot
                    variants[(name, "ablated_acc")] = ({name: 0.0}, limit)
            results = dict(zip(variants, self._eval_many(list(variants.values())), strict=True))
            val_loss, val_acc = results.pop(("val",))
            put(("val_loss",), val_loss)
            put(("val_acc",), val_acc)
            if self.has_shadow:
                put(("shadow_acc",), self._eval_many([({}, None)], model=self.shadow)[0][1])
            for name, slot in self.model.slots.items():
                if slot.seed is None:
                    continue
                acc = self._grad[name]
                if acc["n"]:
                    for k in ("norm", "healthy", "vanish", "explode"):
                        put((name, k), acc[k] / acc["n"])
            for key, (_, acc_t) in results.items():
                put(key, acc_t)
            stacked = torch.stack(vals)
            if self.stream is not None:
                host = torch.empty(stacked.shape, dtype=stacked.dtype, pin_memory=True)
                host.copy_(stacked, non_blocking=True)
                event = torch.cuda.Event()
                event.record(self.stream)
            else:
                host, event = stacked, None
        self.model.train()
        self.shadow.train()
        self._pending = (keys, host, event)

    def finish_epoch(self) -> dict:
        """Wait for the queued evaluation (one sync per env, after every env has queued),
        then update signals and per-slot telemetry and step the automatic gates (G1..G3).

        Returns the epoch record: lifecycle events and the steps skipped as non-finite.
        """
        keys, host, event = self._pending
        self._pending = None
        if event is not None:
            event.synchronize()
        v = dict(zip(keys, host.tolist()))
        self.signals.update(self.epoch, v[("train_loss",)], v[("train_acc",)], v[("val_loss",)], v[("val_acc",)])
        self.signals.seed_params = self.model.seed_param_count()
        skipped = int(round(v[("skipped",)]))
        self.skipped_steps += skipped
        if ("shadow_acc",) in v:
            self.shadow_acc = v[("shadow_acc",)]
        subset_acc = v.get(("subset_acc",), v[("val_acc",)])
        for name, slot in self.model.slots.items():
            st, tel = slot.state, slot.state.telemetry
            if slot.seed is None:
                continue
            if (name, "norm") in v:
                tel.grad_norm = v[(name, "norm")]
                tel.grad_health = v[(name, "healthy")]
                tel.vanishing = v[(name, "vanish")] > 0.5
                tel.exploding = v[(name, "explode")] > 0.0
            else:
                # a parameterless seed (noop) or a frozen one has no gradient to be unhealthy
                tel.grad_norm, tel.vanishing, tel.exploding = 0.0, False, False
                tel.grad_health = 1.0 if slot.optimizer is None else 0.0
            seed_acc = v.get((name, "seed_acc"), subset_acc)
            first_measurement = st.stage == SeedStage.GERMINATED and st.epochs_in_stage == 0
            prev = seed_acc if first_measurement else tel.accuracy
            tel.accuracy_delta = seed_acc - prev
            tel.accuracy = seed_acc
            tel.contribution = (
                subset_acc - v[(name, "ablated_acc")] if (name, "ablated_acc") in v else 0.0
            )
        events = []
        for slot in self.model.slots.values():
            events.extend(slot.step_epoch(self.epoch))
        return {"events": events, "skipped_steps": skipped}

    def end_epoch(self) -> dict:
        """:meth:`queue_eval` then :meth:`finish_epoch` (one env on its own)."""
        self.queue_eval()
        return self.finish_epoch()

    @property
    def added_accuracy(self) -> float:
        """Validation accuracy above the paired fixed host (0 before the first germination)."""
        return 0.0 if self.shadow_acc is None else self.signals.val_acc - self.shadow_acc

    # ---------------------------------------------------------------- actions
    def apply(self, action: Action) -> list[dict]:
        """Carry out a controller decision; returns the lifecycle events it caused."""
        if action.op == "WAIT":
            return []
        slot = self.model.slots[action.slot]
        if action.op == "GERMINATE":
            if not self.has_shadow:
                self._fork_shadow()
                self.shadow_acc = self.signals.val_acc  # identical models until now
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
