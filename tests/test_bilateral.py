"""The trainable bilateral filter against the direct definition, and its gradient against finite differences."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from baselines.bilateral import Bilateral, BilateralLayer, bilateral_filter
from ldct_bench.toolkit import estimate_noise_sd, hu_to_unit, unit_to_hu


def direct_bilateral(image: np.ndarray, sx: float, sy: float, sr: float, radius: int) -> np.ndarray:
    """The definition, pixel by pixel (Tomasi and Manduchi 1998), inside the border the window fits in."""
    out = image.copy()
    for i in range(radius, image.shape[0] - radius):
        for j in range(radius, image.shape[1] - radius):
            num = den = 0.0
            for di in range(-radius, radius + 1):
                for dj in range(-radius, radius + 1):
                    q = image[i + di, j + dj]
                    w = math.exp(-dj * dj / (2 * sx * sx) - di * di / (2 * sy * sy) - (q - image[i, j]) ** 2 / (2 * sr * sr))
                    num, den = num + w * q, den + w
            out[i, j] = num / den
    return out


@pytest.mark.parametrize("sx,sy,sr", [(1.0, 1.0, 0.05), (1.7, 0.8, 0.2), (0.6, 0.6, 1.0)])
def test_the_filter_equals_the_direct_bilateral_filter(sx, sy, sr):
    """(scikit-image's denoise_bilateral is no reference here: its spatial table is built on an off-centre grid.)"""
    rng = np.random.default_rng(0)
    image = np.clip(np.kron(rng.random((4, 4)), np.ones((6, 6))) + rng.normal(0, 0.05, (24, 24)), 0, 1)
    radius = math.ceil(3 * max(sx, sy))
    ours = bilateral_filter(torch.from_numpy(image)[None, None], torch.tensor([sx, sy], dtype=torch.float64),
                            torch.tensor(sr, dtype=torch.float64), radius)[0, 0].numpy()
    inner = (slice(radius, -radius),) * 2  # the border is reflected in ours, left out of the direct one
    np.testing.assert_allclose(ours[inner], direct_bilateral(image, sx, sy, sr, radius)[inner], atol=1e-12)
    assert np.abs(ours - image)[inner].mean() > 0.005  # it filtered something


def test_anisotropic_widths_blur_along_their_axis_only():
    x = torch.zeros(1, 1, 21, 21, dtype=torch.float64)
    x[0, 0, 10, 10] = 1.0
    out = bilateral_filter(x, torch.tensor([2.0, 0.2], dtype=torch.float64), torch.tensor(10.0, dtype=torch.float64), 6)
    assert out[0, 0, 10, 12] > 0.01 and out[0, 0, 12, 10] < 1e-6  # spreads along x (columns), not along y


def test_autograd_of_the_widths_and_the_input_matches_finite_differences():
    torch.manual_seed(0)
    layer = BilateralLayer(0.9, 0.3, max_radius=3).double()
    x = torch.rand(1, 1, 9, 9, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: layer(inp), (x,))
    for name, p in layer.named_parameters():
        def filtered(value, name=name):
            return torch.func.functional_call(layer, {**dict(layer.named_parameters()), name: value}, (x.detach(),))

        assert torch.autograd.gradcheck(filtered, (p.detach().clone().requires_grad_(),))


@pytest.mark.parametrize("range_from_noise", [False, True])
def test_a_short_training_moves_the_nine_widths_and_lowers_the_error(range_from_noise):
    torch.manual_seed(0)
    method = Bilateral(Bilateral.Config.profile("quick", patch_size=32, batch_size=4, range_from_noise=range_from_noise))
    method.setup_training("main")
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    fd = torch.where((yy - 16) ** 2 + (xx - 16) ** 2 < 100, 60.0, -40.0).expand(4, 1, 32, 32)
    ld = fd + torch.randn(4, 1, 32, 32) * 40
    before = float(((method.denoise(ld) - fd) ** 2).mean())
    for step in range(60):
        method.train_step({"ld": ld, "fd": fd, "slice": ld}, step, "main")
    after = float(((method.denoise(ld) - fd) ** 2).mean())
    # the input's error is 40^2 = 1600 HU^2; the initial filters leave 884 (absolute widths) or 413 (2 noise SDs)
    assert method.n_parameters() == 9 and after < 0.6 * before and after < 0.15 * 1600
    assert all(w["sigma_x"] > 0.6 for w in method.widths())  # grew from the initial half pixel


def test_range_widths_in_noise_sds_follow_the_noise_each_slice_shows():
    """With range_from_noise (the quick profile's) each slice is filtered with range widths of k times its own
    noise SD, as toolkit.estimate_noise_sd reads it: a quiet slice and a noisy one get different filters."""
    method = Bilateral(Bilateral.Config.profile("quick")).for_inference()
    assert method.config.range_from_noise
    rng = np.random.default_rng(3)
    truth = np.where(np.hypot(*np.mgrid[-32:32, -32:32]) < 20, 40.0, 0.0)
    slices = np.stack([truth + rng.normal(0, sd, truth.shape) for sd in (5.0, 40.0)])[:, None]
    out = method.denoise(torch.from_numpy(slices).float())
    for image, got in zip(slices, out):  # the same filters by hand
        x = hu_to_unit(torch.from_numpy(image[None]).float())
        sd = float(hu_to_unit(torch.tensor(estimate_noise_sd(image[0]))) - hu_to_unit(torch.tensor(0.0)))
        assert 3.0 < sd * 4095 < 50.0
        for layer in method.net.layers:
            sigma_xy = layer.log_sigma_xy.detach().exp()
            x = bilateral_filter(x, sigma_xy, layer.log_sigma_range.detach().exp() * sd,
                                 max(1, math.ceil(3 * float(sigma_xy.max()))))
        np.testing.assert_allclose(got.numpy(), unit_to_hu(x)[0].numpy(), atol=1e-3)
    quiet, noisy = (float(np.std(o[0].numpy() - truth)) for o in out)
    assert quiet < 5.0 * 0.8 and noisy < 40.0 * 0.6  # each slice's noise reduced at its own level


def test_a_noiseless_slice_passes_through_the_noise_scaled_filter_unchanged():
    """A truth or a synthetic image reads no noise: its range widths become a tenth of a HU, not 0 (0/0: NaN)."""
    method = Bilateral(Bilateral.Config.profile("quick")).for_inference()
    truth = torch.from_numpy(np.where(np.hypot(*np.mgrid[-32:32, -32:32]) < 20, 40.0, 0.0)).float()[None, None]
    out = method.denoise(truth)
    assert torch.isfinite(out).all() and float((out - truth).abs().max()) < 1e-3
