"""FoundDiff's parts: the selective scan and its backends, SS2D, DACB conditioning, DA-CLIP losses."""

from __future__ import annotations

import pytest
import torch

from founddiff.daclip import PromptTokenizer, rank_n_contrast, supervised_contrastive
from founddiff.selective_scan import (
    mamba_available,
    scan_rows,
    selective_scan,
    selective_scan_numba,
    selective_scan_numba_autograd,
    selective_scan_reference,
    selective_scan_torch,
)
from founddiff.ss2d import SS2D, interleaved_merge, interleaved_scan

from .helpers import build


def scan_inputs(dtype=torch.float64, b=2, d=8, n=4, length=53, groups=4, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    mk = lambda *s: torch.randn(*s, generator=g, dtype=dtype).to(device)  # noqa: E731
    A = -torch.rand(d, n, generator=g, dtype=dtype).to(device) * 3
    return mk(b, d, length), mk(b, d, length), A, mk(b, groups, n, length), mk(b, groups, n, length), mk(d), mk(d)


def test_parallel_scan_equals_the_sequential_recurrence_in_float64():
    args = scan_inputs()
    torch.testing.assert_close(selective_scan_torch(*args), selective_scan_reference(*args), rtol=0, atol=1e-6)


def test_numba_scan_equals_the_recurrence_to_float32_rounding():
    """The CPU kernel computes in float32 (as mamba-ssm's does), with its own exp: against the float64 recurrence it
    is within float32's rounding, and it agrees with the parallel scan run in float32."""
    args = scan_inputs(length=300)
    reference = selective_scan_reference(*args)
    fast = selective_scan_numba(*args)
    assert fast.dtype == torch.float64
    assert (fast - reference).abs().max() <= 1e-5 * reference.abs().max()
    args32 = [a.float() for a in args]
    torch.testing.assert_close(selective_scan_numba(*args32), selective_scan_torch(*args32), rtol=1e-5, atol=1e-5)


def test_scan_rows_reads_and_writes_each_group_where_its_positions_lie():
    """Four groups whose positions are scattered over the rows of channels-last arrays, all reading the same channels
    (as SS2D's sub-grids do): each group's output, read back from its rows, is the scan of its gathered sequence."""
    b, g, length, d, n = 2, 4, 12, 3, 2
    gen = torch.Generator().manual_seed(1)
    u, delta = torch.randn(b, g * length, d, generator=gen), torch.rand(b, g * length, d, generator=gen)
    B, C = torch.randn(b, g * length, n, generator=gen), torch.randn(b, g * length, n, generator=gen)
    A, D = -torch.rand(g * d, n, generator=gen) * 3, torch.randn(g * d, generator=gen)
    rows = torch.randperm(g * length, generator=gen).view(g, length).numpy()
    y = scan_rows(u[:, :, None], delta[:, :, None], A, B[:, :, None], C[:, :, None], D, rows)[:, :, 0]  # shared
    for k in range(g):
        r = torch.from_numpy(rows[k])
        alone = selective_scan_reference(u[:, r].transpose(1, 2).double(), delta[:, r].transpose(1, 2).double(),
                                         A[k * d:(k + 1) * d].double(), B[:, r].transpose(1, 2)[:, None].double(),
                                         C[:, r].transpose(1, 2)[:, None].double(), D[k * d:(k + 1) * d].double(),
                                         delta_softplus=False)
        torch.testing.assert_close(y[:, r].transpose(1, 2).double(), alone, rtol=1e-5, atol=1e-5)


def test_ss2d_in_place_cpu_scan_equals_the_torch_path():
    """SS2D's numba path (projections per sub-grid on the channels-last map, scan in place) against its torch path
    (sequences copied out, scanned, merged back), on an odd size that takes padding."""
    torch.manual_seed(0)
    m = SS2D(8, 4, context_dim=4).eval()
    x, ctx = torch.randn(2, 9, 11, 8), torch.randn(2, 4)
    outs = {}
    for backend in ("numba", "torch"):
        m.scan_backend = backend
        with torch.no_grad():
            outs[backend] = m(x, ctx)
    assert outs["torch"].abs().max() > 0.1
    torch.testing.assert_close(outs["numba"], outs["torch"], rtol=1e-5, atol=1e-5)


def test_parallel_scan_gradients_match_the_recurrence():
    u, delta, A, B, C, D, bias = scan_inputs(length=17)
    u.requires_grad_(True)
    g1, = torch.autograd.grad(selective_scan_torch(u, delta, A, B, C, D, bias).sum(), u)
    g2, = torch.autograd.grad(selective_scan_reference(u, delta, A, B, C, D, bias).sum(), u)
    torch.testing.assert_close(g1, g2, rtol=0, atol=1e-8)


def test_numba_training_scan_gives_the_recurrences_output_and_gradients():
    """The CPU training kernels (a forward pass keeping its states, a backward pass of the adjoint recurrence, both in
    float32): the float64 sequential recurrence's output and its autograd gradient in every input, to float32
    rounding, under a loss that weighs each output differently."""
    args = [a.requires_grad_(True) for a in scan_inputs(length=300)]
    weight = torch.randn(2, 8, 300, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    outs, grads = {}, {}
    for name, scan in (("reference", selective_scan_reference), ("numba", selective_scan_numba_autograd)):
        outs[name] = scan(*args)
        grads[name] = torch.autograd.grad((outs[name] * weight).sum(), args)
    assert outs["numba"].dtype == torch.float64
    assert (outs["numba"] - outs["reference"]).abs().max() <= 1e-5 * outs["reference"].abs().max()
    for which, fast, ref in zip(("u", "delta", "A", "B", "C", "D", "delta_bias"), grads["numba"], grads["reference"]):
        assert (fast - ref).abs().max() <= 1e-5 * ref.abs().max(), which


def test_ss2d_trains_through_the_numba_scan_as_through_the_torch_one():
    """SS2D with autograd on: the numba training path (sequences scanned by the kernels, gradients by the adjoint)
    and the torch path give the same output and the same gradient for every parameter."""
    torch.manual_seed(0)
    m = SS2D(8, 4, context_dim=4)
    x, ctx = torch.randn(2, 9, 11, 8), torch.randn(2, 4)
    outs, grads = {}, {}
    for backend in ("numba", "torch"):
        m.scan_backend = backend
        m.zero_grad()
        outs[backend] = m(x, ctx)
        (outs[backend] * torch.linspace(-1, 1, 8)).sum().backward()
        grads[backend] = {n: p.grad.clone() for n, p in m.named_parameters()}
    torch.testing.assert_close(outs["numba"], outs["torch"], rtol=1e-5, atol=1e-5)
    for name, g in grads["torch"].items():
        torch.testing.assert_close(grads["numba"][name], g, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.gpu
def test_mamba_ssm_kernel_equals_fallback_on_cuda():
    if not mamba_available():
        pytest.skip("mamba-ssm is not installed")
    args = scan_inputs(torch.float32, d=64, length=1024, device="cuda")
    fast = selective_scan(*args, backend="mamba")
    torch.testing.assert_close(fast, selective_scan_torch(*args), rtol=1e-3, atol=1e-3)


def test_mamba_scan_loads_when_mamba_ssms_language_model_code_does_not(tmp_path, monkeypatch):
    """mamba-ssm <= 2.2.6's package __init__ imports code written for transformers < 5; the scan's own module is then
    imported under a bare package. Checked on a stand-in package laid out as mamba-ssm is."""
    import sys

    from founddiff.selective_scan import load_mamba_scan

    pkg = tmp_path / "mamba_ssm"
    (pkg / "ops").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from transformers.generation import GreedySearchDecoderOnlyOutput\n")
    (pkg / "ops" / "__init__.py").write_text("")
    (pkg / "ops" / "selective_scan_interface.py").write_text("def selective_scan_fn(*args):\n    return 'fused'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(sys.modules, "transformers.generation", None)  # the import fails as it does beside 5.x
    for name in [m for m in sys.modules if m.startswith("mamba_ssm")]:
        monkeypatch.delitem(sys.modules, name)  # a real mamba-ssm comes back after the test

    def forget_stand_in():
        for name in [m for m in sys.modules if m.startswith("mamba_ssm")]:
            del sys.modules[name]

    try:
        assert load_mamba_scan()() == "fused"
        (pkg / "ops" / "selective_scan_interface.py").write_text("import selective_scan_cuda  # not built\n")
        forget_stand_in()
        assert load_mamba_scan() is None  # no kernel: the fallbacks serve
    finally:
        forget_stand_in()


def test_interleaved_positions_put_every_sequence_back_in_place():
    from founddiff.ss2d import interleaved_positions

    x = torch.randn(1, 1, 6, 10)
    flat = torch.empty(60)
    flat[torch.from_numpy(interleaved_positions(6, 10)).reshape(-1)] = interleaved_scan(x)[0, :, 0].reshape(-1)
    assert torch.equal(flat.view(6, 10), x[0, 0])


def test_interleaved_scan_is_inverted_by_merge():
    x = torch.randn(2, 3, 6, 10)
    xs = interleaved_scan(x)
    assert xs.shape == (2, 4, 3, 15)
    assert torch.equal(interleaved_merge(xs, 6, 10), x)
    # sub-grids 1 and 3 are read column-major
    assert torch.equal(xs[0, 1, 0, :3], x[0, 0, 1::2, 0])


def trained_looking_founddiff(path):
    """A quick-profile FoundDiff whose zero-initialised adaLN layers have weights, as training would give them, saved
    to `path` (EMA = the network)."""
    torch.manual_seed(0)
    m = build("founddiff")
    for mod in m.unet.modules():
        if isinstance(mod, torch.nn.Linear) and mod.out_features % 6 == 0 and mod.weight.abs().sum() == 0:
            torch.nn.init.normal_(mod.weight, std=0.05)
    m.ema.shadow.load_state_dict(m.unet.state_dict())
    m.save(path)
    return m


def use_scan(method, backend: str) -> None:
    for mod in method.modules()["unet_ema"].modules():
        if isinstance(mod, SS2D):
            mod.scan_backend = backend


def test_one_checkpoint_serves_every_scan_backend(tmp_path):
    """Weights saved once give the same output through the torch and numba scans (and mamba-ssm on CUDA)."""
    m = trained_looking_founddiff(tmp_path / "fd.safetensors")
    loaded = type(m).load(tmp_path / "fd.safetensors")
    x = torch.randn(2, 1, 32, 32) * 100
    outs = {}
    for backend in ("torch", "numba"):
        use_scan(loaded, backend)
        outs[backend] = loaded.denoise(x)
    torch.testing.assert_close(outs["torch"], outs["numba"], rtol=0, atol=1e-2)  # HU (float32 rounding)
    torch.testing.assert_close(m.denoise(x), outs["numba"], rtol=0, atol=1e-2)


@pytest.mark.gpu
def test_one_checkpoint_serves_the_cuda_scans(tmp_path, monkeypatch):
    """The same weights on the GPU, through the parallel torch scan and (where installed) mamba-ssm's fused kernel,
    give the CPU's numba output; TF32 is off so that only the scans can differ."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    m = trained_looking_founddiff(tmp_path / "fd.safetensors")
    x = torch.randn(2, 1, 64, 64) * 100
    reference = type(m).load(tmp_path / "fd.safetensors").denoise(x)  # numba on the CPU
    on_gpu = type(m).load(tmp_path / "fd.safetensors", device="cuda")
    for backend in ("torch", "mamba") if mamba_available() else ("torch",):
        use_scan(on_gpu, backend)
        torch.testing.assert_close(on_gpu.denoise(x.cuda()).cpu(), reference, rtol=0, atol=0.05)  # HU


def test_dacb_is_adaln_zero_and_the_dose_embedding_conditions_the_output():
    torch.manual_seed(0)
    unet = build("founddiff").unet.eval()
    torch.nn.init.normal_(unet.final_conv.weight, std=0.1)  # as after training (it starts at zero)
    x = torch.randn(1, 2, 32, 32) * 0.1
    t = torch.tensor([500.0])
    d1, d2 = torch.randn(1, 32), torch.randn(1, 32)
    anat = torch.nn.functional.normalize(torch.randn(1, 16), dim=-1)
    with torch.no_grad():
        assert torch.equal(unet(x, t, d1, anat), unet(x, t, d2, anat))  # zero-initialised gates: no effect yet
        for mod in unet.modules():
            if hasattr(mod, "adaLN_modulation"):
                torch.nn.init.normal_(mod.adaLN_modulation[-1].weight, std=0.1)
        a, b = unet(x, t, d1, anat), unet(x, t, d2, anat)
        c = unet(x, t, d1, torch.nn.functional.normalize(torch.randn(1, 16), dim=-1))
    assert (a - b).abs().max() > 1e-3  # dose embedding -> time/dose condition -> shift/scale/gate
    assert (a - c).abs().max() > 1e-3  # anatomy embedding -> SS2D


def test_ss2d_handles_odd_sizes():
    m = SS2D(8, 2, context_dim=4)
    out = m(torch.randn(1, 7, 9, 8), torch.randn(1, 4))
    assert out.shape == (1, 7, 9, 8)


def test_rank_n_contrast_prefers_embeddings_ordered_by_dose():
    labels = torch.log(torch.tensor([0.05, 0.1, 0.25, 0.5, 1.0]).repeat(2))
    angle = (labels - labels.min()) / (labels.max() - labels.min()) * 1.5
    ordered = torch.stack([angle.cos(), angle.sin()], 1)
    shuffled = ordered[torch.randperm(10, generator=torch.Generator().manual_seed(0))]
    assert rank_n_contrast(ordered, labels) < rank_n_contrast(shuffled, labels) - 0.1


def test_supervised_contrastive_prefers_clustered_anatomies():
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    clustered = torch.nn.functional.normalize(torch.eye(3)[labels] + 0.01 * torch.randn(6, 3), dim=1)
    mixed = torch.nn.functional.normalize(torch.randn(6, 3, generator=torch.Generator().manual_seed(1)), dim=1)
    assert supervised_contrastive(clustered, labels) < supervised_contrastive(mixed, labels)


def test_prompt_tokenizer_is_offline_and_strict():
    tok = PromptTokenizer()
    ids = tok.encode("low dose CT noisy image .", n_ctx=4, length=16)
    assert ids[0] == tok.vocab["<sot>"] and (ids[1:5] == tok.vocab["X"]).all()
    with pytest.raises(ValueError, match="not in the DA-CLIP vocabulary"):
        tok.encode("pretty picture", 4, 16)
