"""Figures that runs save and log."""

import math

# No backend is forced here: without a display matplotlib draws off-screen by itself, and a
# notebook that imports this module keeps its inline figures.
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.ticker import MaxNLocator
from PIL import Image, ImageDraw, ImageFont

_MAX_LEGEND_CLASSES = 20  # more names than this make a legend nobody reads


def _legend_inches(classes: list[str], columns: int) -> float:
    """Rough width of a "small" legend of ``classes``: a colour patch and ~0.075 in a character
    at 8 pt, so the figure can be widened by it and the plot keeps its own width."""
    return columns * (0.6 + 0.075 * max(len(name) for name in classes))


def label_histogram(counts: np.ndarray, classes: list[str] | None = None) -> plt.Figure:
    """Stacked bar chart of each client's labels. counts: [num_clients, num_classes].

    The figure lays itself out (constrained layout, the legend outside the plot on the right and
    the figure widened by it), so that the caller's plain ``savefig`` clips neither the title nor
    the class names, at 5 clients as at 1000."""
    num_clients, num_classes = counts.shape
    named = bool(classes) and num_classes <= _MAX_LEGEND_CLASSES
    columns = 1 if num_classes <= 10 else 2
    # ~0.15 in a bar, at least wide enough for the title, at most a screen's width.
    plot_inches = min(max(4.0, 1.2 + 0.15 * num_clients), 16.0)
    legend_inches = _legend_inches(classes, columns) if named else 0.0
    fig = plt.figure(figsize=(plot_inches + legend_inches, 4), layout="constrained")
    ax = fig.subplots()
    cmap = plt.get_cmap("tab20" if num_classes > 10 else "tab10")
    # Touching bars of width 1 drawn as one step-shaped area a class: a bar a client and class
    # would be 10,000 patches at 1000 clients, most of a short run's time to draw.
    edges = np.arange(num_clients + 1) - 0.5
    tops = np.cumsum(counts, axis=1)
    bottoms = tops - counts
    for c in range(num_classes):
        ax.fill_between(
            edges,
            np.append(bottoms[:, c], bottoms[-1, c]),
            np.append(tops[:, c], tops[-1, c]),
            step="post",
            color=cmap(c % cmap.N),
            label=classes[c] if named else None,
            linewidth=0,
        )
    ax.set_xlim(edges[0], edges[-1])
    ax.set_ylim(0, None)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # clients are whole numbers
    ax.set_xlabel("client")
    ax.set_ylabel("training images")
    ax.set_title("label distribution per client")
    if named:
        fig.legend(loc="outside right upper", fontsize="small", ncol=columns)
    return fig


# The reconstruction grid: sizes in pixels.
_GAP = 2  # between images
_PAIR_GAP = 12  # between one (original, reconstruction) pair of rows and the next
_MARGIN = 8
_FONT_SIZE = 14


def _font(size: int) -> ImageFont.ImageFont:
    """Pillow's own scalable font (no system fonts needed); its bitmap font without FreeType."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow < 10.1, or no FreeType
        return ImageFont.load_default()


def _tiles(images: torch.Tensor, scale: int) -> np.ndarray:
    """float [n, 3, S, S] on [0, 1] -> uint8 [n, S * scale, S * scale, 3], nearest upscaling (no
    blur: the reconstruction's own blur is what the reader must see)."""
    big = F.interpolate(images.float().clamp(0, 1), scale_factor=scale, mode="nearest")
    return (big * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_pair_grid(
    originals: torch.Tensor,
    reconstructions: torch.Tensor,
    title: str,
    per_row: int = 16,
    min_size: int = 64,
) -> Image.Image:
    """Originals over their reconstructions, ``per_row`` pairs a row-pair, as many row-pairs as
    needed, each row labelled and the whole titled. Images are float [n, 3, S, S] on [0, 1],
    upscaled by a whole factor to at least ``min_size`` pixels."""
    n, size = originals.shape[0], originals.shape[-1]
    scale = max(1, math.ceil(min_size / size))
    tile, cols = size * scale, min(per_row, n)
    font = _font(_FONT_SIZE)
    labels = ("original", "reconstruction")
    left = _MARGIN + math.ceil(max(font.getlength(label) for label in labels)) + _MARGIN
    top = _MARGIN + _FONT_SIZE + _MARGIN
    pair_height = 2 * tile + _GAP
    pairs = math.ceil(n / cols)
    width = max(left + cols * (tile + _GAP), math.ceil(font.getlength(title)) + 2 * _MARGIN)
    height = top + pairs * pair_height + (pairs - 1) * _PAIR_GAP + _MARGIN
    canvas = Image.new("RGB", (width + _MARGIN, height), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((_MARGIN, _MARGIN), title, fill="black", font=font)
    for row, images in enumerate((_tiles(originals, scale), _tiles(reconstructions, scale))):
        for i, pixels in enumerate(images):
            x = left + (i % cols) * (tile + _GAP)
            y = top + (i // cols) * (pair_height + _PAIR_GAP) + row * (tile + _GAP)
            canvas.paste(Image.fromarray(pixels), (x, y))
        for pair in range(pairs):
            y = top + pair * (pair_height + _PAIR_GAP) + row * (tile + _GAP)
            draw.text((_MARGIN, y + (tile - _FONT_SIZE) // 2), labels[row], fill="black", font=font)
    return canvas
