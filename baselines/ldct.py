"""The low-dose input itself: the floor every denoiser must beat."""

from __future__ import annotations

from ldct_bench.methods import Method, Settings
from ldct_bench.toolkit import centre_slice


class LowDose(Method):
    name = "ldct"
    description = "Identity: the low-dose FBP image (the floor every method must beat)"
    Config = Settings  # nothing to set
    learned = False
    stages = ()

    def denoise(self, ld_hu):
        return centre_slice(ld_hu).clone()
