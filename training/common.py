"""Pieces shared by the training entry points: seeding, device choice, run logs and training curves."""
from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("--device cuda was asked for, but torch sees no CUDA device")
    return torch.device(name)


class RunLog:
    """One JSON line per epoch in `<out>/metrics.jsonl`; at the end a summary, the model and the curves."""

    def __init__(self, out_dir: Path, meta: dict):
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict] = []
        (out_dir / "run.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
        self._file = (out_dir / "metrics.jsonl").open("w")

    def log(self, **row: float) -> None:
        self.rows.append(row)
        self._file.write(json.dumps(row) + "\n")
        self._file.flush()

    def finish(self, summary: dict, checkpoint: dict, title: str) -> None:
        """Write summary.json, the checkpoint (model.pt) and the curves (curves.png) of a finished run."""
        (self.out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        torch.save(checkpoint, self.out_dir / "model.pt")
        plot_curves(self.rows, self.out_dir / "curves.png", title)


def plot_curves(rows: list[dict], path: Path, title: str) -> Path:
    """Losses on the left, scores on the right; a metric logged only on some epochs is drawn where it exists."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = list(dict.fromkeys(k for row in rows for k in row if k not in ("epoch", "lr", "seconds")))
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, group, label in ((axes[0], [k for k in keys if "loss" in k], "loss"),
                             (axes[1], [k for k in keys if "loss" not in k], "score")):
        for k in group:
            points = [(r["epoch"], r[k]) for r in rows if k in r]
            ax.plot(*zip(*points), marker=".", label=k)
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
