"""Model-inversion attack by an honest-but-curious server (docs/paper.md, "Attack").

The server holds the client-side model (the FedAvg model) and an auxiliary set of images. It
encodes the auxiliary images with the client, trains a :class:`Decoder` from latents back to
images with MSE, keeps the decoder that is best on a held-out tenth of the auxiliary set, and
reconstructs fixed target images it never saw from their latents alone. The scores are computed
on [0, 1] pixels; ``attack/mse`` is the headline (higher is more private). How the decoder is
validated and what it is scored against is the protocol's (:mod:`mocosfl.privacy.protocol`): the
corrected one by default, ``protocol="paper"`` for the original's, logged as ``attack_paper/*``.

``run_attack`` is the one function behind the training callback, ``python -m mocosfl.attack`` and
the notebook; ``select_attack_images`` picks its images from a run's data module, and
``AttackResult.save`` writes what both the callback and the entry point leave in a run directory.

One module a job: :mod:`~mocosfl.privacy.attack.settings` (the decoder's training settings and
the protocol), :mod:`~mocosfl.privacy.attack.images` (the auxiliary and target images),
:mod:`~mocosfl.privacy.attack.training` (the decoder's training loop and its validation),
:mod:`~mocosfl.privacy.attack.scoring` (the scores of reconstructions),
:mod:`~mocosfl.privacy.attack.result` (what an attack measured, its grid and its files),
:mod:`~mocosfl.privacy.attack.run` (the attack on a client model) and
:mod:`~mocosfl.privacy.attack.checkpoint` (the attack on a training checkpoint). The names below
are the ones imported from this package.
"""

from mocosfl.privacy.attack.checkpoint import attack_checkpoint
from mocosfl.privacy.attack.images import MIN_AUX_IMAGES, select_attack_images, warn_if_few_aux
from mocosfl.privacy.attack.result import AttackResult
from mocosfl.privacy.attack.run import run_attack
from mocosfl.privacy.attack.scoring import reconstruction_metrics, score_decoder
from mocosfl.privacy.attack.settings import AttackSettings
from mocosfl.privacy.attack.training import train_decoder

__all__ = [
    "MIN_AUX_IMAGES",
    "AttackResult",
    "AttackSettings",
    "attack_checkpoint",
    "reconstruction_metrics",
    "run_attack",
    "score_decoder",
    "select_attack_images",
    "train_decoder",
    "warn_if_few_aux",
]
