"""Model definitions of the reference submission.

The Q1 nets follow the seed report's layer lists (BaseNet, the improved net, and the steps of its
ablation); `FashionNet` is the stronger net that the submission ships. `SegNet` is the seed's Q2 model:
ResNet18 without avgpool/fc, followed by conv/BN/ReLU/upsample stages back to the input size.
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models import ResNet18_Weights, resnet18

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def q1_ablation_net(
    batchnorm: bool = False, hidden_fc: bool = False, second_dropout: bool = False, wide: bool = False
) -> nn.Sequential:
    """Build one step of the report's Q1 ablation (all flags off = BaseNet, all on = the improved net).

    batchnorm: BN after each conv; hidden_fc: the first added linear layer (flat -> 192, dropout 0.5,
    ReLU); second_dropout: the 192 -> 12 layer becomes the second regularised linear layer (dropout 0.5);
    wide: convolutions 1 -> 12 -> 24 instead of 1 -> 6 -> 12.
    """
    c1, c2 = (12, 24) if wide else (6, 12)
    layers: list[nn.Module] = []
    for cin, cout in ((1, c1), (c1, c2)):
        layers.append(nn.Conv2d(cin, cout, 5))
        if batchnorm:
            layers.append(nn.BatchNorm2d(cout))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
    flat = c2 * 4 * 4
    layers.append(nn.Flatten())
    width = flat
    if hidden_fc:
        layers += [nn.Linear(flat, 192), nn.Dropout(0.5), nn.ReLU()]
        width = 192
    layers.append(nn.Linear(width, 12))
    if second_dropout:
        layers.append(nn.Dropout(0.5))
    layers += [nn.ReLU(), nn.Linear(12, 10)]
    return nn.Sequential(*layers)


def base_net() -> nn.Sequential:
    """The seed's BaseNet: conv 1->6 5x5, ReLU, pool; conv 6->12 5x5, ReLU, pool; fc 192->12, ReLU; fc 12->10."""
    return q1_ablation_net()


def improved_net() -> nn.Sequential:
    """The seed's improved net (89.8 % val, 90.2 % on the course's secret test)."""
    return q1_ablation_net(batchnorm=True, hidden_fc=True, second_dropout=True, wide=True)


def _conv_bn_relu(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


def fashion_net() -> nn.Sequential:
    """The submission's Q1 net: two VGG-style blocks of 3x3 convs with BN, then a dropout MLP head."""
    return nn.Sequential(
        *_conv_bn_relu(1, 32), *_conv_bn_relu(32, 32), nn.MaxPool2d(2), nn.Dropout(0.1),
        *_conv_bn_relu(32, 64), *_conv_bn_relu(64, 64), nn.MaxPool2d(2), nn.Dropout(0.2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 256, bias=False), nn.BatchNorm1d(256), nn.ReLU(inplace=True),
        nn.Dropout(0.4), nn.Linear(256, 10),
    )


Q1_ARCHS = {"basenet": base_net, "improved": improved_net, "fashionnet": fashion_net}


class SegNet(nn.Module):
    """ResNet18 (no avgpool/fc) + `num_convs` conv stages upsampling x32 back to the input size.

    With the default 3 stages: conv3x3 512->256 + BN + ReLU + up x2, conv3x3 256->128 + BN + ReLU + up x2,
    conv3x3 128->6 + BN + ReLU + up x8, as in the seed report. Inputs are RGB in [0, 1]; the ImageNet
    normalisation is part of the model so that `predict()` passes images through untouched.
    """

    def __init__(self, num_classes: int = 6, num_convs: int = 3, pretrained_weights: str | None = None):
        super().__init__()
        if not 1 <= num_convs <= 5:
            raise ValueError(f"num_convs must be in 1..5, got {num_convs}")
        backbone = resnet18()
        if pretrained_weights is not None:
            backbone.load_state_dict(torch.load(pretrained_weights, map_location="cpu", weights_only=True))
        self.backbone = nn.Sequential(*list(backbone.children())[:-2])
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        head: list[nn.Module] = []
        width = 512
        for _ in range(num_convs - 1):
            head += [*_conv_bn_relu(width, width // 2), nn.Upsample(scale_factor=2, mode="bilinear")]
            width //= 2
        head += [
            nn.Conv2d(width, num_classes, 3, padding=1), nn.BatchNorm2d(num_classes), nn.ReLU(inplace=True),
            nn.Upsample(scale_factor=2 ** (6 - num_convs), mode="bilinear"),
        ]
        self.head = nn.Sequential(*head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone((x - self.mean) / self.std))


def imagenet_resnet18_state(cache_dir: str | None = None) -> dict[str, torch.Tensor]:
    """Download torchvision's ImageNet ResNet18 weights (needs the internet); raises when unreachable."""
    return ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=True, model_dir=cache_dir)
