"""Real learning on the real CIFAR-10 (the JPEG copy in ../shared/data), a few minutes on a CPU.

Setting: ``experiment=cifar10_quick`` (the fastest learner per second we found at this size, see
README): 5,000 training images, 10 clients of 10 images a step (server batch 100), ResNet-18 at
width 16 cut at layer 1, plain (one-way) MoCo loss, 120 steps, 1 thread (make test runs two
tests side by side). kNN top-1 on the 10,000 test images must beat the same network at its
random initialisation by at least 4 points.
"""

import json
import warnings
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch

from mocosfl.data import build_datamodule
from mocosfl.evaluation import accuracy, extract_features, knn_predict
from mocosfl.train import train

SETTINGS = ["experiment=cifar10_quick"]


def knn_test_top1(module, datamodule) -> tuple[float, int]:
    """kNN top-1 (%) on the test split and the number of test images."""
    encoder = module.encoder("backbone")
    bank, bank_labels = extract_features(encoder, datamodule.eval_dataloader("train"))
    queries, labels = extract_features(encoder, datamodule.eval_dataloader("test"))
    scores = knn_predict(queries, bank, bank_labels, datamodule.num_classes, k=200, temperature=0.1)
    return accuracy(scores, labels, datamodule.num_classes), len(labels)


@pytest.mark.slow
@pytest.mark.long(seconds=140)
def test_mocosfl_learns_on_real_cifar10(compose_train, cifar10_root):
    cfg = compose_train([*SETTINGS, f"data.root={cifar10_root}"])
    torch.set_num_threads(cfg.num_threads)
    # The same network at random initialisation: train() builds it from the same seed.
    L.seed_everything(cfg.seed)
    datamodule = build_datamodule(cfg)
    datamodule.setup("fit")
    initial = hydra.utils.instantiate(
        cfg.module,
        split_model=hydra.utils.instantiate(cfg.model),
        client_sizes=datamodule.client_sizes.tolist(),
    )
    at_init, test_images = knn_test_top1(initial, datamodule)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(cfg)
    assert not [w for w in caught if "collapsed" in str(w.message)], "a false collapse alarm"
    trained = metrics["test/knn_top1"]
    steps = cfg.trainer.max_steps
    record = {"knn_top1_at_init": at_init, "knn_top1_trained": trained, "steps": steps}
    (Path(cfg.paths.output_dir) / "learning.json").write_text(json.dumps(record))
    print(
        f"\nreal CIFAR-10 kNN top-1: {at_init:.2f}% at init -> {trained:.2f}% after {steps} steps"
    )
    assert test_images >= 2000
    assert trained >= at_init + 4.0, record
