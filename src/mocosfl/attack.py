"""Attack a checkpoint: ``python -m mocosfl.attack ckpt_path=<run>/checkpoints/final.ckpt``.

The model-inversion attack of :mod:`mocosfl.privacy.attack` on the checkpoint's FedAvg client
model, with the images of the run's own data (conf/attack.yaml), measured by the corrected protocol
or, with ``attack=paper``, the original's (:mod:`mocosfl.privacy.protocol`). Writes into the run
directory ``metrics.json`` (``attack/mse``, ``attack/ssim``, ``attack/psnr``, or
``attack_paper/*``, and ``attack_protocol``), ``reconstructions.png``
(originals over reconstructions, ``attack.grid_images`` of them) and ``attack.json`` (the
decoder's validation curve, the kept step, the wall time), logs the same to W&B, reports the
decoder's training as it goes (``attack.progress``) and ends with a short summary table.
"""

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

import mocosfl  # noqa: F401  (registers the config resolvers)
from mocosfl.api import load_checkpoint
from mocosfl.callbacks.attack import log_reconstructions
from mocosfl.cli import data_overrides, hydra_entry, required_checkpoint
from mocosfl.privacy.attack import AttackResult, AttackSettings, attack_checkpoint
from mocosfl.utils.run import (
    instantiate_each,
    resolve_device,
    with_num_threads,
    write_metrics,
)
from mocosfl.utils.summary import print_summary


def log_attack(
    cfg: DictConfig, hyperparams: dict[str, Any], result: AttackResult, grid: Path
) -> None:
    """Config, scores and the image grid (the saved ``grid`` PNG) to every configured logger."""
    for logger in instantiate_each(cfg.logger):
        logger.log_hyperparams(hyperparams)
        logger.log_metrics(result.metrics(), step=0)
        log_reconstructions([logger], grid, step=0, prefix=result.prefix)
        logger.finalize("success")


def print_attack_summary(cfg: DictConfig, result: AttackResult, written: list[Path]) -> None:
    """The end-of-job table: where the outputs are, what was attacked, the scores."""
    out_dir = Path(cfg.paths.output_dir)
    rows = [
        ("run dir", out_dir),
        ("checkpoint", cfg.ckpt_path),
        ("aux images", result.num_aux),
        ("targets", result.originals.shape[0]),
        ("protocol", result.protocol),
        (f"{result.prefix}/mse", result.mse),
        (f"{result.prefix}/ssim", result.ssim),
        (f"{result.prefix}/psnr", f"{result.psnr:.2f} dB"),
        ("wall time", f"{result.seconds:.1f} s"),
        ("files written", ", ".join(path.name for path in written)),
    ]
    next_commands = [
        f'make attack CKPT={cfg.ckpt_path} ARGS="attack.aux_fraction=0.05"  # a richer attacker',
        f"make eval CKPT={cfg.ckpt_path} EVAL=linear  # the accuracy side of the trade-off",
    ]
    print_summary("attack", rows, next_commands)


@with_num_threads
def attack(cfg: DictConfig) -> dict[str, Any]:
    """Attack ``cfg.ckpt_path`` as ``cfg.attack`` says, write the outputs, return metrics.json."""
    ckpt_path = required_checkpoint(cfg)
    options = OmegaConf.to_container(cfg.attack, resolve=True)
    settings = AttackSettings.from_config(
        {**options.pop("decoder"), "seed": cfg.seed, "protocol": options.pop("protocol")}
    )
    grid_images = options.pop("grid_images")
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    run_config = load_checkpoint(ckpt_path)["run_config"]
    result = attack_checkpoint(
        ckpt_path,
        **options,
        settings=settings,
        device=resolve_device(cfg.device),
        data_overrides=data_overrides(cfg),
    )
    written = result.save(out_dir, grid_images)
    hyperparams = {**OmegaConf.to_container(cfg, resolve=True), "run": run_config}
    log_attack(cfg, hyperparams, result, written[0])
    record = write_metrics(
        out_dir / "metrics.json",
        result.metrics(),
        attack_protocol=result.protocol,
        seed=cfg.seed,
        ckpt_path=ckpt_path,
    )
    print_attack_summary(cfg, result, [out_dir / "metrics.json", *written])
    return record


main = hydra_entry("attack", attack)

if __name__ == "__main__":
    main()
