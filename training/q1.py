"""Train a Q1 Fashion-MNIST classifier (the seed's nets or the submission's FashionNet).

    python -m training.q1 --arch fashionnet --data-root ../shared/data/fashion-mnist --epochs 10

The course's split: train = the first 55,000 training images, validation = the last 5,000; the official
test set is reported too. Writes `<out>/model.pt` (state dict), `metrics.jsonl`, `run.json`, `curves.png`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from grader.reference import read_fashion_mnist
from submission.models import Q1_ARCHS, q1_ablation_net
from training.common import RunLog, pick_device, seed_everything

DEFAULT_ARCH = "fashionnet"

TRAIN_SIZE = 55_000
ABLATION_STEPS = {
    "baseline": {},
    "bn": {"batchnorm": True},
    "fc1": {"batchnorm": True, "hidden_fc": True},
    "fc2": {"batchnorm": True, "hidden_fc": True, "second_dropout": True},
    "wide": {"batchnorm": True, "hidden_fc": True, "second_dropout": True, "wide": True},
}


def load_data(root: Path | None) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The three splits as float tensors in [0, 1] (N, 1, 28, 28) and int64 labels."""
    if root is None:
        from torchvision.datasets import FashionMNIST

        cache = Path.home() / ".cache" / "fashion-mnist"
        train_set, test_set = (FashionMNIST(cache, train=t, download=True) for t in (True, False))
        train = (train_set.data.numpy(), train_set.targets.numpy())
        test = (test_set.data.numpy(), test_set.targets.numpy())
    else:
        train, test = read_fashion_mnist(root, "train"), read_fashion_mnist(root, "test")

    def tensors(images: np.ndarray, labels: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(images).float().div_(255).unsqueeze(1), torch.from_numpy(labels).long()

    return {
        "train": tensors(train[0][:TRAIN_SIZE], train[1][:TRAIN_SIZE]),
        "val": tensors(train[0][TRAIN_SIZE:], train[1][TRAIN_SIZE:]),
        "test": tensors(*test),
    }


def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels (zero padding), per image."""
    n = len(x)
    flip = torch.rand(n, generator=gen) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    padded = F.pad(x, (2, 2, 2, 2))
    dx, dy = torch.randint(0, 5, (2, n), generator=gen)
    rows = (dy.view(n, 1) + torch.arange(28)).view(n, 1, 28, 1).expand(n, 1, 28, 32)
    padded = padded.gather(2, rows)
    cols = (dx.view(n, 1) + torch.arange(28)).view(n, 1, 1, 28).expand(n, 1, 28, 28)
    return padded.gather(3, cols)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[float, float]:
    model.eval()
    loss, correct = 0.0, 0
    for i in range(0, len(x), 1000):
        logits = model(x[i : i + 1000].to(device))
        target = y[i : i + 1000].to(device)
        loss += F.cross_entropy(logits, target, reduction="sum").item()
        correct += (logits.argmax(1) == target).sum().item()
    return loss / len(x), correct / len(x)


def build_model(args: argparse.Namespace) -> torch.nn.Module:
    if args.ablation is not None:
        return q1_ablation_net(**ABLATION_STEPS[args.ablation])
    return Q1_ARCHS[args.arch or DEFAULT_ARCH]()


def main(args: argparse.Namespace) -> dict[str, float]:
    gen = seed_everything(args.seed)
    device = pick_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    data = load_data(args.data_root)
    model = build_model(args).to(device)
    print(model)
    name = args.ablation or args.arch or DEFAULT_ARCH
    out = args.out or Path("runs") / f"q1-{name}-seed{args.seed}"
    log = RunLog(out, {"question": "q1", "model": name, **vars(args)})
    x_train, y_train = data["train"]
    steps_per_epoch = -(-len(x_train) // args.batch_size)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=args.lr, epochs=args.epochs, steps_per_epoch=steps_per_epoch
    ) if args.one_cycle else None
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        total = 0.0
        for i in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}/{args.epochs}", leave=False):
            idx = order[i : i + args.batch_size]
            xb = augment(x_train[idx], gen) if args.augment else x_train[idx]
            loss = F.cross_entropy(model(xb.to(device)), y_train[idx].to(device), label_smoothing=args.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            total += loss.item() * len(idx)
        val_loss, val_acc = evaluate(model, *data["val"], device)
        row = {"epoch": epoch, "train_loss": total / len(x_train), "val_loss": val_loss, "val_accuracy": val_acc,
               "seconds": time.perf_counter() - start}
        log.log(**row)
        print(f"epoch {epoch}: train loss {row['train_loss']:.4f}  val loss {val_loss:.4f}  "
              f"val acc {100 * val_acc:.1f} %  ({row['seconds']:.0f} s)")
    _, test_acc = evaluate(model, *data["test"], device)
    summary = {"val_accuracy": log.rows[-1]["val_accuracy"], "test_accuracy": test_acc,
               "train_seconds": log.rows[-1]["seconds"], "device": str(device)}
    log.finish(summary, model.cpu().state_dict(),
               f"Q1 {name}: val {100 * summary['val_accuracy']:.1f} %, test {100 * test_acc:.1f} %")
    print(f"Q1 {name}: val accuracy {100 * summary['val_accuracy']:.2f} %, test accuracy {100 * test_acc:.2f} %, "
          f"{summary['train_seconds']:.0f} s on {device}")
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    model = p.add_mutually_exclusive_group()  # an ablation step is a model of its own: never both
    model.add_argument("--arch", choices=sorted(Q1_ARCHS), help=f"model (default: {DEFAULT_ARCH})")
    model.add_argument("--ablation", choices=list(ABLATION_STEPS), help="train one step of the seed's ablation instead")
    p.add_argument("--data-root", type=Path, help="folder of the IDX files (default: download with torchvision)")
    p.add_argument("--epochs", type=int, default=10, help="default: 10")
    p.add_argument("--batch-size", type=int, default=128, help="default: 128")
    p.add_argument("--lr", type=float, default=3e-3, help="peak learning rate of AdamW (default: 3e-3)")
    p.add_argument("--weight-decay", type=float, default=5e-4, help="default: 5e-4")
    p.add_argument("--label-smoothing", type=float, default=0.0, help="default: 0")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn off flips and shifts")
    p.add_argument("--constant-lr", dest="one_cycle", action="store_false", help="no one-cycle schedule")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0, help="default: 0")
    p.add_argument("--out", type=Path, help="run folder (default: runs/q1-<model>-seed<seed>)")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
