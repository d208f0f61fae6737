"""WGAN-VGG (Yang et al., "Low-dose CT image denoising using a generative adversarial network
with Wasserstein distance and perceptual loss", IEEE TMI 2018).

Generator: 8 conv layers, 32 filters of 3x3, ReLU. Critic: 6 conv layers (64, 64, 128, 128,
256, 256 filters, strides 1/2 alternating, leaky ReLU), FC 1024, FC 1. WGAN with gradient
penalty (lambda = 10), n_critic = 4, Adam (lr 1e-5, betas 0.5/0.9), perceptual loss on VGG19
features (up to the 16th conv layer) with weight lambda_1 = 0.1.

VGG19 ImageNet weights cannot be downloaded here. `wganvgg` therefore needs a local file
(torchvision's vgg19 state dict: --vgg19-weights / $LDCT_BENCH_VGG19) and refuses to train
without one. `wgan-mse` is the WGAN-MSE variant from the same paper's ablation (MSE content
loss instead of VGG features): it runs out of the box and is always labelled as such.

One deviation: the generator starts near the identity (Dirac weights plus small random ones)
instead of from random weights, so short CPU budgets start from the input, not from noise.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from ldct_bench.methods import Method, MethodConfig, Range
from ldct_bench.toolkit import EMA, average_gradients, exponential_decay, hu_to_unit, unit_to_hu, weighted_mse

VGG19_LAYERS = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class Generator(nn.Module):
    def __init__(self, filters: int = 32, layers: int = 8, identity_init: bool = True):
        super().__init__()
        chans = [1] + [filters] * (layers - 1) + [1]
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 3, padding=1) for a, b in zip(chans[:-1], chans[1:])])
        if identity_init:
            for conv in self.convs:
                near_identity_(conv)

    def forward(self, x):
        for conv in self.convs:
            x = F.relu(conv(x))
        return x


@torch.no_grad()
def near_identity_(conv: nn.Conv2d, scale: float = 0.1) -> None:
    """Dirac weights plus a tenth of the default random ones, zero bias: the stack starts within about
    20 HU of the identity, carrying the image through channel 0 (CT values in [0, 1] pass every ReLU),
    instead of first having to learn to reproduce its input through 8 randomly initialised layers.
    (A hundredth starts within 2 HU but learns too slowly: 1000 steps ended 1.1 dB lower.)"""
    dirac = torch.empty_like(conv.weight)
    nn.init.dirac_(dirac)
    conv.weight.mul_(scale).add_(dirac)
    conv.bias.zero_()


class Critic(nn.Module):
    def __init__(self, patch: int = 64):
        super().__init__()
        spec = [(1, 64, 1), (64, 64, 2), (64, 128, 1), (128, 128, 2), (128, 256, 1), (256, 256, 2)]
        self.convs = nn.ModuleList([nn.Conv2d(a, b, 3, stride=s, padding=1) for a, b, s in spec])
        side = patch
        for _, _, s in spec:
            side = (side + 2 - 3) // s + 1
        self.fc1 = nn.Linear(256 * side * side, 1024)
        self.fc2 = nn.Linear(1024, 1)

    def forward(self, x):
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
        return self.fc2(F.leaky_relu(self.fc1(x.flatten(1)), 0.2))


class VGG19Features(nn.Module):
    """torchvision's vgg19().features layout (so its state dict loads), cut after the 16th conv."""

    def __init__(self):
        super().__init__()
        layers, c = [], 3
        for v in VGG19_LAYERS:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, v, 3, padding=1), nn.ReLU(inplace=True)]
                c = v
        self.features = nn.Sequential(*layers[:35])  # up to conv5_4, before its ReLU
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x):
        return self.features((x.repeat(1, 3, 1, 1) - self.mean) / self.std)

    @classmethod
    def from_file(cls, path: Path) -> VGG19Features:
        state = torch.load(path, map_location="cpu", weights_only=True)
        net = cls()
        feats = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        try:
            net.features.load_state_dict({k: v for k, v in feats.items() if int(k.split(".")[0]) < 35})
        except RuntimeError as exc:
            raise ValueError(f"{path} is not a torchvision VGG19 state dict ({str(exc).splitlines()[0]}).") from None
        for p in net.parameters():
            p.requires_grad_(False)
        return net.eval()


@dataclass
class WGANConfig(MethodConfig):
    filters: int = 32
    content: str = "vgg"  # "vgg" (WGAN-VGG) or "mse" (WGAN-MSE)
    content_weight: float = 0.1
    adversarial_weight: float = 1.0
    gp_weight: float = 10.0
    n_critic: int = 4
    vgg19_weights: str = ""
    # Deviation from the paper: the generator starts near the identity (see near_identity_). With the
    # default random start, the quick budget ends below the low-dose input it was given.
    identity_init: bool = True
    lr_final: float = 1e-5  # the learning rate decays exponentially from `lr` to this (the paper: constant 1e-5)

    RANGES: ClassVar[dict] = {"filters": Range(1, 1024), "content": ("vgg", "mse"), "content_weight": Range(0, 1e6),
                              "adversarial_weight": Range(0, 1e6), "gp_weight": Range(0, 1e6), "n_critic": Range(1, 100),
                              "lr_final": Range(0, 1, open_low=True)}

    PROFILES: ClassVar[dict] = {
        "paper": dict(patch_size=64, batch_size=128, lr=1e-5, lr_final=1e-5, iterations=100_000, val_every=2000),
        # 10x the paper's rate, decayed to it over the cap; stops once validation PSNR plateaus, validated every 200
        # steps: an adversarial curve is noisy (at 400, one dip on the validation split, 45.19 to 45.07 dB, stopped
        # it at half its cap), and the plateau rule judges it on more validations. Cap 6000: with the generator's
        # average (WGAN-MSE) 4000 ended still rising (43.94 dB); 6000 ended at 44.12, better at every validation
        # cell but abdomen 50 % (mean gain over the input +2.89 -> +3.13 dB, chest 50 % +0.04 -> +0.07)
        "quick": dict(patch_size=32, batch_size=8, lr=1e-4, lr_final=1e-5, iterations=6_000, val_every=200, n_critic=2,
                      plateau_db=0.05),
    }


class WGANVGG(Method):
    name = "wganvgg"
    description = "WGAN-VGG (Yang et al., IEEE TMI 2018): WGAN-GP + VGG19 perceptual loss (needs local VGG19 weights)"
    Config = WGANConfig

    def __init__(self, config=None, device="cpu"):
        super().__init__(config, device)
        self.gen = Generator(self.config.filters, identity_init=self.config.identity_init).to(self.device)
        self.ema = EMA(self.gen, self.config.ema_decay) if self.config.ema_decay > 0 else None
        if self.ema:
            self.averaged = {"gen_ema": "gen"}  # the weights file keeps the average only (what inference uses)

    @classmethod
    def unavailable(cls) -> str:
        """Why `--methods all` leaves it out here ('' if it can train)."""
        return "" if _vgg_path("") else (f"no VGG19 weights (set $LDCT_BENCH_VGG19, or keep torchvision's {VGG19_FILE} "
                                         f"in {Path(torch.hub.get_dir()) / 'checkpoints'}); `wgan-mse` runs instead")

    @classmethod
    def needs(cls) -> str:
        return vgg_search()

    def modules(self):
        return {"gen": self.gen, **({"gen_ema": self.ema.shadow} if self.ema else {})}

    def trained_modules(self, stage):
        return ("gen",)  # the critic's gradients are averaged by hand (DDP has no double backward for its penalty)

    def denoise(self, ld_hu):
        gen = self.ema.shadow if self.ema else self.gen
        with torch.inference_mode():
            return unit_to_hu(gen(hu_to_unit(ld_hu.to(self.device))))

    def setup_training(self, stage):
        cfg = self.config
        self.critic = Critic(cfg.patch_size).to(self.device)
        self.opt_g = torch.optim.Adam(self.gen.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
        self.opt_d = torch.optim.Adam(self.critic.parameters(), lr=cfg.lr, betas=(0.5, 0.9))
        self.scheds = [exponential_decay(opt, cfg) for opt in (self.opt_g, self.opt_d)]
        if cfg.content == "vgg":
            path = _vgg_path(cfg.vgg19_weights)
            if not path:
                raise ValueError(f"WGAN-VGG needs VGG19 ImageNet weights for its perceptual loss and none are on this "
                                 f"machine ({vgg_search()}); pass --vgg19-weights FILE, or run the labelled variant "
                                 "`wgan-mse`.")
            self.vgg = VGG19Features.from_file(path).to(self.device)

    def _content(self, fake, real, weight=None):
        if self.config.content == "vgg":
            return weighted_mse(self.vgg(fake), self.vgg(real), weight)
        return weighted_mse(fake, real, weight)

    def _gradient_penalty(self, real, fake):
        eps = torch.rand(real.shape[0], 1, 1, 1, device=real.device)
        mix = (eps * real + (1 - eps) * fake).requires_grad_(True)
        grad, = torch.autograd.grad(self.critic(mix).sum(), mix, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    def train_step(self, batch, step, stage):
        cfg = self.config
        x, y = hu_to_unit(batch["ld"]), hu_to_unit(batch["fd"])
        for _ in range(cfg.n_critic):
            with torch.no_grad():
                fake = self.gen(x)
            d_loss = self.critic(fake).mean() - self.critic(y).mean() + cfg.gp_weight * self._gradient_penalty(y, fake)
            self.opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            average_gradients(self.critic)
            self.opt_d.step()
        fake = self.gen(x)
        content = self._content(fake, y, batch.get("weight"))
        g_loss = -cfg.adversarial_weight * self.critic(fake).mean() + cfg.content_weight * content
        self.opt_g.zero_grad(set_to_none=True)
        g_loss.backward()
        self.opt_g.step()
        if self.ema:
            self.ema.step(self.gen, step)
        for sched in self.scheds:
            sched.step()
        return {"loss": g_loss.item(), "d_loss": d_loss.item(), "content": content.item()}

    def training_state(self):
        return {"critic": self.critic.state_dict(), "opt_g": self.opt_g.state_dict(), "opt_d": self.opt_d.state_dict(),
                "scheds": [sched.state_dict() for sched in self.scheds]}

    def load_training_state(self, state):
        self.critic.load_state_dict(state["critic"])
        self.opt_g.load_state_dict(state["opt_g"])
        self.opt_d.load_state_dict(state["opt_d"])
        for sched, saved in zip(self.scheds, state["scheds"]):
            sched.load_state_dict(saved)


@dataclass
class WGANMSEConfig(WGANConfig):
    content: str = "mse"
    # MSE of [0, 1] images is ~1e-4, far below critic scores; weigh the adversarial term down so the content term
    # leads, as in the paper's WGAN-MSE. How far was decided on the validation split (the reference generalist,
    # 10 and 50 %): at SRGAN's 1e-3 the critic still set the mean (head 50 %: -6 HU) and the generator fell below
    # its input at 50 % (gain head -0.85, chest -1.74 dB; mean validation PSNR 43.28); at 1e-4, -0.79 dB at chest
    # 50 % (43.60); at 1e-5, -0.15 there and above the input at every other cell (43.93).
    content_weight: float = 1.0
    adversarial_weight: float = 1e-5
    # The generator's weights averaged for inference (Yazici et al., "The unusual effectiveness of averaging in GAN
    # training", ICLR 2019; WGAN-VGG keeps none), decided on the same split: the adversarial steps jitter the
    # weights and the average sheds it. At 0.999 the last cell below its input rose above it (chest 50 %: -0.15 ->
    # +0.04 dB; head +1.20 -> +1.37, abdomen +1.57 -> +1.75), 0.1-0.2 dB lower at 5-10 %, mean validation PSNR 43.93
    # either way.
    ema_decay: float = 0.999

    PROFILES: ClassVar[dict] = WGANConfig.PROFILES


class WGANMSE(WGANVGG):
    name = "wgan-mse"
    description = "WGAN-MSE variant of WGAN-VGG (Yang et al. 2018 ablation): WGAN-GP + MSE, no VGG19 needed"
    Config = WGANMSEConfig

    @classmethod
    def unavailable(cls) -> str:
        return ""

    @classmethod
    def needs(cls) -> str:
        return ""


VGG19_FILE = "vgg19-dcbb9e9d.pth"  # torchvision's ImageNet VGG19, as torch.hub caches it


def _vgg_places(given: str = "") -> list[tuple[str, Path]]:
    """Where VGG19 weights are looked for, in order: the config's file (--vgg19-weights), $LDCT_BENCH_VGG19, and
    the torch hub cache where torchvision keeps what it downloaded ($TORCH_HOME/hub, default ~/.cache/torch/hub)."""
    places = [("--vgg19-weights", Path(given))] if given else []
    if os.environ.get("LDCT_BENCH_VGG19"):
        places.append(("$LDCT_BENCH_VGG19", Path(os.environ["LDCT_BENCH_VGG19"])))
    return places + [("torchvision's cache", Path(torch.hub.get_dir()) / "checkpoints" / VGG19_FILE)]


def _vgg_path(given: str) -> str:
    return next((str(path) for _, path in _vgg_places(given) if path.is_file()), "")


def vgg_search() -> str:
    """What WGAN-VGG needs and where it looked: the file it found, or every place it tried."""
    found = _vgg_path("")
    if found:
        return f"VGG19 ImageNet weights: {found}"
    tried = "; ".join(f"{what} {path}" for what, path in _vgg_places())
    return f"VGG19 ImageNet weights, not found (looked at: {tried}" + (
        "" if os.environ.get("LDCT_BENCH_VGG19") else "; $LDCT_BENCH_VGG19 unset") + ")"
