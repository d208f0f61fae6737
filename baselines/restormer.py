"""Restormer (Zamir et al., "Restormer: efficient transformer for high-resolution image restoration", CVPR 2022),
the transformer of the registry: a 4-level U-shaped encoder-decoder of transformer blocks, each multi-Dconv head
transposed attention (MDTA: attention across channels, so its cost grows linearly with the pixels) and a gated-Dconv
feed-forward network (GDFN), with pixel-(un)shuffle between levels and a refinement stage.

Why this one: it is fully convolutional and its attention is linear in the image size, so it denoises a whole 512^2
slice (or any display field) at once, where a token-grid transformer (CTformer's 64x64 tokens, TransCT's fixed
latent) tiles the slice and the tiling moves with the pixel size, the shift this benchmark measures.

Departures (README's table): MSE on patches with Adam and an exponentially decaying rate, as our other networks
(the paper: L1, AdamW with cosine annealing and progressive patch sizes); a grey-level input and output; the
read-out starts at zero, so the network starts as the identity; slices are padded by reflection to a multiple of 8.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ldct_bench.methods import MethodConfig, Range
from ldct_bench.toolkit import zero_init

from .supervised import SupervisedMSE


class ChannelNorm(nn.Module):
    """Layer normalisation over the channels of every pixel (with a bias)."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TransposedAttention(nn.Module):
    """MDTA: queries, keys and values from 1x1 then 3x3 depth-wise convolutions; each head's (C/h x C/h) attention
    between L2-normalised channel maps, scaled by a learned temperature."""

    def __init__(self, channels: int, heads: int):
        super().__init__()
        self.heads = heads
        self.temperature = nn.Parameter(torch.ones(heads, 1, 1))
        self.qkv = nn.Conv2d(channels, channels * 3, 1)
        self.qkv_dw = nn.Conv2d(channels * 3, channels * 3, 3, padding=1, groups=channels * 3)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv_dw(self.qkv(x)).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        attention = (q @ k.transpose(-2, -1) * self.temperature).softmax(dim=-1)
        return self.project((attention @ v).reshape(n, c, h, w))


class GatedFeedForward(nn.Module):
    """GDFN: two 1x1 + 3x3 depth-wise branches, one gating the other through a GELU."""

    def __init__(self, channels: int, expansion: float):
        super().__init__()
        hidden = int(channels * expansion)
        self.expand = nn.Conv2d(channels, hidden * 2, 1)
        self.dw = nn.Conv2d(hidden * 2, hidden * 2, 3, padding=1, groups=hidden * 2)
        self.project = nn.Conv2d(hidden, channels, 1)

    def forward(self, x):
        gate, value = self.dw(self.expand(x)).chunk(2, dim=1)
        return self.project(F.gelu(gate) * value)


class TransformerBlock(nn.Module):
    def __init__(self, channels: int, heads: int, expansion: float):
        super().__init__()
        self.norm1, self.attention = ChannelNorm(channels), TransposedAttention(channels, heads)
        self.norm2, self.ffn = ChannelNorm(channels), GatedFeedForward(channels, expansion)

    def forward(self, x):
        x = x + self.attention(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def stage(channels: int, blocks: int, heads: int, expansion: float) -> nn.Sequential:
    return nn.Sequential(*(TransformerBlock(channels, heads, expansion) for _ in range(blocks)))


class RestormerNet(nn.Module):
    LEVELS = 4

    def __init__(self, dim: int = 48, blocks=(4, 6, 6, 8), heads=(1, 2, 4, 8), refinement: int = 4,
                 expansion: float = 2.66):
        super().__init__()
        widths = [dim * 2**i for i in range(self.LEVELS)]
        self.embed = nn.Conv2d(1, dim, 3, padding=1)
        self.encoders = nn.ModuleList(stage(widths[i], blocks[i], heads[i], expansion) for i in range(self.LEVELS - 1))
        self.downs = nn.ModuleList(nn.Sequential(nn.Conv2d(w, w // 2, 3, padding=1), nn.PixelUnshuffle(2))
                                   for w in widths[:-1])
        self.latent = stage(widths[-1], blocks[-1], heads[-1], expansion)
        self.ups = nn.ModuleList(nn.Sequential(nn.Conv2d(w, w * 2, 3, padding=1), nn.PixelShuffle(2))
                                 for w in widths[1:])
        # after each up: concatenate the encoder's skip, reduce with a 1x1 (not at the top level, which stays at 2 dim)
        self.reduce = nn.ModuleList(nn.Conv2d(2 * w, w, 1) for w in widths[1:-1])
        self.decoders = nn.ModuleList([stage(2 * dim, blocks[0], heads[0], expansion)]
                                      + [stage(widths[i], blocks[i], heads[i], expansion)
                                         for i in range(1, self.LEVELS - 1)])
        self.refine = stage(2 * dim, refinement, heads[0], expansion)
        self.output = zero_init(nn.Conv2d(2 * dim, 1, 3, padding=1))

    def forward(self, x):
        h, w = x.shape[-2:]
        multiple = 2 ** (self.LEVELS - 1)
        padded = F.pad(x, (0, -w % multiple, 0, -h % multiple), mode="reflect")
        skips, y = [], self.embed(padded)
        for encoder, down in zip(self.encoders, self.downs):
            y = encoder(y)
            skips.append(y)
            y = down(y)
        y = self.latent(y)
        for level in reversed(range(self.LEVELS - 1)):
            y = torch.cat([self.ups[level](y), skips[level]], dim=1)
            if level > 0:
                y = self.reduce[level - 1](y)
            y = self.decoders[level](y)
        return (padded + self.output(self.refine(y)))[..., :h, :w]


@dataclass
class RestormerConfig(MethodConfig):
    dim: int = 48
    blocks: tuple = (4, 6, 6, 8)
    heads: tuple = (1, 2, 4, 8)
    refinement: int = 4
    expansion: float = 2.66
    lr_final: float = 1e-6

    RANGES: ClassVar[dict] = {"dim": Range(1, 1024), "blocks": Range(1, 64), "heads": Range(1, 64),
                              "refinement": Range(0, 64), "expansion": Range(0.5, 16),
                              "lr_final": Range(0, 1, open_low=True)}
    PROFILES: ClassVar[dict] = {
        # paper: 48 channels, (4, 6, 6, 8) blocks, (1, 2, 4, 8) heads, 4 refinement blocks, GDFN expansion 2.66,
        # 128^2 patches (their final progressive size), lr 3e-4 decayed to 1e-6
        "paper": dict(patch_size=128, batch_size=8, lr=3e-4, lr_final=1e-6, iterations=300_000, val_every=5000),
        # CPU: the same design at 16 channels and one block a level
        "quick": dict(dim=16, blocks=(1, 1, 1, 2), heads=(1, 2, 4, 8), refinement=1, patch_size=48, batch_size=8,
                      lr=5e-4, lr_final=5e-5, iterations=20_000, val_every=500, plateau_db=0.05),
    }

    def problems(self) -> list[str]:
        out = super().problems()
        if len(self.blocks) != RestormerNet.LEVELS or len(self.heads) != RestormerNet.LEVELS:
            out.append(f"blocks and heads take {RestormerNet.LEVELS} values each, one per level.")
        out += [f"dim x 2^{i} = {self.dim * 2**i} channels do not split into {h} heads."
                for i, h in enumerate(self.heads) if (self.dim * 2**i) % h]
        return out


class Restormer(SupervisedMSE):
    name = "restormer"
    description = "Restormer (Zamir et al., CVPR 2022): U-shaped transformer, transposed (channel) attention, MSE"
    Config = RestormerConfig
    # The quick network denoises a 256^2 slice in about 0.7 s on 2 CPU cores (half that at 8 channels): the default
    # run's 288 test slices would add three to four minutes to a run whose other methods already take about four,
    # over the `--methods all` budget of five (#31). On a GPU it is milliseconds; named, it runs.
    too_slow_for_all: ClassVar[str] = ("about 0.7 s a slice on 2 CPU cores, three to four minutes for the default "
                                       "run's 288 test slices, over the five-minute budget of 'all'; name it to run it")

    def network(self):
        c = self.config
        problems = c.problems()
        if problems:
            raise ValueError(problems[0])
        return RestormerNet(c.dim, c.blocks, c.heads, c.refinement, c.expansion)
