"""PPO for the recurrent factored policy: clipped surrogate + value loss + entropy, KL early stop.

Each environment's episode is one sequence that starts from a zero LSTM state, so the
update replays whole sequences (minibatches are sets of environments) and recomputes
exactly the distributions the actions were sampled from.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from ..config import PPOConfig
from .buffer import RolloutBuffer, compute_gae
from .network import RecurrentActorCritic, factored_log_prob_entropy, sample_actions
from .normalizer import RewardScaler, RunningMeanStd


class PPOAgent:
    def __init__(
        self, obs_dim: int, device: str = "cpu", config: PPOConfig | None = None, seed: int = 0
    ):
        config = config or PPOConfig()
        self.config = config
        self.device = device
        self.obs_dim = obs_dim
        with torch.random.fork_rng(
            devices=[]
        ):  # the policy's init must not depend on (or move) global RNG
            torch.manual_seed(seed)
            self.net = RecurrentActorCritic(obs_dim, config.hidden)
        self.net.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=config.lr, eps=1e-5)
        self.obs_rms = RunningMeanStd(obs_dim)
        self.reward_scaler = RewardScaler(config.gamma)
        self._state = None
        self._generator: torch.Generator | None = None

    # ------------------------------------------------------------- acting
    def begin_batch(self, n_envs: int, seed: int) -> None:
        self._state = self.net.initial_state(n_envs, self.device)
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(seed)

    @torch.no_grad()
    def act(self, obs: np.ndarray, masks: dict[str, np.ndarray], greedy: bool = False):
        """One batched forward for all envs: returns (normalised obs, actions, slot masks, log-probs, values)."""
        norm = self.obs_rms.normalize(obs)
        to = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(self.device, non_blocking=True)  # noqa: E731
        logits, values, self._state = self.net(to(norm)[None], self._state)
        logits = {k: v[0] for k, v in logits.items()}
        tmasks = {k: to(v) for k, v in masks.items()}
        actions, slot_mask = sample_actions(logits, tmasks, self._generator, greedy=greedy)
        head_masks = {
            "op": tmasks["op"],
            "slot": slot_mask,
            "blueprint": tmasks["blueprint"],
            "blend": tmasks["blend"],
        }
        logp, _ = factored_log_prob_entropy(logits, head_masks, actions)
        return (
            norm,
            actions.cpu().numpy(),
            slot_mask.cpu().numpy(),
            logp.cpu().numpy(),
            values[0].cpu().numpy(),
        )

    @torch.no_grad()
    def value(self, obs: np.ndarray) -> np.ndarray:
        """V(s) for the final observations (the truncation bootstrap); advances the LSTM state."""
        norm = torch.from_numpy(self.obs_rms.normalize(obs)).to(self.device)
        _, values, self._state = self.net(norm[None], self._state)
        return values[0].cpu().numpy()

    # ------------------------------------------------------------- learning
    def update(self, buf: RolloutBuffer, raw_obs: np.ndarray, seed: int, progress: float = 0.0) -> dict:
        """PPO epochs over the batch, then fold the batch into the observation normaliser.

        ``progress`` is the fraction of the run's episodes done before this batch (0 for
        the first update): it anneals the learning rate and the entropy coefficient.
        """
        cfg = self.config
        lr = cfg.lr * (1.0 - progress) if cfg.anneal_lr else cfg.lr
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        ent_coef = cfg.ent_coef
        if cfg.ent_coef_final is not None:
            ent_coef += (cfg.ent_coef_final - cfg.ent_coef) * progress
        rewards = self.reward_scaler.scale(buf.rewards) if cfg.norm_reward else buf.rewards
        adv, ret = compute_gae(
            rewards, buf.values, buf.last_values, buf.terminated, cfg.gamma, cfg.gae_lambda
        )
        dev = self.device
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).to(dev)  # noqa: E731
        obs, actions, old_logp = t(buf.obs), t(buf.actions), t(buf.logp)
        masks = {
            "op": t(buf.mask_op),
            "slot": t(buf.mask_slot),
            "blueprint": t(buf.mask_blueprint),
            "blend": t(buf.mask_blend),
        }
        adv_t, ret_t = t(adv), t(ret)
        # steps where the policy had a choice (WAIT is always legal, so: another op too)
        choice = masks["op"].sum(-1) > 1 if cfg.choices_only else torch.ones_like(adv_t, dtype=torch.bool)
        n_envs = obs.shape[1]
        gen = torch.Generator().manual_seed(seed)
        stats = {
            "policy_loss": 0.0,
            "value_loss": 0.0,
            "entropy": 0.0,
            "approx_kl": 0.0,
            "clip_frac": 0.0,
        }
        n_updates, early_stop, epochs_run = 0, False, 0
        for _ in range(cfg.update_epochs):
            epochs_run += 1
            perm = torch.randperm(n_envs, generator=gen)
            for start in range(0, n_envs, cfg.minibatch_envs):
                mb = perm[start : start + cfg.minibatch_envs].to(dev)
                logits, values, _ = self.net(obs[:, mb], self.net.initial_state(len(mb), dev))
                mb_masks = {k: v[:, mb] for k, v in masks.items()}
                logp, entropy = factored_log_prob_entropy(logits, mb_masks, actions[:, mb])
                log_ratio = logp - old_logp[:, mb]
                ratio = log_ratio.exp()
                a, c = adv_t[:, mb], choice[:, mb]
                if cfg.norm_adv and c.sum() > 1:
                    a = ((a - a[c].mean()) if cfg.norm_adv_center else a) / (a[c].std() + 1e-8)
                pg = -torch.min(ratio * a, ratio.clamp(1 - cfg.clip, 1 + cfg.clip) * a)
                pg_loss = _masked_mean(pg, c)
                v_loss = 0.5 * (values - ret_t[:, mb]).pow(2).mean()
                ent = _masked_mean(entropy, c)
                loss = pg_loss + cfg.vf_coef * v_loss - ent_coef * ent
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(self.net.parameters(), cfg.max_grad_norm)
                self.optimizer.step()
                with torch.no_grad():
                    approx_kl = _masked_mean((ratio - 1) - log_ratio, c).item()
                    clip_frac = _masked_mean(((ratio - 1).abs() > cfg.clip).float(), c).item()
                for k, v in (
                    ("policy_loss", pg_loss.item()),
                    ("value_loss", v_loss.item()),
                    ("entropy", ent.item()),
                    ("approx_kl", approx_kl),
                    ("clip_frac", clip_frac),
                ):
                    stats[k] += v
                n_updates += 1
                if approx_kl > 1.5 * cfg.target_kl:
                    early_stop = True
                    break
            if early_stop:
                break
        stats = {k: v / max(n_updates, 1) for k, v in stats.items()}
        stats.update(update_epochs_run=epochs_run, kl_early_stop=early_stop, lr=lr, ent_coef=ent_coef)
        stats["reward_scale"] = self.reward_scaler.std if cfg.norm_reward else 1.0
        stats["explained_variance"] = _explained_variance(buf.values, ret)
        self.obs_rms.update(raw_obs)
        return stats

    # ------------------------------------------------------------ checkpoint
    def state_dict(self) -> dict:
        return {
            "net": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "obs_rms": self.obs_rms.state_dict(),
            "reward_scaler": self.reward_scaler.state_dict(),
            "config": asdict(self.config),
            "obs_dim": self.obs_dim,
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.obs_rms.load_state_dict(state["obs_rms"])
        if "reward_scaler" in state:  # checkpoints before the reward scaler have none
            self.reward_scaler.load_state_dict(state["reward_scaler"])


def _explained_variance(values: np.ndarray, returns: np.ndarray) -> float | None:
    """1 - Var(returns - values) / Var(returns), as CleanRL logs it (1: the critic is exact;
    None when the returns do not vary)."""
    var = float(np.var(returns))
    return None if var == 0 else 1.0 - float(np.var(returns - values)) / var


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``x`` over ``mask`` (0 when nothing is selected)."""
    return (x * mask).sum() / mask.sum().clamp(min=1)
