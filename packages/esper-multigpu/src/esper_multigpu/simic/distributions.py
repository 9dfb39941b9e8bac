"""Masked categorical distributions, computed in float32 whatever the surrounding precision."""

from __future__ import annotations

import torch

_NEG = -1e9  # finite "minus infinity": keeps softmax and gradients NaN-free


class MaskedCategorical:
    """A categorical over ``logits`` restricted to ``mask`` (True = allowed).

    Every row must allow at least one category. Masked categories get probability 0,
    contribute 0 to the entropy, and can never be sampled.
    """

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor):
        if not bool(mask.any(dim=-1).all()):
            raise ValueError("every row of an action mask must allow at least one action")
        self.mask = mask
        self.logits = logits.float().masked_fill(~mask, _NEG)
        self.log_probs = torch.log_softmax(self.logits, dim=-1)
        self.probs = self.log_probs.exp()

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.multinomial(self.probs, 1, generator=generator).squeeze(-1)

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(-1)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return self.log_probs.gather(-1, value.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        plogp = torch.where(self.mask, self.probs * self.log_probs, torch.zeros_like(self.probs))
        return -plogp.sum(-1)
