"""DnCNN (Zhang et al., "Beyond a Gaussian denoiser: residual learning of deep CNN for image denoising", IEEE TIP
2017): a plain stack of 3x3 convolutions (the first with ReLU, the middle with batch normalisation and ReLU, the last
a read-out) that predicts the noise, subtracted from the input (residual learning). The blind variant (DnCNN-B,
depth 20) learns one model across noise levels, as ours learns across doses. MSE on patches, Adam (the authors'
PyTorch retraining in KAIR, where the paper used SGD). One deviation, shared with our other networks: the read-out
starts at zero, so the network starts as the identity.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from ldct_bench.methods import MethodConfig, Range
from ldct_bench.toolkit import zero_init

from .supervised import SupervisedMSE


class DnCNNNet(nn.Module):
    def __init__(self, depth: int = 20, features: int = 64):
        super().__init__()
        layers = [nn.Conv2d(1, features, 3, padding=1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [nn.Conv2d(features, features, 3, padding=1, bias=False), nn.BatchNorm2d(features),
                       nn.ReLU(inplace=True)]
        layers.append(zero_init(nn.Conv2d(features, 1, 3, padding=1)))
        self.body = nn.Sequential(*layers)

    def forward(self, x):
        return x - self.body(x)  # the body estimates the noise


@dataclass
class DnCNNConfig(MethodConfig):
    depth: int = 20
    features: int = 64
    lr_final: float = 1e-5

    RANGES: ClassVar[dict] = {"depth": Range(2, 200), "features": Range(1, 1024), "lr_final": Range(0, 1, open_low=True)}
    PROFILES: ClassVar[dict] = {
        # paper (DnCNN-B): depth 20, 64 features, 50x50 patches, batch 128; Adam 1e-3 decayed to 1e-5
        "paper": dict(depth=20, features=64, patch_size=50, batch_size=128, lr=1e-3, lr_final=1e-5, iterations=100_000,
                      val_every=2000),
        # CPU: the same design, shallower and narrower, to its validation plateau (capped). The paper's 1e-3 scaled to
        # batch 8 (linear scaling from its 128 gives 6e-5): at 1e-3 the batch-norm network's validation PSNR swung
        # by 1.9 dB between checks and the plateau rule stopped it on a low one (results/checkpoints log)
        "quick": dict(depth=10, features=32, patch_size=48, batch_size=8, lr=1e-4, lr_final=1e-5, iterations=20_000,
                      val_every=500, plateau_db=0.05),
    }


class DnCNN(SupervisedMSE):
    name = "dncnn"
    description = "DnCNN (Zhang et al., IEEE TIP 2017): blind residual CNN with batch norm, MSE"
    Config = DnCNNConfig

    def network(self):
        return DnCNNNet(self.config.depth, self.config.features)
