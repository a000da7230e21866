"""The figures runs save: the attack's reconstruction grid and the partition histogram."""

import numpy as np
import pytest
import torch

from mocosfl.privacy import AttackResult
from mocosfl.utils.plots import image_pair_grid, label_histogram

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RED, BLUE = (255, 0, 0), (0, 0, 255)


def solid(n: int, size: int, channel: int) -> torch.Tensor:
    """[n, 3, size, size] images of one pure colour: their pixels are easy to count."""
    images = torch.zeros(n, 3, size, size)
    images[:, channel] = 1.0
    return images


def count(pixels: np.ndarray, colour: tuple[int, int, int]) -> int:
    return int((pixels == colour).all(axis=-1).sum())


@pytest.mark.parametrize("n, size, tile", [(128, 32, 64), (20, 16, 64), (3, 64, 64)])
def test_grid_shows_every_image_upscaled_and_sharp(n, size, tile):
    grid = image_pair_grid(solid(n, size, 0), solid(n, size, 2), "attack/mse 0.0123")
    pixels = np.asarray(grid)
    # Every original and every reconstruction, at tile x tile pixels, nearest (no blended edges).
    assert count(pixels, RED) == n * tile * tile and count(pixels, BLUE) == n * tile * tile
    pairs = -(-n // 16)  # 16 pairs a row
    assert grid.width >= min(n, 16) * tile and grid.height >= pairs * 2 * tile


def test_a_row_pair_more_for_the_17th_image():
    heights = [image_pair_grid(solid(n, 32, 0), solid(n, 32, 2), "t").height for n in (16, 17)]
    assert heights[1] - heights[0] > 2 * 64


def test_attack_results_grid_is_titled_and_capped():
    originals = torch.rand(10, 3, 32, 32)
    result = AttackResult(0.1, 0.2, 10.0, originals, originals, [(1, 0.1)], 1, 500, 1.0)
    assert result.grid_image().size == image_pair_grid(originals, originals, "x" * 90).size
    few, capped = result.grid_image(4), result.grid_image(1000)
    assert few.width < capped.width and capped.size == result.grid_image().size


@pytest.mark.parametrize("num_clients", [5, 100])
def test_partition_figure_fits_its_title_and_legend(num_clients):
    counts = np.random.default_rng(0).integers(0, 50, (num_clients, 10))
    fig = label_histogram(counts, CIFAR10)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    (ax,) = fig.axes
    legends = [*fig.legends, *([ax.get_legend()] if ax.get_legend() else [])]
    assert len(legends) == 1
    texts = [legends[0].get_window_extent(renderer), ax.title.get_window_extent(renderer)]
    texts += [label.get_window_extent(renderer) for label in legends[0].get_texts()]
    box = fig.bbox
    for extent in texts:
        assert box.x0 <= extent.x0 and extent.x1 <= box.x1, (extent, box)
        assert box.y0 <= extent.y0 and extent.y1 <= box.y1, (extent, box)
    assert not ax.get_window_extent(renderer).overlaps(legends[0].get_window_extent(renderer))


def test_partition_figure_is_one_area_a_class_topped_by_each_clients_total():
    """At 1000 clients too: ten shapes to draw, not a bar for every client and class."""
    counts = np.random.default_rng(1).integers(0, 50, (1000, 10))
    (ax,) = label_histogram(counts, CIFAR10).axes
    assert len(ax.collections) == 10 and not ax.patches
    corners = {tuple(v) for v in ax.collections[-1].get_paths()[0].vertices.round(6)}
    for client, total in enumerate(counts.sum(axis=1)):
        assert {(client - 0.5, total), (client + 0.5, total)} <= corners, client
