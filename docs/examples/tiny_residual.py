"""A complete ldct-bench plug-in in one file: a small residual CNN that learns the noise of a low-dose slice.

Register it in your package's pyproject.toml, reinstall, and every command knows it:

    [project.entry-points."ldct_bench.methods"]
    tiny = "tiny_residual:TinyResidual"
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from ldct_bench.methods import Method, MethodConfig, Range
from ldct_bench.toolkit import hu_to_unit, unit_to_hu, weighted_mse, zero_init


@dataclass
class TinyConfig(MethodConfig):
    """Its settings: the shared training fields (iterations, batch_size, patch_size, lr, ...) plus its own."""

    width: int = 16
    layers: int = 4

    RANGES: ClassVar[dict] = {"width": Range(1, 512), "layers": Range(2, 64)}  # what --set may give
    PROFILES: ClassVar[dict] = {
        "quick": dict(width=16, layers=4, iterations=2000, patch_size=48, batch_size=8, lr=1e-3, val_every=250,
                      plateau_db=0.05),  # stops at its validation plateau, the cap is `iterations`
        "paper": dict(width=64, layers=8, iterations=50_000, patch_size=64, batch_size=32, lr=1e-3, val_every=2000),
    }


class TinyResidual(Method):
    name = "tiny"  # must equal the entry point's name
    description = "A tiny residual CNN (the tutorial's plug-in)"
    Config = TinyConfig

    def __init__(self, config=None, device="cpu"):
        super().__init__(config, device)
        c = self.config
        layers = [nn.Conv2d(1, c.width, 3, padding=1), nn.ReLU()]
        for _ in range(c.layers - 2):
            layers += [nn.Conv2d(c.width, c.width, 3, padding=1), nn.ReLU()]
        layers.append(zero_init(nn.Conv2d(c.width, 1, 3, padding=1)))  # starts as the identity
        self.net = nn.Sequential(*layers).to(self.device)

    def modules(self):
        """The networks saved in its checkpoint."""
        return {"net": self.net}

    def denoise(self, ld_hu):
        """HU in, HU out: the runner never sees the network's own scale."""
        with torch.inference_mode():
            x = hu_to_unit(ld_hu.to(self.device))
            return unit_to_hu(x - self.net(x))

    def setup_training(self, stage):
        self.opt = torch.optim.Adam(self.net.parameters(), lr=self.config.lr)

    def train_step(self, batch, step, stage):
        """One step on the harness's patches: the same doses, anatomies and cell weights every method gets."""
        x = hu_to_unit(batch["ld"])
        loss = weighted_mse(x - self.net(x), hu_to_unit(batch["fd"]), batch.get("weight"))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item()}

    def training_state(self):
        """What resuming needs besides the weights."""
        return {"opt": self.opt.state_dict()}

    def load_training_state(self, state):
        self.opt.load_state_dict(state["opt"])
