"""The training loop RED-CNN, DnCNN, the transformer and the trainable bilateral filter share: one network `net`,
from the network's unit scale to the same, fitted to the full-dose patches by (cell-weighted) MSE with Adam and an
exponentially decaying learning rate. A method built on it says only which network (`network()`) and which settings."""

from __future__ import annotations

import torch

from ldct_bench.methods import Method
from ldct_bench.toolkit import exponential_decay, hu_to_unit, unit_to_hu, weighted_mse


class SupervisedMSE(Method):
    net: torch.nn.Module

    def __init__(self, config=None, device="cpu"):
        super().__init__(config, device)
        self.net = self.network().to(self.device)

    def network(self) -> torch.nn.Module:
        """The network `self.config` describes."""
        raise NotImplementedError

    def modules(self):
        return {"net": self.net}

    def predict(self, ld: torch.Tensor, slices_hu: torch.Tensor | None) -> torch.Tensor:
        """The network on `ld` (unit scale). `slices_hu` are the whole slices (HU) it comes from, for a network that
        reads a property of the slice, such as its noise level (the bilateral filter); the others ignore them."""
        return self.net(ld)

    def denoise(self, ld_hu):
        ld_hu = ld_hu.to(self.device)
        with torch.inference_mode():
            return unit_to_hu(self.predict(hu_to_unit(ld_hu), ld_hu))

    def parameter_groups(self) -> list[dict]:
        """What Adam optimises (one group at the config's rate; a method may give some parameters their own)."""
        return [{"params": list(self.net.parameters())}]

    def setup_training(self, stage):
        self.opt = torch.optim.Adam(self.parameter_groups(), lr=self.config.lr)
        self.sched = exponential_decay(self.opt, self.config)

    def train_step(self, batch, step, stage):
        pred = self.predict(hu_to_unit(batch["ld"]), batch.get("slice"))
        loss = weighted_mse(pred, hu_to_unit(batch["fd"]), batch.get("weight"))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.sched.step()
        return {"loss": loss.item()}

    def training_state(self):
        return {"opt": self.opt.state_dict(), "sched": self.sched.state_dict()}

    def load_training_state(self, state):
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
