"""FoundDiff as a registered method: stage 1 trains DA-CLIP, stage 2 trains DA-Diff with DA-CLIP frozen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from ldct_bench.methods import Method, MethodConfig, Range
from ldct_bench.toolkit import ANATOMY_INDEX, EMA, centre_slice, hu_to_unit, unit_to_hu, weighted_mse

from .daclip import DACLIP, pairwise_rank_loss, rank_n_contrast, supervised_contrastive
from .dadiff import DADiffUNet, ResidualSchedule
from .selective_scan import scan_backend

HU_LO, HU_HI = -1000.0, 2000.0  # FoundDiff maps [-1000, 2000] HU to [0, 1], then to [-1, 1]


def to_model(hu: torch.Tensor) -> torch.Tensor:
    return hu_to_unit(hu, HU_LO, HU_HI) * 2 - 1


def to_hu(x: torch.Tensor) -> torch.Tensor:
    return unit_to_hu((x + 1) / 2, HU_LO, HU_HI)


@dataclass
class FoundDiffConfig(MethodConfig):
    # DA-CLIP (stage 1)
    clip_layers: tuple = (3, 4, 6, 3)
    clip_width: int = 64
    clip_heads: int = 32
    clip_embed: int = 1024
    clip_anatomy_dim: int = 256
    clip_text_width: int = 256
    clip_text_layers: int = 4
    clip_n_ctx: int = 16
    clip_crop: int = 0  # 0: whole slices
    clip_batch: int = 16
    clip_lr: float = 1e-4
    clip_temperature: float = 0.1
    daclip_iterations: int = 20_000
    # DA-Diff (stage 2)
    dim: int = 64
    mults: tuple = (1, 2, 4, 8)
    base_d_state: int = 4
    timesteps: int = 1000
    sampling_steps: int = 2
    start_noise: float = 0.1  # sqrt(sum_scale = 0.01) of the release
    sample_seed: int = 0
    dadiff_iterations: int = 400_000
    ema_decay: float = 0.995
    ema_every: int = 10

    RANGES: ClassVar[dict] = {
        "clip_layers": Range(1, 64), "clip_width": Range(1, 1024), "clip_heads": Range(1, 256),
        "clip_embed": Range(1, 8192), "clip_anatomy_dim": Range(1, 4096), "clip_text_width": Range(1, 4096),
        "clip_text_layers": Range(1, 64), "clip_n_ctx": Range(1, 256), "clip_crop": Range(0, 4096),  # 0: whole slices
        "clip_batch": Range(1, 4096), "clip_lr": Range(0, 1, open_low=True),
        "clip_temperature": Range(0, 100, open_low=True),
        "daclip_iterations": Range(1, 1e8), "dim": Range(1, 1024), "mults": Range(1, 64), "base_d_state": Range(1, 256),
        "timesteps": Range(1, 100_000), "sampling_steps": Range(1, 100_000), "start_noise": Range(0, 10),
        "sample_seed": Range(0, 2**63 - 1), "dadiff_iterations": Range(1, 1e8), "ema_every": Range(1, 1e8)}

    INFERENCE_FIELDS: ClassVar[tuple[str, ...]] = ("sampling_steps", "start_noise", "sample_seed")
    PROFILES: ClassVar[dict] = {
        "paper": dict(batch_size=4, patch_size=0, lr=2e-4, val_every=5000),
        "quick": dict(clip_layers=(1, 1, 1, 1), clip_width=16, clip_heads=4, clip_embed=128, clip_anatomy_dim=64,
                      clip_text_width=64, clip_text_layers=2, clip_n_ctx=8, clip_crop=128, clip_batch=8,
                      clip_lr=5e-4, daclip_iterations=300, dim=16, batch_size=4, patch_size=64, lr=2e-4,
                      dadiff_iterations=4_000, val_every=400, ema_decay=0.98, ema_every=1, plateau_db=0.05),
    }

    def __post_init__(self):
        self.clip_layers, self.mults = tuple(self.clip_layers), tuple(self.mults)

    def stage_iterations(self, stage: str) -> int:
        return {"daclip": self.daclip_iterations, "dadiff": self.dadiff_iterations}[stage]

    def stage_batch_size(self, stage: str) -> int:
        return self.clip_batch if stage == "daclip" else self.batch_size  # DA-CLIP contrasts whole slices


class FoundDiff(Method):
    name = "founddiff"
    description = ("FoundDiff (Chen et al. 2025): DA-CLIP dose/anatomy perception + DA-Diff residual diffusion "
                   "with Mamba DACB")
    Config = FoundDiffConfig
    stages = ("daclip", "dadiff")

    def __init__(self, config=None, device="cpu"):
        super().__init__(config, device)
        c = self.config
        self.daclip = DACLIP(c.clip_layers, c.clip_width, c.clip_heads, c.clip_embed, c.clip_anatomy_dim,
                             c.clip_text_width, c.clip_text_layers, c.clip_n_ctx).to(self.device)
        self.unet = DADiffUNet(c.dim, c.mults, c.clip_embed, c.clip_anatomy_dim, c.base_d_state).to(self.device)
        self.ema = EMA(self.unet, c.ema_decay)
        self.schedule = ResidualSchedule(c.timesteps).to(self.device)
        self.stage = "dadiff"
        self.train(False)

    averaged = {"unet_ema": "unet"}  # the weights file keeps DA-Diff's EMA only (what sampling uses)

    def modules(self):
        return {"daclip": self.daclip, "unet": self.unet, "unet_ema": self.ema.shadow}

    def trained_modules(self, stage):
        return ("daclip",) if stage == "daclip" else ("unet",)

    def train(self, mode: bool = True) -> None:
        self.unet.train(mode)
        self.ema.shadow.eval()
        self.daclip.train(mode and self.stage == "daclip")

    def validates(self, stage: str) -> bool:
        return stage == "dadiff"  # DA-CLIP's stage trains no denoiser

    @property
    def sampling_steps(self) -> int:
        return self.config.sampling_steps

    # -- perception ---------------------------------------------------------------------------------------
    def perceive(self, ld_hu: torch.Tensor) -> dict[str, torch.Tensor]:
        """DA-CLIP on whole slices (N, 1, H, W) HU: embeddings, dose score, estimated dose and anatomy."""
        with torch.no_grad():
            out = self.daclip(to_model(ld_hu.to(self.device)))
            out.update({f"estimated_{k}": v for k, v in self.daclip.estimate(out).items()})
        return out

    def kernels(self, training=False):
        names = {"mamba": "mamba-ssm kernel", "torch": "parallel PyTorch scan",
                 "numba": "numba kernels, forward and adjoint" if training else "numba kernel"}
        return f"selective scan: {names[scan_backend(self.device)]}"

    # -- inference ----------------------------------------------------------------------------------------
    def denoise(self, ld_hu):
        c = self.config
        x_in = to_model(centre_slice(ld_hu.to(self.device)))
        with torch.inference_mode():
            emb = self.daclip(x_in)
            h, w = x_in.shape[-2:]
            m = self.ema.shadow.multiple
            ph, pw = (-h) % m, (-w) % m
            x_pad = F.pad(x_in, (0, pw, 0, ph), mode="reflect") if ph or pw else x_in
            x_pad = x_pad.contiguous(memory_format=torch.channels_last)
            gen = torch.Generator(device=self.device).manual_seed(c.sample_seed)
            img = x_pad + c.start_noise * torch.randn(x_pad.shape, generator=gen, device=self.device)
            for t, t_next in self.schedule.sampling_pairs(c.sampling_steps):
                tt = torch.full((x_pad.shape[0],), t, device=self.device, dtype=torch.long)
                pred_res = self.ema.shadow(torch.cat((img, x_pad), 1), self.schedule.time_input(tt),
                                           emb["dose"], emb["anatomy"]).clamp(-1, 1)
                if t_next < 0:
                    img = (x_pad - pred_res).clamp(-1, 1)
                else:
                    img = img - (self.schedule.alphas_cumsum[t] - self.schedule.alphas_cumsum[t_next]) * pred_res
            return to_hu(img[..., :h, :w])

    # -- training -----------------------------------------------------------------------------------------
    def setup_training(self, stage):
        self.stage = stage
        if stage == "daclip":
            self.opt = torch.optim.Adam(self.daclip.parameters(), lr=self.config.clip_lr)
        else:
            self.daclip.requires_grad_(False)
            self.daclip.eval()
            self.opt = torch.optim.Adam(self.unet.parameters(), lr=self.config.lr)
        self.train(True)

    def _views(self, slices: torch.Tensor) -> torch.Tensor:
        crop = self.config.clip_crop
        h, w = slices.shape[-2:]
        if not crop or crop >= min(h, w):
            return slices.flip(-1) if torch.rand(()) < 0.5 else slices
        ys = torch.randint(0, h - crop + 1, (len(slices),))
        xs = torch.randint(0, w - crop + 1, (len(slices),))
        out = torch.stack([s[:, y:y + crop, x:x + crop] for s, y, x in zip(slices, ys, xs)])
        flip = torch.rand(len(out), device=out.device) < 0.5
        return torch.where(flip[:, None, None, None], out.flip(-1), out)

    def train_step(self, batch, step, stage):
        return self._daclip_step(batch) if stage == "daclip" else self._dadiff_step(batch, step)

    def _daclip_step(self, batch):
        c = self.config
        n = min(c.clip_batch, len(batch["slice"]))
        n_fd = max(1, n // 2)
        imgs = torch.cat([batch["slice"][:n], batch["slice_fd"][:n_fd]])
        dose = torch.cat([batch["dose"][:n], torch.ones(n_fd, device=imgs.device)])
        anat = torch.cat([batch["anatomy"][:n], batch["anatomy"][:n_fd]])
        x = to_model(imgs)
        views = torch.cat([self._views(x), self._views(x)])
        log_dose, anat2 = torch.log(dose).repeat(2), anat.repeat(2)
        out = self.daclip(views)
        l_dose = rank_n_contrast(out["dose"], log_dose, c.clip_temperature)
        l_anat = supervised_contrastive(out["anatomy"], anat2, c.clip_temperature)
        l_text = pairwise_rank_loss(out["logits"][:, 0] - out["logits"][:, 1], log_dose)
        loss = l_dose + l_anat + l_text
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        return {"loss": loss.item(), "rnc": l_dose.item(), "supcon": l_anat.item(), "prompt_rank": l_text.item()}

    def _dadiff_step(self, batch, step):
        c = self.config
        with torch.no_grad():
            emb = self.daclip(to_model(batch["slice"]))
        x_in, x0 = to_model(centre_slice(batch["ld"])), to_model(batch["fd"])
        x_res = x_in - x0
        t = torch.randint(0, c.timesteps, (len(x0),), device=x0.device)
        noise = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, x_res, t, noise)
        pred = self.unet(torch.cat((x_t, x_in), 1), self.schedule.time_input(t), emb["dose"], emb["anatomy"])
        loss = weighted_mse(pred, x_res, batch.get("weight"))
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.ema.step(self.unet, step, c.ema_every)
        return {"loss": loss.item()}

    def finish_stage(self, stage, pairs=None):
        """After DA-CLIP: fit its dose/anatomy read-outs on whole training slices, then freeze it."""
        if stage != "daclip" or pairs is None:
            return
        rng = np.random.default_rng(0)
        idx = torch.from_numpy(rng.choice(len(pairs), size=min(len(pairs), 192), replace=False))
        imgs = torch.cat([centre_slice(pairs.ld[idx]), pairs.fd[idx]])
        dose = torch.tensor(pairs.meta["dose"].to_numpy()[idx.numpy()], dtype=torch.float32)
        dose = torch.cat([dose, torch.ones(len(idx))])
        anat = torch.tensor([ANATOMY_INDEX[a] for a in pairs.meta["anatomy"].to_numpy()[idx.numpy()]]).repeat(2)
        self.daclip.eval()
        outs = [self.perceive(imgs[i:i + 16]) for i in range(0, len(imgs), 16)]
        d_emb = torch.cat([o["dose"] for o in outs]).cpu()
        a_emb = torch.cat([o["anatomy"] for o in outs]).cpu()
        self.daclip.fit_readouts(d_emb, torch.log(dose), a_emb, anat)
        self.stage = "dadiff"

    def training_state(self):
        return {"opt": self.opt.state_dict(), "stage": self.stage}

    def load_training_state(self, state):
        self.opt.load_state_dict(state["opt"])
