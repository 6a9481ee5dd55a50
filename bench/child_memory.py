"""Where a Q2 child's memory goes, step by step: what importing torch and torchvision, the images, the model
and the batches add to its anonymous memory (RssAnon), in one process as the grader's child runs them.

    PYTHONPATH=. .venv/bin/python bench/child_memory.py [--submission submission] [--data reference_data] [--batch 2]

One thread, as at Gradescope's 0.5 CPU. The numbers are the torch build this interpreter has.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path


def anon_mib() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) // 1024
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--submission", type=Path, default=Path("submission"))
    parser.add_argument("--data", type=Path, default=Path("reference_data"))
    parser.add_argument("--batch", type=int, default=2)
    args = parser.parse_args()
    last = anon_mib()

    def step(name: str) -> None:
        nonlocal last
        now = anon_mib()
        print(f"{name:<32} {now:>6} MiB  (+{now - last})")
        last = now

    step("interpreter")
    import numpy as np
    step("numpy")
    import torch
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    step("torch")
    import torchvision  # noqa: F401
    step("torchvision")
    sys.path.insert(0, str(args.submission))
    predict = importlib.import_module("predict")
    step("predict.py")
    from PIL import Image
    names = sorted((args.data / "q2" / "images").glob("*.jpg"))
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in names])
    step(f"{len(images)} images (uint8)")
    with torch.inference_mode():
        for start in range(0, len(images), args.batch):
            x = torch.from_numpy(images[start : start + args.batch]).permute(0, 3, 1, 2).float().div_(255).contiguous()
            predict.predict_q2(x)
            if start == 0:
                step("model loaded, first batch")
    step("all batches")


if __name__ == "__main__":
    main()
