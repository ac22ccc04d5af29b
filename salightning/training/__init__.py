"""Training: the LightningModule (:class:`SRGANModule`), the generator objective of eq. 16-23
(:class:`GeneratorObjective`), and its stateful pieces: the non-finite guard and the SA beta2 balance."""

from salightning.training.balance import BetaMode, SABalance
from salightning.training.guard import NonFiniteGuard, TrainingDiverged
from salightning.training.module import SRGANModule
from salightning.training.objective import GeneratorObjective, discriminator_input

__all__ = ["BetaMode", "GeneratorObjective", "NonFiniteGuard", "SABalance", "SRGANModule", "TrainingDiverged", "discriminator_input"]
