"""Small network building blocks shared by several methods."""

from __future__ import annotations

import math

import torch
from torch import nn


def zero_init(layer: nn.Module) -> nn.Module:
    """Zero weight and bias: a read-out or gate that starts switched off, so the network around it starts
    as its shortcut (the identity, for a residual read-out) and training only moves it where that helps."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    return layer


class SinusoidalPosEmb(nn.Module):
    """Transformer-style sinusoidal embedding of a (possibly fractional) diffusion time step."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, t):
        half = self.dim // 2
        freq = torch.exp(torch.arange(half, device=t.device) * -(math.log(10000) / (half - 1)))
        arg = t.float()[:, None] * freq[None]
        return torch.cat((arg.sin(), arg.cos()), dim=-1)
