"""What one attack measured, and how it is shown and saved: :class:`AttackResult`.

``AttackResult.save`` writes what both the training callback and ``python -m mocosfl.attack``
leave in a run directory: ``reconstructions.png`` and ``attack.json``.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision.utils import make_grid

from mocosfl.privacy.decoder import Decoder
from mocosfl.privacy.protocol import DEFAULT_PROTOCOL, get_protocol
from mocosfl.utils.plots import image_pair_grid

GRID_FILE, SUMMARY_FILE = "reconstructions.png", "attack.json"


@dataclasses.dataclass
class AttackResult:
    """What one attack measured. Images are float [n, 3, S, S] on [0, 1], on the CPU;
    ``originals`` are what the reconstructions were scored against (under the paper's protocol
    the faded JPEG copies of the targets: :func:`~mocosfl.privacy.protocol.target_views`)."""

    mse: float
    ssim: float
    psnr: float  # dB, the mean over images of 10 log10(1 / per-image MSE)
    originals: torch.Tensor
    reconstructions: torch.Tensor
    val_curve: list[tuple[int, float]]  # (decoder step, validation MSE) after every pass
    best_step: int  # the step whose decoder was kept
    num_aux: int  # auxiliary images, training and validation parts together
    seconds: float  # wall time of the whole attack
    protocol: str = DEFAULT_PROTOCOL  # the protocol that measured it
    # The kept decoder (eval mode), to score it on other targets
    # (:func:`~mocosfl.privacy.attack.scoring.score_decoder`).
    decoder: Decoder | None = dataclasses.field(default=None, repr=False)

    @property
    def prefix(self) -> str:
        """``attack`` (the corrected protocol) or ``attack_<protocol>``: the metrics' prefix."""
        return get_protocol(self.protocol).prefix

    def metrics(self) -> dict[str, float]:
        """The logged scalars: ``attack/mse``, ``attack/ssim``, ``attack/psnr`` (``attack_paper/*``
        under the paper's protocol, so that the two are never mixed)."""
        scores = {"mse": self.mse, "ssim": self.ssim, "psnr": self.psnr}
        return {f"{self.prefix}/{name}": value for name, value in scores.items()}

    def grid(self, count: int = 16) -> torch.Tensor:
        """float [3, H, W] on [0, 1]: ``count`` originals in the top row, their
        reconstructions below, at their own size (for a notebook's ``imshow``)."""
        k = min(count, self.originals.shape[0])
        pairs = torch.cat([self.originals[:k], self.reconstructions[:k]])
        return make_grid(pairs, nrow=k, padding=1, pad_value=1.0)

    def grid_image(self, count: int | None = None, per_row: int = 16) -> Image.Image:
        """The readable grid of ``reconstructions.png``: the first ``count`` targets (None: all),
        ``per_row`` a row, originals over reconstructions, upscaled, titled with the scores."""
        n = self.originals.shape[0]
        k = n if count is None else max(1, min(count, n))
        title = (
            f"model inversion: {self.prefix}/mse {self.mse:.4f}   "  # the prefix names the protocol
            f"ssim {self.ssim:.3f}   psnr {self.psnr:.2f} dB   ({k} of {n} targets, "
            f"{self.num_aux} auxiliary images)"
        )
        return image_pair_grid(self.originals[:k], self.reconstructions[:k], title, per_row)

    def summary(self) -> dict[str, Any]:
        """JSON-ready scalars (everything but the images)."""
        skip = {"originals", "reconstructions", "decoder"}
        names = [f.name for f in dataclasses.fields(self) if f.name not in skip]
        return {name: getattr(self, name) for name in names}

    def save(self, out_dir: Path | str, grid_images: int | None = None) -> list[Path]:
        """Write ``reconstructions.png`` (:meth:`grid_image`) and ``attack.json``
        (:meth:`summary`) into ``out_dir``; returns their paths."""
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        grid, summary = out_dir / GRID_FILE, out_dir / SUMMARY_FILE
        self.grid_image(grid_images).save(grid)
        summary.write_text(json.dumps(self.summary(), indent=1) + "\n")
        return [grid, summary]
