"""Figures that runs save and log."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def label_histogram(counts: np.ndarray, classes: list[str] | None = None) -> plt.Figure:
    """Stacked bar chart of each client's labels. counts: [num_clients, num_classes]."""
    num_clients, num_classes = counts.shape
    fig, ax = plt.subplots(figsize=(min(2 + 0.15 * num_clients, 20), 4))
    bottom = np.zeros(num_clients)
    cmap = plt.get_cmap("tab20" if num_classes > 10 else "tab10")
    for c in range(num_classes):
        label = classes[c] if classes and num_classes <= 20 else None
        ax.bar(np.arange(num_clients), counts[:, c], bottom=bottom, color=cmap(c % cmap.N), label=label, width=1.0)
        bottom += counts[:, c]
    ax.set_xlabel("client")
    ax.set_ylabel("training images")
    ax.set_title("label distribution per client")
    if num_classes <= 20:
        ax.legend(fontsize="small", ncol=2, bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.tight_layout()
    return fig
