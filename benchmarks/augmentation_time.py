"""Milliseconds the batched MoCo v2 augmentation takes for a batch of images, for each blur
strength side by side in one run (``data.blur``: pil, kernel10), on the CPU.

    .venv/bin/python benchmarks/augmentation_time.py --images 200 --size 32 --repeats 5

Prints the best of ``--repeats`` timed calls per blur (after one untimed call) and the ratio
of each to ``pil``. Times depend on the machine and on what else runs on it: measure on a quiet
one.
"""

import argparse
import time

import torch

from mocosfl.data import MoCoV2Augmentation
from mocosfl.data.image_set import NAMED_STATS
from mocosfl.data.transforms import BLUR_KINDS


def best_ms(augmentation: MoCoV2Augmentation, images: torch.Tensor, repeats: int) -> float:
    """Best wall time in ms of ``repeats`` calls on ``images`` (uint8 [N, 3, S, S])."""
    augmentation(images, torch.Generator().manual_seed(0))  # untimed: first-call costs
    times = []
    for seed in range(repeats):
        start = time.perf_counter()
        augmentation(images, torch.Generator().manual_seed(seed))
        times.append(time.perf_counter() - start)
    return 1000 * min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    images = torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8)
    mean, std = NAMED_STATS["cifar10"]
    ms = {
        blur: best_ms(MoCoV2Augmentation(args.size, mean, std, blur=blur), images, args.repeats)
        for blur in BLUR_KINDS
    }
    print(
        f"{args.images} images of {args.size} px, {args.threads} thread(s), best of {args.repeats}"
    )
    for blur, value in ms.items():
        print(f"  blur={blur:<9} {value:8.1f} ms   {value / ms['pil']:.2f}x pil")


if __name__ == "__main__":
    main()
