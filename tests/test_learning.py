"""Real learning on the real CIFAR-10 (the JPEG copy in ../shared/data), a few minutes on a CPU.

Setting: ``experiment=cifar10_quick`` (the fastest learner per second we found at this size, see
README): 5,000 training images, 10 clients of 10 images a step (server batch 100), ResNet-18 at
width 16 cut at layer 1, plain (one-way) MoCo loss, 120 steps, 1 thread (make test runs two
tests side by side). The FL-SSL baselines FL-MoCo and FedBYOL train on the same images
(FL_SSL_CLIENTS below). kNN top-1 on
the 10,000 test images must beat the same network at its random initialisation by at least 4
points.
"""

import hashlib
import json
import os
import warnings
from pathlib import Path

import hydra
import lightning as L
import pytest
import torch
from omegaconf import OmegaConf

from mocosfl.data import build_datamodule
from mocosfl.evaluation import knn_top1
from mocosfl.train import train

SETTINGS = ["experiment=cifar10_quick"]
# The FL-SSL baselines on cifar10_quick's images: 5 clients of 20 images a step (the same 100
# images a step, fewer and larger local batches, which a CPU runs faster), 60 steps; BYOL's heads
# at this width's scale (EasyFL's 4096/2048 would be most of a CPU step).
FL_SSL_CLIENTS = [
    "sfl.num_clients=5",
    "sfl.clients_per_step=5",
    "sfl.client_batch_size=20",
    "trainer.max_steps=60",
]
BYOL_HEADS = [
    "module.head_hidden_dim=512",
    "module.head_out_dim=128",
    "module.predictor_hidden_dim=512",
]
METHODS = [
    pytest.param("mocosfl", [], marks=pytest.mark.long(seconds=125), id="mocosfl"),
    pytest.param("flmoco", FL_SSL_CLIENTS, marks=pytest.mark.long(seconds=110), id="flmoco"),
    pytest.param(
        "fedbyol",
        [*FL_SSL_CLIENTS, *BYOL_HEADS],
        marks=pytest.mark.long(seconds=150),
        id="fedbyol",
    ),
]


def knn_at_init(module, datamodule, data_settings: str, cache: Path) -> tuple[float, int]:
    """Test kNN top-1 (%) and test images of a network at initialisation, measured once per test
    session for each initial backbone and data: every method builds the same backbone from the
    same seed, and the fingerprint of its weights and of ``data_settings``, not the method's
    name, decides whether a measurement is reused (identical weights on identical images:
    identical kNN)."""
    state = module.encoder("backbone").state_dict()
    weights = b"".join(t.cpu().numpy().tobytes() for t in state.values())
    digest = hashlib.sha256(weights + data_settings.encode())
    path = cache / f"knn_at_init_{digest.hexdigest()[:16]}.json"
    if path.is_file():
        return tuple(json.loads(path.read_text()))
    measured = knn_top1(module.encoder("backbone"), datamodule)["test"]
    partial = path.with_suffix(f".{os.getpid()}")  # another worker may be writing it too
    partial.write_text(json.dumps(measured))
    partial.replace(path)
    return measured


@pytest.mark.slow
@pytest.mark.parametrize("method, settings", METHODS)
def test_learns_on_real_cifar10(compose_train, cifar10_root, method, settings):
    cache = cifar10_root.parent
    cfg = compose_train([*SETTINGS, f"module={method}", *settings, f"data.root={cifar10_root}"])
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
    data_settings = OmegaConf.to_yaml(cfg.data)
    at_init, test_images = knn_at_init(initial, datamodule, data_settings, cache)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        metrics = train(cfg)
    assert not [w for w in caught if "collapsed" in str(w.message)], "a false collapse alarm"
    trained = metrics["test/knn_top1"]
    steps = cfg.trainer.max_steps
    record = {"method": method, "knn_top1_at_init": at_init, "knn_top1_trained": trained}
    record["steps"] = steps
    (Path(cfg.paths.output_dir) / "learning.json").write_text(json.dumps(record))
    print(
        f"\nreal CIFAR-10, {method}: kNN top-1 {at_init:.2f}% at init -> {trained:.2f}% after "
        f"{steps} steps"
    )
    assert test_images >= 2000
    assert trained >= at_init + 4.0, record
