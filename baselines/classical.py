"""Training-free, blind references: BM3D, non-local means and total variation.

They learn nothing, so nothing they do depends on the seen doses, anatomies or pixel sizes: the floor that transfer
should at least reach. Each reads the noise level of every slice from the slice itself (`filter_noise_sd`, the two
finest Haar levels over flat soft tissue, at least 0.1 HU) and sets its strength to a multiple of it; that multiple
(and NLM's `h`) was chosen once on the validation split by `scripts/tune_classical.py` (results/tuning/classical.md).
All three assume white noise; FBP noise is ramp-shaped, which the tuned multiple absorbs (departures table).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from ldct_bench.methods import Method, Range, Settings
from ldct_bench.toolkit import centre_slice, filter_noise_sd


class SliceFilter(Method):
    """A filter applied slice by slice in HU with a strength read from each slice's own noise."""

    learned = False
    stages = ()

    def denoise(self, ld_hu: torch.Tensor) -> torch.Tensor:
        slices = centre_slice(ld_hu).detach().cpu().double().numpy()
        out = np.stack([self.filter(s[0], filter_noise_sd(s[0]))[None] for s in slices])
        return torch.from_numpy(out).to(ld_hu)

    def filter(self, hu: np.ndarray, noise_sd: float) -> np.ndarray:
        """One (H, W) slice in HU, its estimated noise SD in HU -> the filtered slice in HU."""
        raise NotImplementedError


@dataclass
class TVConfig(Settings):
    strength: float = 0.45  # the TV weight as a multiple of the slice's noise SD (results/tuning/classical.md)
    iterations: int = 100

    PROFILES: ClassVar[dict[str, dict]] = {"quick": {}, "paper": {"iterations": 200}}
    RANGES: ClassVar[dict] = {"strength": Range(0, 100, open_low=True), "iterations": Range(1, 10_000)}


class TotalVariation(SliceFilter):
    """Rudin-Osher-Fatemi total-variation denoising by Chambolle's projection (scikit-image)."""

    name = "tv"
    description = "Total variation (Chambolle 2004, scikit-image), weight a multiple of each slice's own noise SD"
    Config = TVConfig

    def filter(self, hu, noise_sd):
        from skimage.restoration import denoise_tv_chambolle

        return denoise_tv_chambolle(hu, weight=self.config.strength * noise_sd, max_num_iter=self.config.iterations)


@dataclass
class NLMConfig(Settings):
    strength: float = 0.8  # NLM's h as a multiple of the slice's noise SD (results/tuning/classical.md)
    patch_size: int = 5
    search_radius: int = 4  # as good as 6 on the validation split, 1.8x faster (results/tuning/classical.md)

    PROFILES: ClassVar[dict[str, dict]] = {"quick": {}, "paper": {"patch_size": 7, "search_radius": 10}}
    RANGES: ClassVar[dict] = {"strength": Range(0, 100, open_low=True), "patch_size": Range(1, 31),
                              "search_radius": Range(1, 64)}


class NonLocalMeans(SliceFilter):
    """Non-local means (Buades et al. 2005; scikit-image's fast mode, the noise variance subtracted from each patch
    distance)."""

    name = "nlm"
    description = "Non-local means (Buades 2005, scikit-image), h a multiple of each slice's own noise SD"
    Config = NLMConfig

    def filter(self, hu, noise_sd):
        from skimage.restoration import denoise_nl_means

        return denoise_nl_means(hu, patch_size=self.config.patch_size, patch_distance=self.config.search_radius,
                                h=self.config.strength * noise_sd, sigma=noise_sd, fast_mode=True,
                                preserve_range=True)


@dataclass
class BM3DConfig(Settings):
    strength: float = 1.0  # the sigma BM3D is told, as a multiple of the slice's noise SD (results/tuning/classical.md)
    variant: str = "np"  # the bm3d package's profile: normal ('np'), refiltered, very noisy, high quality

    PROFILES: ClassVar[dict[str, dict]] = {"quick": {}, "paper": {}}
    RANGES: ClassVar[dict] = {"strength": Range(0, 100, open_low=True), "variant": ("np", "refilter", "vn", "high")}


class BM3D(SliceFilter):
    """Block-matching and 3-D filtering (Dabov et al. 2007), both stages, with the `bm3d` package of its authors'
    group (Mäkinen, Azzari, Foi)."""

    name = "bm3d"
    description = "BM3D (Dabov 2007, the bm3d package), sigma a multiple of each slice's own noise SD"
    Config = BM3DConfig
    # About 3 s a 256^2 slice on one CPU core (results/tuning/classical.json): the default run's 288 test slices
    # would take a quarter of an hour, over the `--methods all` budget of five minutes; it runs when named.
    too_slow_for_all: ClassVar[str] = ("about 3 s a slice on a CPU core, a quarter of an hour for the default run's "
                                       "288 test slices; name it to run it")

    def filter(self, hu, noise_sd):
        import bm3d

        return bm3d.bm3d(hu, sigma_psd=self.config.strength * noise_sd, profile=self.config.variant)
