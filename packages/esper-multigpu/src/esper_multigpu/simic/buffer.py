"""Rollout storage for one batch of environments and generalised advantage estimation."""

from __future__ import annotations

import numpy as np


def compute_gae(
    rewards: np.ndarray,
    values: np.ndarray,
    last_values: np.ndarray,
    terminated: np.ndarray,
    gamma: float = 0.99,
    lam: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Advantages and returns for (T, N) arrays of rewards and values.

    ``last_values`` (N,) is V(s_T), the value of the state after the last step. An
    episode that ends at the epoch limit is *truncated*, not terminated: the last step
    still bootstraps from V(s_{t+1}). ``terminated[t]`` = True cuts the bootstrap after
    step t (a real end of the task).
    """
    T = rewards.shape[0]
    adv = np.zeros_like(rewards, dtype=np.float64)
    gae = np.zeros(rewards.shape[1:], dtype=np.float64)
    for t in reversed(range(T)):
        next_value = last_values if t == T - 1 else values[t + 1]
        nonterminal = 1.0 - terminated[t].astype(np.float64)
        delta = rewards[t] + gamma * next_value * nonterminal - values[t]
        gae = delta + gamma * lam * nonterminal * gae
        adv[t] = gae
    return adv.astype(np.float32), (adv + values).astype(np.float32)


class RolloutBuffer:
    """(T, N) steps of N environments: normalised observations, actions, masks, log-probs, values, rewards."""

    def __init__(self, steps: int, n_envs: int, obs_dim: int):
        T, N = steps, n_envs
        self.obs = np.zeros((T, N, obs_dim), dtype=np.float32)
        self.actions = np.zeros((T, N, 4), dtype=np.int64)
        self.mask_op = np.zeros((T, N, 4), dtype=bool)
        self.mask_slot = np.zeros((T, N, 3), dtype=bool)
        self.mask_blueprint = np.zeros((T, N, 6), dtype=bool)
        self.mask_blend = np.zeros((T, N, 2), dtype=bool)
        self.logp = np.zeros((T, N), dtype=np.float32)
        self.values = np.zeros((T, N), dtype=np.float32)
        self.rewards = np.zeros((T, N), dtype=np.float32)
        self.terminated = np.zeros((T, N), dtype=bool)
        self.last_values = np.zeros(N, dtype=np.float32)
        self.t = 0

    def add(self, obs, actions, masks: dict, logp, values) -> None:
        t = self.t
        self.obs[t], self.actions[t] = obs, actions
        self.mask_op[t], self.mask_slot[t] = masks["op"], masks["slot"]
        self.mask_blueprint[t], self.mask_blend[t] = masks["blueprint"], masks["blend"]
        self.logp[t], self.values[t] = logp, values
        self.t += 1

    def set_rewards(self, t: int, rewards: np.ndarray) -> None:
        self.rewards[t] = rewards

    @property
    def full(self) -> bool:
        return self.t == self.obs.shape[0]
