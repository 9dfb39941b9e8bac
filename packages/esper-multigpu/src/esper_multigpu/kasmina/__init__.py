"""Kasmina: the host network, its seed slots, the blueprint registry and the seed lifecycle."""

from .blueprints import BLUEPRINTS, BlueprintError, build_seed
from .host import SLOT_NAMES, HostCNN, MorphogeneticModel
from .slot import GATES, SeedSlot, SeedStage

__all__ = [
    "BLUEPRINTS",
    "BlueprintError",
    "build_seed",
    "SLOT_NAMES",
    "HostCNN",
    "MorphogeneticModel",
    "GATES",
    "SeedSlot",
    "SeedStage",
]
