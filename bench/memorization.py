"""Calibrate the memorization probe's line (grader/memorization.py): how far honest models and lookups of
public labels drop from a held-out image's original to its transformed copy.

    PYTHONPATH=. .venv/bin/python bench/memorization.py --data reference_data \\
        --q1 reference=submission/q1_fashionnet.pt seed1=fashionnet:/var/tmp/calib/q1-seed1/model.pt \\
        --q2 reference=submission/q2_segnet_fp16.pt --seeds 5

Each model predicts the probe's images (originals with copies mixed in, as the grader's child sees them)
for several probe seeds; the lookups are the review's attack: a table from each public image's bytes to
its label, answering class 0 where it has no entry, or falling back to the reference model. Models run
here, in this process, not in the sandbox: the probe's arithmetic is the grader's own (Probe.route).
"""
from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path, PosixPath
from typing import Callable

import numpy as np
import torch

from grader.memorization import build
from grader.metrics import quantized_softmax
from grader.reference import load_reference

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "submission"))
from models import Q1_ARCHS, SegNet  # noqa: E402  (the submission's own networks)

Predict = Callable[[np.ndarray], np.ndarray]  # uint8 images -> float scores


def q1_model(spec: str) -> Predict:
    """`path` (the reference FashionNet) or `arch:path` (a state dict written by training.q1)."""
    arch, _, path = spec.rpartition(":")
    model = Q1_ARCHS[arch or "fashionnet"]()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model.eval()
    return lambda x: model(torch.from_numpy(x).float().div(255).unsqueeze(1)).numpy()


def q2_model(path: str) -> Predict:
    with torch.serialization.safe_globals([PosixPath]):  # training.q2 stores its arguments, paths among them
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    model = SegNet(num_convs=checkpoint["num_convs"])
    model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
    model.eval()
    return lambda x: model(torch.from_numpy(x).float().div(255).permute(0, 3, 1, 2)).numpy()


def lookup(images: np.ndarray, labels: np.ndarray, classes: int, fallback: Predict | None) -> Predict:
    """The review's attack: the label of every public image by its bytes' hash."""
    table = {hashlib.sha256(image.tobytes()).digest()[:8]: label for image, label in zip(images, labels)}

    def predict(x: np.ndarray) -> np.ndarray:
        out = np.zeros((len(x), classes, *x.shape[1:3]) if x.ndim == 4 else (len(x), classes), np.float32)
        if fallback is not None:
            out[:] = fallback(x)
        for i, image in enumerate(x):
            label = table.get(hashlib.sha256(image.tobytes()).digest()[:8])
            if label is not None:
                onehot = np.eye(classes, dtype=np.float32)[label]
                out[i] = onehot if x.ndim == 3 else np.moveaxis(onehot, -1, 0)
        return out

    return predict


@torch.inference_mode()
def drops(question: str, data: Path, predict: Predict, seeds: int, fraction: float, batch: int, count: int) -> list[dict]:
    ref = load_reference(data, question)
    images, labels = ref.images[:count or None], ref.labels[:count or None]
    out = []
    for s in range(seeds):
        probe = build(question, images, labels, len(ref.classes), fraction, f"calibration-{s}")
        for start in range(0, len(probe.images), batch):
            scores = predict(probe.images[start:start + batch])
            probe.route(start, scores if question == "q1" else quantized_softmax(scores))
        out.append(probe.result())
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("reference_data"))
    p.add_argument("--q1", nargs="*", default=[], metavar="NAME=[ARCH:]PATH", help="Q1 models")
    p.add_argument("--q2", nargs="*", default=[], metavar="NAME=PATH", help="Q2 models (SegNet checkpoints)")
    p.add_argument("--seeds", type=int, default=5, help="probe seeds per model (default: 5)")
    p.add_argument("--fraction", type=float, default=0.1, help="share of the images copied (default: 0.1)")
    p.add_argument("--images", type=int, default=0, help="grade only the first N held-out images (default: all)")
    args = p.parse_args()
    torch.manual_seed(0)
    for question, specs, loader, batch in (("q1", args.q1, q1_model, 500), ("q2", args.q2, q2_model, 4)):
        if not specs:
            continue
        ref = load_reference(args.data, question)
        models = {name: loader(path) for name, _, path in (s.partition("=") for s in specs)}
        first = next(iter(models.values()))
        models["lookup, class 0 elsewhere"] = lookup(ref.images, ref.labels, len(ref.classes), None)
        models[f"lookup, {next(iter(models))} elsewhere"] = lookup(ref.images, ref.labels, len(ref.classes), first)
        print(f"\n{question.upper()}: {min(args.images or len(ref), len(ref))} images, {args.fraction:g} copied, "
              f"{args.seeds} probe seeds")
        print("| model | metric on the originals | on the copies | drop (min) | drop (mean) | drop (max) |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for name, predict in models.items():
            rows = drops(question, args.data, predict, args.seeds, args.fraction, batch, args.images)
            mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
            print(f"| {name} | {mean('originals'):.4f} | {mean('copied'):.4f} | {min(r['drop'] for r in rows):.4f} | "
                  f"{mean('drop'):.4f} | "
                  f"{max(r['drop'] for r in rows):.4f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
