"""Running mean/variance observation normaliser (Chan et al. parallel update), and the
reward scaler built on it (CleanRL's ``NormalizeReward``)."""

from __future__ import annotations

import numpy as np


class RunningMeanStd:
    def __init__(self, dim: int, clip: float = 5.0, epsilon: float = 1e-4):
        self.mean = np.zeros(dim, dtype=np.float64)
        self.var = np.ones(dim, dtype=np.float64)
        self.count = epsilon
        self.clip = clip

    def update(self, batch: np.ndarray) -> None:
        batch = np.asarray(batch, dtype=np.float64).reshape(-1, self.mean.shape[0])
        b_mean, b_var, b_count = batch.mean(0), batch.var(0), batch.shape[0]
        delta = b_mean - self.mean
        total = self.count + b_count
        self.mean = self.mean + delta * b_count / total
        m2 = self.var * self.count + b_var * b_count + delta**2 * self.count * b_count / total
        self.var = m2 / total
        self.count = total

    def normalize(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / np.sqrt(self.var + 1e-8)
        return np.clip(z, -self.clip, self.clip).astype(np.float32)

    def state_dict(self) -> dict:
        return {
            # plain floats, so a checkpoint loads with torch.load(weights_only=True)
            "mean": self.mean.tolist(),
            "var": self.var.tolist(),
            "count": float(self.count),
            "clip": float(self.clip),
        }

    def load_state_dict(self, state: dict) -> None:
        self.mean = np.asarray(state["mean"], dtype=np.float64).copy()
        self.var = np.asarray(state["var"], dtype=np.float64).copy()
        self.count = float(state["count"])
        self.clip = float(state["clip"])


class RewardScaler:
    """CleanRL's ``NormalizeReward`` for a batch of whole episodes: each reward is divided
    by the running standard deviation of the discounted return (no mean is subtracted, so
    the sign of every reward, and waiting's exact 0, survive).

    Our rewards are accuracy differences of ~0.01 per epoch, returns ~0.1, while the value
    head starts at O(1): scaled, the critic's targets are O(1) from the first batch and its
    initial errors no longer swamp the advantages. ``scale`` folds the batch's discounted
    returns (T, N; every column one episode from its start) into the statistics first,
    then scales, as the wrapper does per step.
    """

    def __init__(self, gamma: float, epsilon: float = 1e-8):
        self.gamma = gamma
        self.epsilon = epsilon
        # the wrapper's prior (variance 1 with weight 1e-4): our returns are ~0.1, so it is
        # ~3% of the first batch's variance and fades as batches come in
        self.return_rms = RunningMeanStd(1, clip=np.inf)

    def scale(self, rewards: np.ndarray) -> np.ndarray:
        returns = np.zeros(rewards.shape[1:], dtype=np.float64)
        discounted = []
        for r in rewards:
            returns = returns * self.gamma + r
            discounted.append(returns.copy())
        self.return_rms.update(np.concatenate(discounted).reshape(-1, 1))
        return (rewards / np.sqrt(self.return_rms.var[0] + self.epsilon)).astype(np.float32)

    @property
    def std(self) -> float:
        return float(np.sqrt(self.return_rms.var[0] + self.epsilon))

    def state_dict(self) -> dict:
        return {"gamma": float(self.gamma), "return_rms": self.return_rms.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.gamma = float(state["gamma"])
        self.return_rms.load_state_dict(state["return_rms"])
