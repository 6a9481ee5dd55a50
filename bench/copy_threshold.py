"""How much independently trained Q1 models share their mistakes, against copies: the evidence for the
batch's --duplicate-threshold (grader/duplicates.py).

    PYTHONPATH=. .venv/bin/python bench/copy_threshold.py RUN_DIR [RUN_DIR ...] [--data-root ../shared/data/fashion-mnist]

Each RUN_DIR is a `python -m training.q1 --arch fashionnet` run (its model.pt), trained with its own seed.
Beside them: the reference submission's model; a copy of it with its weights nudged (noise of 1 % of each
tensor's spread); and a copy fine-tuned for 200 steps on the training split (what a student who copied and
trained a little would hand in). Prints, for every pair, the shared-error overlap on the reference data's
Q1 images and the fraction of equal predictions. Trusted models only: they are run in this process.
"""
from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from grader.duplicates import similar_predictions
from grader.reference import load_reference, read_fashion_mnist
from submission.models import fashion_net


def _predict(model: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(images), 1000):
            x = torch.from_numpy(images[start : start + 1000]).unsqueeze(1).float().div_(255)
            out.append(model(x).argmax(1).numpy().astype(np.uint8))
    return np.concatenate(out)


def _fine_tuned(model: torch.nn.Module, data_root: Path, steps: int = 200) -> torch.nn.Module:
    images, labels = read_fashion_mnist(data_root, "train")
    tuned = copy.deepcopy(model).train()
    optimizer = torch.optim.AdamW(tuned.parameters(), lr=1e-3)
    rng = np.random.default_rng(7)
    for _ in range(steps):
        idx = rng.choice(55_000, 128, replace=False)
        x = torch.from_numpy(images[idx]).unsqueeze(1).float().div_(255)
        loss = F.cross_entropy(tuned(x), torch.from_numpy(labels[idx]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return tuned


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", type=Path, nargs="+")
    p.add_argument("--data", type=Path, default=Path("reference_data"))
    p.add_argument("--data-root", type=Path, default=Path("../shared/data/fashion-mnist"))
    args = p.parse_args()
    torch.manual_seed(0)
    ref = load_reference(args.data, "q1")
    models = {}
    reference = fashion_net()
    reference.load_state_dict(torch.load("submission/q1_fashionnet.pt", map_location="cpu", weights_only=True))
    models["reference"] = reference
    nudged = copy.deepcopy(reference)
    with torch.no_grad():
        for tensor in nudged.state_dict().values():
            if tensor.is_floating_point() and tensor.numel() > 1:
                tensor.add_(torch.randn_like(tensor) * 0.01 * tensor.std())
    models["reference, nudged"] = nudged
    models["reference, fine-tuned 200 steps"] = _fine_tuned(reference, args.data_root)
    for run in args.runs:
        model = fashion_net()
        model.load_state_dict(torch.load(run / "model.pt", map_location="cpu", weights_only=True))
        models[run.name] = model
    predictions = {name: _predict(model, ref.images) for name, model in models.items()}
    print(f"{len(ref)} Q1 images of {args.data}")
    for name, pred in predictions.items():
        print(f"  {name}: accuracy {np.mean(pred == ref.labels):.4f}")
    print("\n| pair | shared-error overlap | equal predictions |\n| --- | ---: | ---: |")
    for pair in sorted(similar_predictions("q1", predictions, ref.labels), key=lambda p: -p.overlap):
        print(f"| {pair.a} / {pair.b} | {pair.overlap:.3f} | {pair.agreement:.4f} |")


if __name__ == "__main__":
    main()
