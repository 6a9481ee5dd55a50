"""Pictures for people who would rather look than read: confusion matrices and segmentation overlays."""
from __future__ import annotations

from pathlib import Path

import numpy as np

PALETTE = np.array([[0, 0, 0], [230, 25, 75], [255, 225, 25], [60, 180, 75], [0, 130, 200], [245, 130, 48],
                    [145, 30, 180], [70, 240, 240], [240, 50, 230], [210, 245, 60]], np.uint8)


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def confusion_matrix_png(cm: np.ndarray, classes: list[str], title: str, path: Path) -> Path:
    """Rows = ground truth, normalised per row (the per-class accuracy is the diagonal), counts printed."""
    plt = pyplot()
    with np.errstate(invalid="ignore", divide="ignore"):
        share = cm / cm.sum(axis=1, keepdims=True)
    size = max(5.0, 0.6 * len(classes) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(np.nan_to_num(share), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    for (i, j), count in np.ndenumerate(cm):
        if count:
            ax.text(j, i, f"{count}", ha="center", va="center", fontsize=7,
                    color="white" if share[i, j] > 0.5 else "black")
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the row")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def overlays_png(examples: list[tuple[str, np.ndarray, np.ndarray, np.ndarray]], classes: list[str], path: Path) -> Path:
    """One row per image: the photo, the ground truth and the prediction, colour-coded by class."""
    plt = pyplot()
    fig, axes = plt.subplots(len(examples), 3, figsize=(9, 3 * len(examples)), squeeze=False)
    for row, (name, image, label, pred) in zip(axes, examples):
        panels = (image, (0.5 * image + 0.5 * PALETTE[label]).astype(np.uint8),
                  (0.5 * image + 0.5 * PALETTE[pred]).astype(np.uint8))
        for ax, panel, caption in zip(row, panels, (f"image {name}", "ground truth", "prediction")):
            ax.imshow(panel)
            ax.set_title(caption)
            ax.axis("off")
    handles = [plt.Rectangle((0, 0), 1, 1, color=PALETTE[i] / 255) for i in range(len(classes))]
    fig.legend(handles, classes, loc="lower center", ncol=len(classes))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
