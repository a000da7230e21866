"""Evaluate a checkpoint: ``python -m mocosfl.eval ckpt_path=... eval=linear|semi10|semi1|knn``.

The model and the data split come from the checkpoint's run config; the probe is the one the
training run's callback uses (:func:`mocosfl.evaluation.train_probe`), here with the paper's
settings. Writes ``metrics.json`` (``val/<name>_top1``, ``test/<name>_top1``) and, for probes,
``probe.json`` (learning curve, per-class accuracy, confusion matrix) into the run directory.
"""

import json
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import Logger
from omegaconf import DictConfig, OmegaConf

import mocosfl  # noqa: F401  (registers the config resolvers)
from mocosfl.api import load_datamodule, load_module
from mocosfl.cli import data_overrides, hydra_entry, required_checkpoint
from mocosfl.errors import ConfigError
from mocosfl.evaluation import (
    ProbeResult,
    ProbeSettings,
    accuracy,
    extract_features,
    knn_predict,
    train_probe,
)
from mocosfl.evaluation.features import Split
from mocosfl.utils.run import (
    instantiate_each,
    resolve_device,
    with_num_threads,
    write_metrics,
)
from mocosfl.utils.summary import duration, print_summary

KINDS = ("probe", "knn")
SPLITS = ("train", "val", "test")


def knn_metrics(
    feats: dict[str, Split], num_classes: int, name: str, k: int, temperature: float
) -> dict[str, float]:
    """kNN top-1 of the val and test features against the training features as the bank."""
    bank, bank_labels = feats["train"]
    metrics = {}
    for split in ("val", "test"):
        queries, labels = feats[split]
        scores = knn_predict(queries, bank, bank_labels, num_classes, k, temperature)
        metrics[f"{split}/{name}_top1"] = accuracy(scores, labels, num_classes)
    return metrics


def log_run(
    loggers: list[Logger],
    hyperparams: dict[str, Any],
    metrics: dict[str, float],
    result: ProbeResult | None,
) -> None:
    """Send the config, the probe's learning curve (one step an epoch) and the final metrics."""
    curve = list(zip(result.val_curve, result.train_loss, strict=True)) if result else []
    for logger in loggers:
        logger.log_hyperparams(hyperparams)
        for epoch, (val, loss) in enumerate(curve, 1):
            logger.log_metrics({"probe/val_top1": val, "probe/train_loss": loss}, step=epoch)
        logger.log_metrics(metrics, step=len(curve))  # W&B steps only move forward
        logger.finalize("success")


@with_num_threads
def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Score ``cfg.ckpt_path`` as ``cfg.eval`` says, log it, and write ``metrics.json``;
    returns its content."""
    ckpt_path = required_checkpoint(cfg)
    kind, name = cfg.eval.kind, cfg.eval.name
    if kind not in KINDS:
        raise ConfigError(f"eval.kind={kind!r}; choose {' or '.join(KINDS)}")
    settings = ProbeSettings.from_config(cfg.eval.probe) if kind == "probe" else None
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()

    module = load_module(ckpt_path)
    seed = module.run_config["seed"] if cfg.seed is None else cfg.seed
    datamodule = load_datamodule(ckpt_path, **data_overrides(cfg))
    datamodule.setup()
    encoder = module.encoder(cfg.eval.feature)
    device = resolve_device(cfg.device)
    feats = {s: extract_features(encoder, datamodule.eval_dataloader(s), device) for s in SPLITS}
    num_classes = datamodule.num_classes

    result = None
    if settings is None:
        metrics = knn_metrics(feats, num_classes, name, cfg.eval.k, cfg.eval.temperature)
    else:
        result = train_probe(
            feats["train"], feats["val"], num_classes, settings, seed, test=feats["test"]
        )
        metrics = {f"val/{name}_top1": result.val_top1, f"test/{name}_top1": result.test_top1}
        (out_dir / "probe.json").write_text(
            json.dumps({"classes": datamodule.classes, **result.to_dict()}, indent=1) + "\n"
        )
    hyperparams = {**OmegaConf.to_container(cfg, resolve=True), "seed": seed}
    hyperparams["run"] = module.run_config  # the training run's settings, to filter runs by
    log_run(instantiate_each(cfg.logger), hyperparams, metrics, result)
    record = write_metrics(
        out_dir / "metrics.json", metrics, seed=seed, eval=name, ckpt_path=ckpt_path
    )
    rows = [("run directory", out_dir), ("checkpoint", cfg.ckpt_path), ("evaluation", name)]
    rows += [(f"{key} (%)", value) for key, value in metrics.items()]
    rows.append(("wall time", duration(time.monotonic() - started)))
    print_summary(f"eval: {name} done", rows, [f"make attack CKPT={cfg.ckpt_path}"])
    return record


main = hydra_entry("eval", evaluate)

if __name__ == "__main__":
    main()
