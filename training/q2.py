"""Train the Q2 segmentation net (the seed's ResNet18 FCN) on the assignment's data.

    python -m training.q2 --data-root ../shared/data/mp4-seg --epochs 20 --device cuda

ImageNet-pretrained ResNet18 weights are used when they can be had (torchvision downloads them, or
`--pretrained-file` names a local copy); otherwise the run says so and trains from scratch. Every log,
summary and checkpoint records which of the two it was. Validation uses the grader's own metrics.
"""
from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from grader.reference import seg_stems
from grader.metrics import SegmentationAccumulator, quantize
from submission.models import SegNet, imagenet_resnet18_state
from training.common import RunLog, pick_device, seed_everything


def load_split(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, 3, H, W) uint8 and labels (N, H, W) int64 of one split, in the assignment's order."""
    stems = seg_stems(folder)
    images = np.stack([np.asarray(Image.open(folder / f"{s}.jpg").convert("RGB")) for s in stems])
    labels = np.stack([np.asarray(Image.open(folder / f"{s}.png")) for s in stems])
    return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(labels).long()


def resolve_backbone(args: argparse.Namespace, out: Path) -> tuple[str | None, str]:
    """Path of ImageNet ResNet18 weights, or None with the reason we train from scratch."""
    if args.pretrained_file is not None:
        return str(args.pretrained_file), f"ImageNet-pretrained ResNet18 from {args.pretrained_file}"
    if not args.pretrained:
        return None, "from scratch (--no-pretrained)"
    try:
        state = imagenet_resnet18_state()
    except Exception as exc:  # no internet, as on the course's build machines
        print(f"ImageNet ResNet18 weights could not be downloaded ({type(exc).__name__}: {exc}); "
              "training FROM SCRATCH instead")
        return None, f"from scratch (ImageNet weights unavailable: {type(exc).__name__})"
    path = out / "resnet18-imagenet.pt"
    torch.save(state, path)
    return str(path), "ImageNet-pretrained ResNet18 (torchvision download)"


def augment(images: torch.Tensor, labels: torch.Tensor, gen: torch.Generator,
            min_scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Random resized crop (area in [min_scale, 1]) + horizontal flip, the same for image and label."""
    out_images, out_labels = [], []
    h, w = images.shape[-2:]
    for image, label in zip(images, labels):
        area = h * w * (min_scale + (1 - min_scale) * torch.rand(1, generator=gen).item())
        ratio = math.exp(math.log(3 / 4) + math.log(16 / 9) * torch.rand(1, generator=gen).item())
        ch, cw = min(h, round(math.sqrt(area / ratio))), min(w, round(math.sqrt(area * ratio)))
        top = torch.randint(0, h - ch + 1, (1,), generator=gen).item()
        left = torch.randint(0, w - cw + 1, (1,), generator=gen).item()
        image = TF.resized_crop(image, top, left, ch, cw, [h, w], antialias=True)
        label = TF.resized_crop(label[None], top, left, ch, cw, [h, w], interpolation=TF.InterpolationMode.NEAREST)[0]
        if torch.rand(1, generator=gen).item() < 0.5:
            image, label = image.flip(-1), label.flip(-1)
        out_images.append(image)
        out_labels.append(label)
    return torch.stack(out_images), torch.stack(out_labels)


@torch.inference_mode()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, device: torch.device) -> dict:
    """mAP/mIoU exactly as the grader computes them (softmax, floor(255 p), pooled pixels)."""
    model.eval()
    acc = SegmentationAccumulator(6)
    loss = 0.0
    for i in range(0, len(images), 20):
        logits = model(images[i : i + 20].to(device).float() / 255)
        target = labels[i : i + 20].to(device)
        loss += F.cross_entropy(logits, target, reduction="sum").item() / target[0].numel()
        acc.update(quantize(torch.softmax(logits.double(), 1).cpu().numpy()), target.cpu().numpy())
    result = acc.compute()
    result["loss"] = loss / len(images)
    return result


def main(args: argparse.Namespace) -> dict:
    gen = seed_everything(args.seed)
    device = pick_device(args.device)
    name = args.name or f"q2-convs{args.num_convs}-lr{args.lr:g}-seed{args.seed}"
    out = args.out or Path("runs") / name
    out.mkdir(parents=True, exist_ok=True)
    backbone_path, init = resolve_backbone(args, out)
    print(f"backbone: {init}")
    train_x, train_y = load_split(args.data_root / "train")
    val_x, val_y = load_split(args.data_root / "val")
    model = SegNet(num_convs=args.num_convs, pretrained_weights=backbone_path).to(device)
    print(model.head)
    log = RunLog(out, {"question": "q2", "init": init, "pretrained": backbone_path is not None, **vars(args)})
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    if args.schedule == "step":
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.9)
    else:
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs)
    start = time.perf_counter()
    for epoch in range(1, args.epochs + 1):
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        total = 0.0
        for i in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch}/{args.epochs}", leave=False):
            idx = order[i : i + args.batch_size]
            xb, yb = train_x[idx].to(device), train_y[idx].to(device)
            if args.augment:
                xb, yb = augment(xb, yb, gen, args.min_scale)
            loss = F.cross_entropy(model(xb.float() / 255), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(idx)
        scheduler.step()
        row = {"epoch": epoch, "train_loss": total / len(train_x), "seconds": time.perf_counter() - start}
        if epoch % args.eval_every == 0 or epoch == args.epochs:
            val = evaluate(model, val_x, val_y, device)
            row.update(val_loss=val["loss"], val_mAP=val["mAP"], val_mIoU=val["mIoU"])
            print(f"epoch {epoch}: train loss {row['train_loss']:.4f}  val mAP {val['mAP']:.3f}  "
                  f"mIoU {val['mIoU']:.3f}  ({row['seconds']:.0f} s)")
        log.log(**row)
    final = evaluate(model, val_x, val_y, device)
    summary = {"init": init, "pretrained": backbone_path is not None, "val_mAP": final["mAP"],
               "val_mIoU": final["mIoU"], "val_AP": final["AP"].tolist(), "val_IoU": final["IoU"].tolist(),
               "train_seconds": time.perf_counter() - start, "device": str(device), "epochs": args.epochs}
    log.finish(summary, {"model": model.cpu().state_dict(), "num_convs": args.num_convs, "init": init,
                         "pretrained": summary["pretrained"], "args": vars(args)},
               f"Q2 {name} ({init}): val mAP {final['mAP']:.3f}, mIoU {final['mIoU']:.3f}")
    print(f"Q2 {name}: val mAP {final['mAP']:.3f}, mIoU {final['mIoU']:.3f} [{init}], "
          f"{summary['train_seconds']:.0f} s on {device}")
    return summary


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, required=True, help="the assignment's folder with train/ and val/")
    p.add_argument("--epochs", type=int, default=20, help="default: 20 (the seed's)")
    p.add_argument("--batch-size", type=int, default=16, help="default: 16")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: 1e-4, the seed's)")
    p.add_argument("--weight-decay", type=float, default=0.0, help="default: 0")
    p.add_argument("--schedule", choices=("step", "cosine"), default="step",
                   help="step: x0.9 every 10 epochs (the seed's); cosine: to 0 over the run (default: step)")
    p.add_argument("--num-convs", type=int, default=3, help="conv stages in the head, 1..5 (default: 3)")
    p.add_argument("--no-augment", dest="augment", action="store_false", help="turn off crops and flips")
    p.add_argument("--min-scale", type=float, default=0.35, help="smallest crop area of the augmentation (default: 0.35)")
    p.add_argument("--no-pretrained", dest="pretrained", action="store_false", help="never try ImageNet weights")
    p.add_argument("--pretrained-file", type=Path, help="local ImageNet ResNet18 state dict (offline)")
    p.add_argument("--eval-every", type=int, default=5, help="validate every N epochs (default: 5)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="default: 0")
    p.add_argument("--name", help="run name (default: q2-convs<N>-lr<lr>-seed<seed>)")
    p.add_argument("--out", type=Path, help="run folder (default: runs/<name>)")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
