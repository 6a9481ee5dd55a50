"""The reference submission's fixed interface (see README.md in this folder for the contract).

Weights load once, on the first call, onto the device the grader's images are on.
"""
from __future__ import annotations

from pathlib import Path

import torch

from models import SegNet, fashion_net

HERE = Path(__file__).resolve().parent
_models: dict[str, torch.nn.Module] = {}


def _load(name: str, device: torch.device) -> torch.nn.Module:
    if name not in _models:
        if name == "q1":
            model = fashion_net()
            model.load_state_dict(torch.load(HERE / "q1_fashionnet.pt", map_location="cpu", weights_only=True))
        else:
            checkpoint = torch.load(HERE / "q2_segnet_fp16.pt", map_location="cpu", weights_only=True)
            model = SegNet(num_convs=checkpoint["num_convs"])
            model.load_state_dict({k: v.float() for k, v in checkpoint["model"].items()})
        _models[name] = model.eval()
    return _models[name].to(device)


def predict_q1(images: torch.Tensor) -> torch.Tensor:
    """images: (N, 1, 28, 28) float32 in [0, 1]. Returns (N, 10) class scores."""
    return _load("q1", images.device)(images)


def predict_q2(images: torch.Tensor) -> torch.Tensor:
    """images: (N, 3, H, W) float32 RGB in [0, 1]. Returns (N, 6, H, W) logits."""
    return _load("q2", images.device)(images)
