"""How far apart the two attack protocols are on one model: the measurement in the README.

Attacks one checkpoint's FedAvg client under ``attack=corrected`` and ``attack=paper`` (each its
own decoder, auxiliary set and validation rule, as ``python -m mocosfl.attack`` runs them), then
scores each kept decoder on the targets of both protocols. The diagonal of the printed table is
what each protocol reports; the off-diagonal cells separate what a protocol trains (decoder
initialisation, auxiliary set, JPEG ground truth, validation rule) from what it scores (target
contrast, JPEG ground truth, SSIM border). The two attacks run in parallel processes, one thread
each. ``--data`` replaces data settings of the run for the attacker's images: a quick run that
trained on 5,000 images gets the auxiliary sets of a full one (450 and 500 CIFAR-10 images).

    .venv/bin/python -m mocosfl.train experiment=cifar10_quick data.root=<CIFAR-10 folder>
    .venv/bin/python benchmarks/attack_protocols.py --ckpt <run>/checkpoints/final.ckpt \
        --data max_train_images=null val_images=5000
"""

from __future__ import annotations

import argparse
import json
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import torch
import yaml

from mocosfl.api import load_datamodule, load_module
from mocosfl.privacy import AttackSettings, run_attack, score_decoder, select_attack_images
from mocosfl.privacy.protocol import PROTOCOLS

ROOT = Path(__file__).resolve().parents[1]


def attack_both_ways(ckpt: str, data: dict, protocol: str, epochs: int, seed: int) -> dict:
    """One protocol's attack on ``ckpt`` (its images from the run's data, ``data`` replacing
    settings); its decoder scored on the targets of every protocol."""
    torch.set_num_threads(1)
    client = load_module(ckpt).bank.averaged_client()
    datamodule = load_datamodule(ckpt, **data)
    datamodule.setup()
    aux, targets = select_attack_images(
        datamodule, 0.01, 128, seed, aux_pool=PROTOCOLS[protocol].aux_pool
    )
    stats = (datamodule.mean, datamodule.std)
    settings = AttackSettings(epochs=epochs, seed=seed, protocol=protocol)
    result = run_attack(client, aux, targets, *stats, settings)
    scored = {
        other: score_decoder(client, result.decoder, targets, *stats, other)[0]
        for other in PROTOCOLS
    }
    assert scored[protocol]["mse"] == result.mse  # the diagonal is the protocol's own score
    return {"num_aux": result.num_aux, "seconds": result.seconds, "scored": scored}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", required=True, help="a checkpoint written by mocosfl.train")
    parser.add_argument(
        "--data",
        nargs="+",
        default=[],
        metavar="KEY=VALUE",
        help="data settings for the attacker's images, e.g. root=<folder> max_train_images=null",
    )
    parser.add_argument("--epochs", type=int, default=50, help="decoder epochs (the original's 50)")
    parser.add_argument("--seed", type=int, default=0, help="images and decoder (as attack's seed)")
    parser.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/attack.json")
    args = parser.parse_args()
    if not Path(args.ckpt).is_file():
        raise SystemExit(f"error: --ckpt {args.ckpt} does not exist")
    data = {k: yaml.safe_load(v) for k, _, v in (entry.partition("=") for entry in args.data)}
    names = list(PROTOCOLS)
    with ProcessPoolExecutor(len(names)) as pool:
        jobs = [
            pool.submit(attack_both_ways, args.ckpt, data, name, args.epochs, args.seed)
            for name in names
        ]
        runs = dict(zip(names, (job.result() for job in jobs)))
    print(f"attack MSE on {args.ckpt}: 128 targets, {args.epochs} decoder epochs, seed {args.seed}")
    print(f"  {'decoder trained as':20s}" + "".join(f"{'scored as ' + n:>20s}" for n in names))
    for trained, run in runs.items():
        cells = "".join(f"{run['scored'][n]['mse']:20.5f}" for n in names)
        print(f"  {trained:20s}{cells}   ({run['num_aux']} aux images, {run['seconds']:.0f} s)")
    own = {n: runs[n]["scored"][n]["mse"] for n in names}
    print(
        "  each protocol's own score: "
        + ", ".join(f"{n} {v:.5f}" for n, v in own.items())
        + f"; corrected / paper = {own['corrected'] / own['paper']:.2f}x"
    )
    args.json.parent.mkdir(parents=True, exist_ok=True)
    record = {"ckpt": args.ckpt, "data": data, "epochs": args.epochs, "seed": args.seed}
    record["runs"] = runs
    args.json.write_text(json.dumps(record, indent=1) + "\n")


if __name__ == "__main__":
    main()
