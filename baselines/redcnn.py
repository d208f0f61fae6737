"""RED-CNN (Chen et al., "Low-dose CT with a residual encoder-decoder convolutional neural
network", IEEE TMI 2017): 5 conv + 5 deconv layers, 5x5 kernels, no padding, residual
shortcuts from the input, the 2nd and the 4th layer to their mirrored deconvolutions,
ReLU, MSE on patches, Adam. One deviation: the last deconvolution starts at zero (see REDCNNConfig)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch.nn.functional as F
from torch import nn

from ldct_bench.methods import MethodConfig, Range
from ldct_bench.toolkit import zero_init

from .supervised import SupervisedMSE


class REDCNN(nn.Module):
    def __init__(self, filters: int = 96, kernel: int = 5, zero_readout: bool = True):
        super().__init__()
        self.enc = nn.ModuleList([nn.Conv2d(1 if i == 0 else filters, filters, kernel) for i in range(5)])
        self.dec = nn.ModuleList([nn.ConvTranspose2d(filters, 1 if i == 4 else filters, kernel) for i in range(5)])
        if zero_readout:  # the last deconvolution adds to the input shortcut: start as the identity
            zero_init(self.dec[4])

    def forward(self, x):
        res1 = x
        out = F.relu(self.enc[0](x))
        out = F.relu(self.enc[1](out))
        res2 = out
        out = F.relu(self.enc[2](out))
        out = F.relu(self.enc[3](out))
        res3 = out
        out = F.relu(self.enc[4](out))
        out = self.dec[0](out) + res3
        out = self.dec[1](F.relu(out))
        out = self.dec[2](F.relu(out)) + res2
        out = self.dec[3](F.relu(out))
        out = self.dec[4](F.relu(out)) + res1
        return F.relu(out)


@dataclass
class REDCNNConfig(MethodConfig):
    filters: int = 96
    lr_final: float = 1e-5  # the paper decays the learning rate from 1e-4 towards 1e-5
    # Deviation from the paper (random initialisation): the last deconvolution starts at zero, so the
    # network starts as the identity and short budgets cannot end below the LDCT input.
    zero_readout: bool = True

    RANGES: ClassVar[dict] = {"filters": Range(1, 1024), "lr_final": Range(0, 1, open_low=True)}

    PROFILES: ClassVar[dict] = {
        # paper: 96 filters, 55x55 patches, Adam lr 1e-4 decayed to 1e-5
        "paper": dict(filters=96, patch_size=55, batch_size=32, lr=1e-4, lr_final=1e-5, iterations=100_000, val_every=2000),
        # CPU: the same network, narrower, trained until validation PSNR plateaus (capped)
        "quick": dict(filters=32, patch_size=48, batch_size=8, lr=3e-4, lr_final=3e-5, iterations=20_000, val_every=500,
                      plateau_db=0.05),
    }


class RedCNN(SupervisedMSE):
    name = "redcnn"
    description = "RED-CNN (Chen et al., IEEE TMI 2017): residual encoder-decoder CNN, MSE"
    Config = REDCNNConfig

    def network(self):
        return REDCNN(self.config.filters, zero_readout=self.config.zero_readout)
