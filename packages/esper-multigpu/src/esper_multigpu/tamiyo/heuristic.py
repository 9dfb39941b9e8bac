"""The heuristic controller: a fixed, readable policy that is the baseline for PPO.

Every epoch it looks at *every* enabled slot (early -> mid -> late):

* PROBATIONARY seed: fossilise when the gate allows (positive counterfactual
  contribution after the probation epochs); cull when probation has lasted
  ``max_probation_epochs`` without that, or the contribution fell below ``cull_below``.
* BLENDING seed whose counterfactual contribution is below ``cull_below``: cull.
* TRAINING seed stuck (unhealthy gradients) for ``max_training_epochs``: cull.

Then, after ``warmup_epochs`` and at most once every ``germinate_interval`` epochs, it
germinates into the first empty enabled slot in ``slot_order`` (mid, late, early: where
the small host lacks capacity most, first), with that slot's preferred blueprint
(skipping blueprints already culled from that slot in this episode), while the model
holds fewer than ``max_seeds`` seeds (the run's growth budget, when it sets one).
"""

from __future__ import annotations

from ..config import BLUEPRINT_NAMES, HeuristicConfig
from ..kasmina.slot import SeedStage
from ..tolaria.env import Action, MorphoEnv


class HeuristicController:
    name = "heuristic"

    def __init__(
        self,
        config: HeuristicConfig | None = None,
        max_seeds: int | None = None,
        blueprints: list[str] | tuple[str, ...] | None = None,
    ):
        self.config = config or HeuristicConfig()
        self.max_seeds = max_seeds
        self.blueprints = tuple(blueprints) if blueprints is not None else BLUEPRINT_NAMES
        self._last_germination: dict[int, int] = {}
        self._culled: dict[int, dict[str, set[str]]] = {}

    def begin_batch(self, n_envs: int, seed: int) -> None:
        self._last_germination = {i: -(10**9) for i in range(n_envs)}
        self._culled = {i: {} for i in range(n_envs)}

    def decide(self, k: int, env: MorphoEnv) -> list[Action]:
        """The actions for environment ``k`` after its current epoch."""
        cfg, model, epoch = self.config, env.model, env.epoch
        actions: list[Action] = []
        for name in model.enabled_slots:
            slot = model.slots[name]
            st = slot.state
            tel = st.telemetry
            cull = False
            if st.stage == SeedStage.PROBATIONARY:
                if slot.can_fossilize():
                    actions.append(Action("FOSSILIZE", name))
                    continue
                cull = (
                    st.epochs_in_stage >= cfg.max_probation_epochs
                    or tel.contribution < cfg.cull_below
                )
            elif st.stage == SeedStage.BLENDING:
                cull = tel.contribution < cfg.cull_below
            elif st.stage in (SeedStage.GERMINATED, SeedStage.TRAINING):
                cull = st.epochs_in_stage >= cfg.max_training_epochs
            if cull:
                self._culled[k].setdefault(name, set()).add(st.blueprint)
                actions.append(Action("CULL", name))
        culled_now = sum(1 for a in actions if a.op == "CULL")
        if (
            (self.max_seeds is None or model.seed_count() - culled_now < self.max_seeds)
            and epoch >= cfg.warmup_epochs
            and epoch - self._last_germination[k] >= cfg.germinate_interval
        ):
            order = [s for s in cfg.slot_order if s in model.enabled_slots]
            order += [s for s in model.enabled_slots if s not in order]
            for name in order:
                if model.slots[name].is_empty:
                    blueprint = self._pick_blueprint(k, name)
                    actions.append(Action("GERMINATE", name, blueprint, cfg.blend))
                    self._last_germination[k] = epoch
                    break
        return actions

    def _pick_blueprint(self, k: int, slot: str) -> str:
        tried = self._culled[k].get(slot, set())
        prefs = [
            b for b in self.config.preferences.get(slot, BLUEPRINT_NAMES) if b in self.blueprints
        ]
        prefs = prefs or list(self.blueprints)
        for bp in prefs:
            if bp not in tried:
                return bp
        return prefs[0]
