"""The reference models and the training entry points (short runs on real data)."""
from __future__ import annotations

import json
import shutil
import urllib.error
from pathlib import Path

import pytest
import torch

import training.q2
from submission.models import SegNet, base_net, fashion_net, improved_net
from training import q1


def test_models_follow_the_report() -> None:
    assert [m.__class__.__name__ for m in base_net()] == [
        "Conv2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU", "MaxPool2d", "Flatten", "Linear", "ReLU", "Linear"]
    text = str(improved_net())
    for layer in ("Conv2d(1, 12, kernel_size=(5, 5)", "BatchNorm2d(12", "Conv2d(12, 24, kernel_size=(5, 5)",
                  "Linear(in_features=384, out_features=192", "Dropout(p=0.5", "Linear(in_features=192, out_features=12",
                  "Linear(in_features=12, out_features=10"):
        assert layer in text, layer
    x = torch.rand(2, 1, 28, 28)
    for net in (base_net(), improved_net(), fashion_net()):
        assert net.eval()(x).shape == (2, 10)
    seg = SegNet().eval()
    head = str(seg.head)
    for layer in ("Conv2d(512, 256", "Conv2d(256, 128", "Conv2d(128, 6", "scale_factor=8.0"):
        assert layer in head, layer
    with torch.inference_mode():
        assert seg(torch.rand(1, 3, 64, 96)).shape == (1, 6, 64, 96)
    assert SegNet(num_convs=5).eval()(torch.rand(1, 3, 64, 64)).shape == (1, 6, 64, 64)


def test_q1_training_run(tmp_path: Path, shared_data: Path) -> None:
    args = q1.get_args_parser().parse_args([
        "--ablation", "baseline", "--data-root", str(shared_data / "fashion-mnist"), "--epochs", "1",
        "--device", "cpu", "--constant-lr", "--no-augment", "--lr", "1e-3", "--out", str(tmp_path)])
    summary = q1.main(args)
    assert summary["val_accuracy"] > 0.6 and summary["test_accuracy"] > 0.6
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    for name in ("model.pt", "curves.png", "metrics.jsonl", "run.json"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_q1_augmentation_keeps_images_intact() -> None:
    x = torch.rand(16, 1, 28, 28)
    out = q1.augment(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    # A shift by at most 2 pixels plus a flip: the central 24x24 of each image survives somewhere.
    assert all(any(torch.equal(o[0, 2:-2, 2:-2], c) for c in (xi[0, 2 + dy : 26 + dy, 2 + dx : 26 + dx]
               for xi in (x[i], x[i].flip(-1)) for dy in range(-2, 3) for dx in range(-2, 3)))
               for i, o in enumerate(out))


def test_q2_training_run_from_scratch_says_so(tmp_path: Path, shared_data: Path, monkeypatch, capsys) -> None:
    data = tmp_path / "data"
    for split, stems in (("train", ("0", "1", "2", "3")), ("val", ("0", "1"))):
        (data / split).mkdir(parents=True)
        for stem in stems:
            for ext in ("jpg", "png"):
                shutil.copy(shared_data / "mp4-seg" / split / f"{stem}.{ext}", data / split)

    def offline(*_, **__):
        raise urllib.error.URLError("no internet")

    monkeypatch.setattr(training.q2, "imagenet_resnet18_state", offline)
    args = training.q2.get_args_parser().parse_args([
        "--data-root", str(data), "--epochs", "1", "--batch-size", "2", "--device", "cpu", "--out", str(tmp_path / "run")])
    summary = training.q2.main(args)
    assert "training FROM SCRATCH" in capsys.readouterr().out
    assert summary["pretrained"] is False and "ImageNet weights unavailable" in summary["init"]
    assert 0 <= summary["val_mIoU"] <= 1 and 0 <= summary["val_mAP"] <= 1
    checkpoint = torch.load(tmp_path / "run" / "model.pt", weights_only=False)
    assert checkpoint["pretrained"] is False and checkpoint["num_convs"] == 3
    assert (tmp_path / "run" / "curves.png").stat().st_size > 0


def test_q1_ablation_and_arch_cannot_be_combined(capsys) -> None:
    from training.q1 import ABLATION_STEPS, Q1_ARCHS, get_args_parser

    for arch in sorted(Q1_ARCHS):  # the default named explicitly too
        with pytest.raises(SystemExit):
            get_args_parser().parse_args(["--arch", arch, "--ablation", next(iter(ABLATION_STEPS))])
    assert "not allowed with argument" in capsys.readouterr().err
