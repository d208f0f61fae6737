"""The trainable bilateral filter (Wagner et al., "Ultralow-parameter denoising: trainable bilateral filter layers in
computed tomography", Med. Phys. 2022): a few stacked bilateral filters whose spatial and range widths are learned
by gradient descent, nine numbers in all. Its authors chose it for robustness: a filter cannot hallucinate
structure, and nine parameters cannot fit one dose or anatomy.

Ours is plain PyTorch, vectorised over the window with `unfold`, differentiated by autograd (the authors wrote a
C++/CUDA kernel with its analytic gradient; tests/test_bilateral.py checks ours against the direct
bilateral filter and autograd against finite differences). Slices are 2-D, so each layer has two spatial widths
(x, y) and one range width; the authors' third spatial width runs along z. Departures: the widths are learned as
logarithms (Adam's steps are then relative and a width cannot go negative), and the window radius is
ceil(3 sigma), capped (`max_radius`), where theirs is fixed by the initial sigma.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ldct_bench.methods import MethodConfig, Range
from ldct_bench.toolkit import unit_to_hu

from .supervised import SupervisedMSE


def bilateral_filter(x: torch.Tensor, sigma_xy: torch.Tensor, sigma_range: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, 1, H, W) -> (N, 1, H, W): each pixel the average of its (2 radius + 1)^2 window weighted by
    exp(-dx^2 / 2 sx^2 - dy^2 / 2 sy^2 - (x_q - x_p)^2 / 2 sr^2); the border reflected. Differentiable in x and the
    three widths."""
    n, _, h, w = x.shape
    size = 2 * radius + 1
    window = F.unfold(F.pad(x, (radius,) * 4, mode="reflect"), size).view(n, size * size, h * w)
    offsets = torch.arange(-radius, radius + 1, device=x.device, dtype=x.dtype)
    dy, dx = torch.meshgrid(offsets, offsets, indexing="ij")
    spatial = -(dx.reshape(-1, 1) ** 2) / (2 * sigma_xy[0] ** 2) - dy.reshape(-1, 1) ** 2 / (2 * sigma_xy[1] ** 2)
    centre = x.reshape(n, 1, h * w)
    weight = torch.exp(spatial - (window - centre) ** 2 / (2 * sigma_range**2))  # the centre's weight is 1: no 0/0
    return ((weight * window).sum(1) / weight.sum(1)).view(n, 1, h, w)


class BilateralLayer(nn.Module):
    """One trainable bilateral filter: log widths (x, y in pixels; range in the network's unit scale)."""

    def __init__(self, sigma_spatial: float, sigma_range: float, max_radius: int):
        super().__init__()
        self.log_sigma_xy = nn.Parameter(torch.full((2,), math.log(sigma_spatial)))
        self.log_sigma_range = nn.Parameter(torch.tensor(math.log(sigma_range)))
        self.max_radius = max_radius

    def forward(self, x):
        sigma_xy = self.log_sigma_xy.exp()
        radius = max(1, min(self.max_radius, math.ceil(3 * float(sigma_xy.detach().max()))))
        radius = min(radius, x.shape[-1] - 1, x.shape[-2] - 1)  # reflection needs a border inside the image
        return bilateral_filter(x, sigma_xy, self.log_sigma_range.exp(), radius)


class TrainableBilateral(nn.Module):
    def __init__(self, layers: int = 3, sigma_spatial: float = 0.5, sigma_range: float = 0.01, max_radius: int = 5):
        super().__init__()
        self.layers = nn.Sequential(*(BilateralLayer(sigma_spatial, sigma_range, max_radius) for _ in range(layers)))

    def forward(self, x):
        return self.layers(x)


@dataclass
class BilateralConfig(MethodConfig):
    layers: int = 3
    sigma_spatial_init: float = 0.5  # pixels: the authors' initial value (eeulig/ldct-benchmark too)
    sigma_range_init: float = 0.01  # the network's unit scale (4095 HU wide): 41 HU
    max_radius: int = 5
    lr_range: float = 1e-2  # the authors give the range width its own learning rate
    lr_final: float = 1e-2  # no decay: nine widths

    RANGES: ClassVar[dict] = {"layers": Range(1, 16), "sigma_spatial_init": Range(0, 50, open_low=True),
                              "sigma_range_init": Range(0, 10, open_low=True), "max_radius": Range(1, 32),
                              "lr_range": Range(0, 1, open_low=True), "lr_final": Range(0, 1, open_low=True)}
    PROFILES: ClassVar[dict] = {
        # paper: three layers trained with Adam on whole slices' patches (their sigma_r got its own rate)
        "paper": dict(layers=3, patch_size=128, batch_size=16, lr=1e-2, lr_range=1e-2, iterations=5000, val_every=250,
                      plateau_db=0.02),
        # CPU: the same nine parameters on smaller patches, to their validation plateau
        "quick": dict(layers=3, patch_size=64, batch_size=8, lr=1e-2, lr_range=1e-2, iterations=3000, val_every=100,
                      plateau_db=0.02),
    }


class Bilateral(SupervisedMSE):
    name = "bilateral"
    description = "Trainable bilateral filter (Wagner et al., Med. Phys. 2022): 3 stacked filters, 9 learned widths"
    Config = BilateralConfig

    def network(self):
        c = self.config
        return TrainableBilateral(c.layers, c.sigma_spatial_init, c.sigma_range_init, c.max_radius)

    def for_inference(self):
        self.train(False)  # a filter of nine numbers: nothing to gain from the channels-last layout
        return self

    def parameter_groups(self):
        """The range widths at their own rate, as the authors train them."""
        named = list(self.net.named_parameters())
        return [{"params": [p for n, p in named if "range" not in n]},
                {"params": [p for n, p in named if "range" in n], "lr": self.config.lr_range}]

    def widths(self) -> list[dict[str, float]]:
        """The learned widths of each layer (x, y in pixels; range in HU)."""
        scale = unit_to_hu(torch.tensor(1.0)) - unit_to_hu(torch.tensor(0.0))
        return [{"sigma_x": float(layer.log_sigma_xy[0].detach().exp()),
                 "sigma_y": float(layer.log_sigma_xy[1].detach().exp()),
                 "sigma_range_hu": float(layer.log_sigma_range.detach().exp() * scale)} for layer in self.net.layers]
