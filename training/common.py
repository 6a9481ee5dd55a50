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
    """One JSON line per epoch in `<out>/metrics.jsonl`, plus a PNG of the curves at the end."""

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

    def plot(self, title: str) -> Path:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = [k for k in self.rows[0] if k != "epoch"]
        losses = [k for k in keys if "loss" in k]
        scores = [k for k in keys if "loss" not in k and k not in ("lr", "seconds")]
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        epochs = [r["epoch"] for r in self.rows]
        for ax, group, label in ((axes[0], losses, "loss"), (axes[1], scores, "score")):
            for k in group:
                ax.plot(epochs, [r.get(k, np.nan) for r in self.rows], marker=".", label=k)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(title)
        fig.tight_layout()
        path = self.out_dir / "curves.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        return path
