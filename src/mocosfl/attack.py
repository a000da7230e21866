"""Attack a checkpoint: ``python -m mocosfl.attack ckpt_path=<run>/checkpoints/final.ckpt``.

The model-inversion attack of :mod:`mocosfl.privacy.attack` on the checkpoint's FedAvg client
model, with the images of the run's own data (conf/attack.yaml). Writes into the run directory
``metrics.json`` (``attack/mse``, ``attack/ssim``, ``attack/psnr``), ``reconstructions.png``
(originals over reconstructions) and ``attack.json`` (the decoder's validation curve, the kept
step, the wall time), and logs the same to W&B.
"""

import json
from pathlib import Path
from typing import Any

import hydra
from lightning.pytorch.loggers import WandbLogger
from omegaconf import DictConfig, OmegaConf
from torchvision.utils import save_image

import mocosfl  # noqa: F401  (registers the config resolvers)
from mocosfl.api import load_checkpoint
from mocosfl.errors import ConfigError
from mocosfl.eval import resolve_device
from mocosfl.privacy.attack import AttackResult, AttackSettings, attack_checkpoint
from mocosfl.utils.run import instantiate_each, user_errors, with_num_threads, write_metrics


def log_attack(cfg: DictConfig, hyperparams: dict[str, Any], result: AttackResult) -> None:
    """Config, scores and the image grid to every configured logger."""
    for logger in instantiate_each(cfg.logger):
        logger.log_hyperparams(hyperparams)
        logger.log_metrics(result.metrics(), step=0)
        if isinstance(logger, WandbLogger):
            logger.log_image(
                "attack/reconstructions",
                [result.grid(cfg.grid_images)],
                step=0,
                caption=["top: originals, bottom: reconstructions"],
            )
        logger.finalize("success")


@with_num_threads
def attack(cfg: DictConfig) -> dict[str, Any]:
    """Attack ``cfg.ckpt_path`` as ``cfg.attack`` says, write the outputs, return metrics.json."""
    if not cfg.ckpt_path:
        raise ConfigError("ckpt_path is required, e.g. ckpt_path=<run dir>/checkpoints/final.ckpt")
    options = OmegaConf.to_container(cfg.attack, resolve=True)
    settings = AttackSettings.from_config({**options.pop("decoder"), "seed": cfg.seed})
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    run_config = load_checkpoint(cfg.ckpt_path)["run_config"]
    result = attack_checkpoint(
        cfg.ckpt_path,
        **options,
        settings=settings,
        device=resolve_device(cfg.device),
        data_overrides={k: v for k, v in cfg.data.items() if v is not None},
    )
    save_image(result.grid(cfg.grid_images), out_dir / "reconstructions.png")
    (out_dir / "attack.json").write_text(json.dumps(result.summary(), indent=1) + "\n")
    hyperparams = {**OmegaConf.to_container(cfg, resolve=True), "run": run_config}
    log_attack(cfg, hyperparams, result)
    return write_metrics(
        out_dir / "metrics.json", result.metrics(), seed=cfg.seed, ckpt_path=str(cfg.ckpt_path)
    )


@hydra.main(version_base="1.3", config_path="../../conf", config_name="attack")
def main(cfg: DictConfig) -> None:
    """Hydra entry point."""
    with user_errors():
        attack(cfg)


if __name__ == "__main__":
    main()
