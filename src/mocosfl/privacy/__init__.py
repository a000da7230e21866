"""Privacy of the client latents: the model-inversion attack and the TAResSFL defence."""

from mocosfl.privacy.attack import (
    AttackResult,
    AttackSettings,
    attack_checkpoint,
    reconstruction_metrics,
    run_attack,
    score_decoder,
    select_attack_images,
)
from mocosfl.privacy.data import ExpertDataModule
from mocosfl.privacy.decoder import Decoder
from mocosfl.privacy.protocol import PROTOCOLS, AttackProtocol
from mocosfl.privacy.taressfl import TAResSFL, init_from_checkpoint

__all__ = [
    "PROTOCOLS",
    "AttackProtocol",
    "AttackResult",
    "AttackSettings",
    "Decoder",
    "ExpertDataModule",
    "TAResSFL",
    "attack_checkpoint",
    "init_from_checkpoint",
    "reconstruction_metrics",
    "run_attack",
    "score_decoder",
    "select_attack_images",
]
