"""Registry, checkpoints, the training harness and the baselines."""

from __future__ import annotations

import json
from importlib import metadata

import pytest
import torch

import ldct_bench.methods as methods_mod
from ldct_bench.checkpoints import TrainJob, committed_checkpoints
from ldct_bench.methods import get_method, registry
from ldct_bench.selection import left_out_of_all, resolve_methods
from ldct_bench.training import PatchSampler, fit

from .helpers import build


def test_builtin_methods_are_registered():
    assert {"ldct", "redcnn", "wganvgg", "wgan-mse", "corediff", "founddiff", "bm3d", "nlm", "tv", "dncnn", "bilateral",
            "restormer"} <= set(registry())
    assert "wganvgg" not in resolve_methods("all")  # no VGG19 weights here: its labelled variant runs instead
    assert "wgan-mse" in resolve_methods("all")
    # learned, with no reference checkpoint committed: left out of 'all' (a run would train it from scratch), said so
    for name in ("dncnn", "bilateral"):
        if not committed_checkpoints(name):
            assert name not in resolve_methods("all") and "name it to train it" in left_out_of_all(get_method(name))
    # too slow for the default run's budget on a CPU, checkpoint or not: said with its time, and it runs when named
    assert "restormer" not in resolve_methods("all") and "s a slice" in left_out_of_all(get_method("restormer"))
    # 'every' (the reference run's list): 'all' and what only its speed keeps out of it, never what cannot run here
    every = resolve_methods("every")
    assert set(resolve_methods("all")) | {"bm3d", "restormer"} <= set(every) and "wganvgg" not in every


@pytest.mark.parametrize("name", ["ldct", "tv", "nlm", "redcnn", "wganvgg", "wgan-mse", "corediff", "founddiff", "dncnn",
                                  "bilateral", "restormer"])
def test_save_load_round_trip_and_denoise_contract(name, tmp_path):
    method = build(name)
    method.train(False)
    x = torch.randn(2, 1 + 2 * method.context, 32, 32) * 200
    out = method.denoise(x)
    assert out.shape == (2, 1, 32, 32) and out.dtype == torch.float32 and out.device == x.device
    assert torch.isfinite(out).all() and out.min() >= -1100 and out.max() <= 3100  # HU scale, not [0, 1]
    if not method.learned:
        return
    method.save(tmp_path / "w.safetensors")
    again = type(method).load(tmp_path / "w.safetensors")
    assert torch.equal(again.denoise(x), out)


def test_the_same_weights_are_saved_as_the_same_bytes(tmp_path):
    """safetensors orders its header's metadata anew at every save (9 sha256s in 10 saves of one file); ours sorts
    it, so a checkpoint's sha256 is its content's, and the file still reads back with its header."""
    from safetensors import safe_open

    method = build("redcnn")
    paths = [tmp_path / f"w{i}.safetensors" for i in range(8)]
    for path in paths:
        method.save(path, extra={"data": "embedded-x", "profile": "quick"})
    assert len({p.read_bytes() for p in paths}) == 1
    with safe_open(str(paths[0]), framework="pt") as f:
        assert f.metadata() == {"method": "redcnn", "config": json.dumps(method.config.to_dict()),
                                "data": "embedded-x", "profile": "quick"}
    assert int.from_bytes(paths[0].read_bytes()[:8], "little") % 8 == 0
    again = type(method).load(paths[0])
    assert all(torch.equal(a, b) for a, b in zip(again.weights().values(), method.weights().values()))


@pytest.mark.parametrize("name,average,net", [("corediff", "ema", "net"), ("founddiff", "unet_ema", "unet"),
                                              ("wgan-mse", "gen_ema", "gen")])
def test_the_weights_file_keeps_an_averaged_network_once_and_loading_restores_it(name, average, net, tmp_path):
    """The committed weights of an EMA-sampled method hold the average alone (FoundDiff's file: 20 -> 13 MB); the
    network it averages is restored from it on load, so a file written before, with both, still loads."""
    from safetensors import safe_open

    method = build(name)
    torch.nn.init.normal_(next(getattr(method, net).parameters()), std=0.1)  # the network now differs from its EMA
    method.save(tmp_path / "w.safetensors")
    with safe_open(str(tmp_path / "w.safetensors"), framework="pt") as f:
        keys = list(f.keys())
    assert not [k for k in keys if k.startswith(f"{net}.")] and [k for k in keys if k.startswith(f"{average}.")]
    again, before = type(method).load(tmp_path / "w.safetensors").state_dict(), method.state_dict()
    shared = [k[len(average) + 1:] for k in before if k.startswith(f"{average}.")]
    assert shared and all(torch.equal(again[f"{net}.{k}"], before[f"{average}.{k}"]) for k in shared)
    assert all(torch.equal(again[k], v) for k, v in before.items() if not k.startswith(f"{net}."))
    from safetensors.torch import save_file

    save_file(before, str(tmp_path / "both.safetensors"), metadata={"method": name,
                                                                     "config": json.dumps(method.config.to_dict())})
    old = type(method).load(tmp_path / "both.safetensors").state_dict()  # an older file, with both: as written
    assert all(torch.equal(old[k], v) for k, v in before.items())


def test_wgan_mse_denoises_with_the_running_average_of_its_generator(tmp_path):
    """Each generator step moves the average by (1 - decay) towards it; inference uses the average; and a weights
    file written before WGAN-MSE kept one (its generator alone) still loads, as its own average, and denoises as
    before (without that, loading it fails: gen_ema.* missing)."""
    from safetensors.torch import save_file

    from ldct_bench.toolkit import hu_to_unit, unit_to_hu

    torch.manual_seed(0)
    method = build("wgan-mse")
    assert method.config.ema_decay == 0.999 and build("wganvgg").ema is None  # the paper's WGAN-VGG keeps none
    method.setup_training("main")
    before = [p.detach().clone() for p in method.ema.shadow.parameters()]
    ld = torch.randn(2, 1, 32, 32) * 100
    method.train_step({"ld": ld, "fd": ld * 0.5}, 0, "main")
    for avg, old, new in zip(method.ema.shadow.parameters(), before, method.gen.parameters()):
        assert torch.allclose(avg, 0.999 * old + 0.001 * new, atol=1e-7)
    assert not torch.equal(next(method.gen.parameters()), next(method.ema.shadow.parameters()))
    x = torch.randn(2, 1, 32, 32) * 200
    with torch.inference_mode():
        assert torch.equal(method.denoise(x), unit_to_hu(method.ema.shadow(hu_to_unit(x))))
        assert not torch.equal(method.denoise(x), unit_to_hu(method.gen(hu_to_unit(x))))
    generator_only = {k: v for k, v in method.state_dict().items() if k.startswith("gen.")}
    save_file(generator_only, str(tmp_path / "old.safetensors"),
              metadata={"method": "wgan-mse", "config": json.dumps(method.config.to_dict())})
    old = type(method).load(tmp_path / "old.safetensors")
    with torch.inference_mode():
        assert torch.equal(old.denoise(x), unit_to_hu(method.gen(hu_to_unit(x))))


@pytest.mark.parametrize("name", ["redcnn", "wgan-mse", "corediff", "founddiff", "dncnn", "restormer"])
def test_channels_last_inference_equals_the_plain_layout(name):
    torch.manual_seed(0)
    method = build(name)
    net, readout = {"founddiff": ("unet", "final_conv"), "corediff": ("net", "outc"), "redcnn": ("net", "dec.4"),
                    "dncnn": ("net", "body.8"), "restormer": ("net", "output")}.get(name, (None, None))  # 8: TINY depth 4
    if net:  # its read-out starts at zero (output = input); give it a trained-like one
        torch.nn.init.normal_(getattr(method, net).get_submodule(readout).weight, std=0.1)
        if hasattr(method, "ema"):
            method.ema.shadow.load_state_dict(getattr(method, net).state_dict())
    method.train(False)
    x = torch.randn(2, 1 + 2 * method.context, 48, 48) * 200 + 40
    plain = method.denoise(x)
    fast = method.for_inference().denoise(x)
    kernels = [p for m in method.modules().values() for p in m.parameters() if p.dim() == 4]
    assert kernels and all(p.is_contiguous(memory_format=torch.channels_last) for p in kernels)
    assert (fast - plain).abs().max().item() < 1e-2 and (plain - x[:, method.context:method.context + 1]).abs().max() > 1


@pytest.mark.parametrize("name,flag,tol_hu", [("redcnn", "zero_readout", 1e-2), ("corediff", "zero_readout", 1e-2),
                                              ("wgan-mse", "identity_init", 40.0)])
def test_baselines_start_as_the_identity(name, flag, tol_hu):
    """An untrained baseline returns its input (RED-CNN, CoreDiff exactly; WGAN's Dirac start nearly),
    so a short training budget improves on the input instead of starting hundreds of HU away."""
    cls = get_method(name)
    errors = {}
    for on in (True, False):
        torch.manual_seed(0)
        method = cls(cls.Config.profile("quick", **{flag: on}))
        method.train(False)
        c = method.context
        x = torch.rand(2, 1 + 2 * c, 48, 48) * 1400 - 1000
        err = (method.denoise(x) - x[:, c:c + 1]).abs()
        errors[on] = err.max().item() if tol_hu < 1 else err.mean().item()
    assert errors[True] < tol_hu and errors[False] > 300, errors


@pytest.mark.parametrize("name", ["dncnn", "restormer"])
def test_the_new_networks_start_as_the_identity(name):
    """Their read-out starts at zero (the deviation our networks share): an untrained one returns its input."""
    torch.manual_seed(0)
    method = build(name)
    method.train(False)
    x = torch.rand(2, 1, 40, 44) * 1400 - 1000  # not a multiple of 8: the transformer pads and crops back
    assert (method.denoise(x) - x).abs().max().item() < 1e-2


def test_identity_is_the_low_dose_centre_slice():
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(build("ldct").denoise(x), x[:, 1:2])


def test_unknown_method_suggests_close_names():
    with pytest.raises(ValueError, match="Did you mean redcnn"):
        get_method("redcnm")


def test_checkpoint_of_another_method_or_shape_is_refused(tmp_path):
    build("redcnn").save(tmp_path / "r.safetensors")
    with pytest.raises(ValueError, match="belongs to method 'redcnn'"):
        get_method("corediff").load(tmp_path / "r.safetensors")
    other = build("redcnn", filters=16)
    from ldct_bench.methods import read_checkpoint

    _, state = read_checkpoint(tmp_path / "r.safetensors")
    with pytest.raises(ValueError, match="does not fit method 'redcnn'"):
        other.load_state_dict(state)
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        get_method("redcnn").load(tmp_path / "junk.safetensors")


def test_entry_point_registration(monkeypatch):
    ep = metadata.EntryPoint(name="toy", value="tests.toy_method:ToyMethod", group="ldct_bench.methods")
    real = metadata.entry_points
    monkeypatch.setattr(methods_mod.metadata, "entry_points",
                        lambda group=None, **kw: [ep] if group == "ldct_bench.methods" else real(group=group, **kw))
    monkeypatch.setattr(methods_mod, "_REGISTRY", None)
    cls = get_method("toy")
    assert torch.equal(cls().denoise(torch.zeros(1, 1, 4, 4)), -torch.ones(1, 1, 4, 4))


def test_corediff_degradation_ends_are_ndct_and_ldct():
    m = build("corediff")
    x0, xT = torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8)
    T = m.config.timesteps
    assert torch.equal(m.degrade(x0, xT, torch.zeros(2, dtype=torch.long)), x0)
    assert torch.equal(m.degrade(x0, xT, torch.full((2,), T)), xT)
    mid = m.degrade(x0, xT, torch.full((2,), 1))
    assert torch.allclose(mid.mean(), ((1 - 1 / T) * x0 + xT / T).mean())  # mean-preserving mix


def test_corediff_shows_a_share_of_training_slices_alone():
    """alone_prob = 1: every training slice reads itself as its neighbours, so a batch with real neighbours trains
    exactly as the same batch with the centre slice repeated; at 0 the neighbours change the step."""
    g = torch.Generator().manual_seed(0)
    ld, fd = torch.rand(4, 3, 16, 16, generator=g) * 400 - 200, torch.rand(4, 1, 16, 16, generator=g) * 400 - 200
    alone = ld[:, 1:2].repeat(1, 3, 1, 1)

    def step(prob, batch_ld):
        torch.manual_seed(1)
        m = build("corediff", alone_prob=prob)
        m.setup_training("main")
        m.train_step({"ld": batch_ld, "fd": fd}, 0, "main")
        return torch.cat([p.flatten() for p in m.net.parameters()])  # the read-out starts at 0: the loss cannot tell

    assert torch.equal(step(1.0, ld), step(1.0, alone))
    assert not torch.equal(step(0.0, ld), step(0.0, alone))


def test_an_average_is_the_weights_until_it_starts_then_follows_them_every_few_steps():
    from ldct_bench.toolkit import EMA

    net = torch.nn.Linear(1, 1, bias=False)
    torch.nn.init.zeros_(net.weight)
    ema = EMA(net, decay=0.5)
    for step, w in enumerate((4.0, 8.0, 8.0, 8.0)):  # start = 2, every = 2
        net.weight.data.fill_(w)
        ema.step(net, step, every=2, start=2)
    assert ema.shadow.weight.item() == 7.0  # step 0 copies (4); step 1 moves half-way (6); 2 is skipped; 3 (7)
    net.weight.data.fill_(0.0)
    ema.step(net, 4, every=2, start=2)
    assert ema.shadow.weight.item() == 7.0  # an odd count: unmoved
    ema.step(net, 5, every=2, start=2)
    assert ema.shadow.weight.item() == 3.5


def test_wganvgg_refuses_to_train_without_vgg_weights():
    m = build("wganvgg")
    with pytest.raises(ValueError, match="VGG19 ImageNet weights"):
        m.setup_training("main")


def test_wganvgg_finds_vgg19_where_torchvision_caches_it(tmp_path, monkeypatch):
    """A user who ever loaded torchvision's VGG19 has it in $TORCH_HOME/hub/checkpoints: WGAN-VGG runs with no flag,
    and `ldct-bench methods` says where it found it (and, without it, everywhere it looked)."""
    from click.testing import CliRunner

    from ldct_bench.cli import main

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    before = CliRunner().invoke(main, ["methods"]).output
    assert "not in 'all': no VGG19 weights" in before and str(tmp_path / "torch" / "hub" / "checkpoints") in before
    assert "$LDCT_BENCH_VGG19 unset" in before
    cached = tmp_path / "torch" / "hub" / "checkpoints" / "vgg19-dcbb9e9d.pth"
    cached.parent.mkdir(parents=True)
    torch.save({"features.0.weight": torch.zeros(64, 3, 3, 3)}, cached)
    after = CliRunner().invoke(main, ["methods"]).output
    line = next(x for x in after.splitlines() if x.startswith("wganvgg"))
    assert "no VGG19" not in line and f"VGG19 ImageNet weights: {cached}" in after
    assert get_method("wganvgg").unavailable() == ""  # it runs when named (no reference checkpoint: not in 'all')
    with pytest.raises(ValueError, match="is not a torchvision VGG19 state dict"):  # found, and checked when used
        build("wganvgg").setup_training("main")


def test_redcnn_quick_training_beats_the_low_dose_input(tiny_dataset, tmp_path):
    torch.manual_seed(0)  # the weights' initialisation is part of "seed-fixed"
    m = build("redcnn", filters=16, iterations=100, val_every=50, patch_size=48, batch_size=8, lr=1e-3, lr_final=1e-4)
    # the tiny set has 2.7 mm pixels: the 5 % abdomen (71 HU from full dose) is where there is noise to remove;
    # 100 steps of 48^2 patches gain 2.9 dB there (11 s on one core; 150 steps of 64^2 gained 4.2 in 44 s)
    job = TrainJob("redcnn", "quick", (0.05,), ("abdomen",), tiny_dataset.root.name, seed=0)
    man = fit(m, tiny_dataset, job, tmp_path / "ck", progress=False)
    assert man["complete"] and (tmp_path / "ck" / "weights.safetensors").is_file()
    assert man["final"]["val_psnr"] > man["val_psnr_ldct"] + 2.0, man["final"]
    log = (tmp_path / "ck" / "train_log.csv").read_text().splitlines()
    assert log[0].startswith("stage,step,elapsed_s") and len(log) == 3


def test_a_resume_gets_its_own_time_budget(tiny_dataset, tmp_path, monkeypatch):
    """`--time-budget T` trains T seconds more on every resume, however long the training has run before (the
    budget counted the training's whole clock, so a resumed reference training stopped as soon as it started)."""
    from ldct_bench.training import Trainer

    job = TrainJob("redcnn", "quick", (0.1,), ("chest",), tiny_dataset.root.name, seed=0)
    assert not fit(build("redcnn", iterations=6, val_every=3), tiny_dataset, job, tmp_path / "ck", time_budget_s=0.0,
                   progress=False)["complete"]
    restore = Trainer.restore

    def after_days(self):  # as if it had already trained for days
        restore(self)
        self.progress.elapsed_s += 1e6

    monkeypatch.setattr(Trainer, "restore", after_days)
    man = fit(build("redcnn", iterations=6, val_every=3), tiny_dataset, job, tmp_path / "ck", time_budget_s=120.0,
              progress=False)
    assert man["complete"] and man["final"]["elapsed_s"] > 1e6


@pytest.mark.parametrize("name", ["redcnn", "wgan-mse"])  # wgan-mse: two optimisers and their schedules
def test_resume_continues_and_refuses_a_changed_config(name, tiny_dataset, tmp_path):
    job = TrainJob(name, "quick", (0.1,), ("chest",), tiny_dataset.root.name, seed=0)
    m = build(name, iterations=6, val_every=3)
    man = fit(m, tiny_dataset, job, tmp_path / "ck", time_budget_s=0.0, progress=False)
    assert not man["complete"] and not (tmp_path / "ck" / "weights.safetensors").exists()
    state = torch.load(tmp_path / "ck" / "state.pt", weights_only=True)
    assert json.loads(state["progress"])["step"] == 1
    resumed = build(name, iterations=6, val_every=3)
    man = fit(resumed, tiny_dataset, job, tmp_path / "ck", progress=False)
    assert man["complete"] and [r["step"] for r in man_log(tmp_path / "ck")] == [3, 6]
    lr = {"redcnn": lambda m: m.opt, "wgan-mse": lambda m: m.opt_g}[name](resumed).param_groups[0]["lr"]
    assert lr == pytest.approx(resumed.config.lr_final)  # the decay went on from where it stopped
    with pytest.raises(ValueError, match="cannot resume .* different config"):
        fit(build(name, iterations=6, val_every=3, lr=5e-4), tiny_dataset, job, tmp_path / "ck", progress=False)


def man_log(d):
    import csv

    return [dict(r, step=int(r["step"])) for r in csv.DictReader(open(d / "train_log.csv"))]


def test_every_stage_of_a_two_stage_method_trains_and_resumes(tiny_dataset, tmp_path):
    """FoundDiff: DA-CLIP trains in stage 1, DA-Diff in stage 2 (with its own optimiser), across a resume."""
    torch.manual_seed(0)
    m = build("founddiff", daclip_iterations=2, dadiff_iterations=4, val_every=2)
    clip0 = {k: v.clone() for k, v in m.daclip.state_dict().items()}
    unet0 = {k: v.clone() for k, v in m.unet.state_dict().items()}
    job = TrainJob("founddiff", "quick", (0.1,), ("chest", "head"), tiny_dataset.root.name, seed=0)
    first = fit(m, tiny_dataset, job, tmp_path / "ck", time_budget_s=0.0, progress=False)  # stops after 1 step
    assert not first["complete"]
    m2 = build("founddiff", daclip_iterations=2, dadiff_iterations=4, val_every=2)
    man = fit(m2, tiny_dataset, job, tmp_path / "ck", progress=False)
    assert man["complete"] and [r["stage"] for r in man_log(tmp_path / "ck")] == ["daclip", "dadiff", "dadiff"]
    changed = lambda before, after: any(not torch.equal(before[k], after[k]) for k in before)  # noqa: E731
    assert changed(clip0, m2.daclip.state_dict()) and changed(unet0, m2.unet.state_dict())
    frozen = {k: v.clone() for k, v in m2.daclip.state_dict().items()}
    m2.setup_training("dadiff")
    m2.train_step(PatchSampler(tiny_dataset.pairs(["chest"], [0.1], "train"), 32, 2, 0).sample(), 0, "dadiff")
    assert not changed(frozen, m2.daclip.state_dict())  # DA-CLIP is frozen while DA-Diff trains


def _pairs(cells):
    """Synthetic pairs: per (anatomy, dose, noise std in HU) cell, 3 slices of fd plus that noise."""
    import pandas as pd

    from ldct_bench.data.dataset import Pairs

    g = torch.Generator().manual_seed(0)
    fd = torch.rand(3 * len(cells), 1, 16, 16, generator=g) * 1000 - 500
    std = torch.tensor([s for _, _, s in cells for _ in range(3)]).view(-1, 1, 1, 1)
    meta = pd.DataFrame([(a, d) for a, d, _ in cells for _ in range(3)], columns=["anatomy", "dose"])
    return Pairs(fd + std * torch.randn(fd.shape, generator=g), fd, meta)


def test_cell_weights_balance_cells_by_their_input_error():
    from ldct_bench.training import cell_weights

    pairs = _pairs([("chest", 0.5, 10.0), ("chest", 0.1, 20.0), ("abdomen", 0.1, 40.0)])
    w = cell_weights(pairs)
    mse = ((pairs.ld - pairs.fd) ** 2).flatten(1).mean(1).view(3, 3).mean(1)  # per cell
    assert torch.allclose(w.mean(), torch.tensor(1.0))
    assert torch.equal(w.view(3, 3), w.view(3, 3)[:, :1].expand(3, 3))  # one weight per cell
    assert torch.allclose(w.view(3, 3)[:, 0] * mse, (w[0] * mse[0]).expand(3), rtol=1e-4)  # weight x error equal
    assert 12 < w[0] / w[-1] < 20  # noise std 10 against 40 HU: about 16x
    assert torch.equal(cell_weights(_pairs([("head", 0.1, 25.0)])), torch.ones(3))  # one cell: plain MSE


def test_the_sampler_weights_cells_unless_told_to_train_on_plain_mse():
    pairs = _pairs([("chest", 0.5, 10.0), ("abdomen", 0.1, 40.0)])
    balanced = PatchSampler(pairs, 8, 64, seed=0).sample()
    assert balanced["weight"].max() / balanced["weight"].min() > 12  # both cells drawn among 64 patches
    plain = PatchSampler(pairs, 8, 64, seed=0, balance_cells=False).sample()
    assert torch.equal(plain["weight"], torch.ones(64))


def test_train_plain_loss_reaches_the_config(tiny_dataset, tmp_path):
    import json

    from click.testing import CliRunner

    from ldct_bench.cli import main

    res = CliRunner().invoke(main, ["train", "--method", "redcnn", "--iterations", "1", "--anatomies", "chest",
                                    "--data", str(tiny_dataset.root), "--out", str(tmp_path / "ck"),
                                    "--cache-dir", str(tmp_path / "c"), "--plain-loss"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ck" / "manifest.json").read_text())["config"]["balance_cells"] is False


def test_weighted_mse_is_plain_mse_without_weights():
    from torch.nn import functional as F

    from ldct_bench.toolkit import weighted_mse

    a, b = torch.rand(4, 1, 8, 8), torch.rand(4, 1, 8, 8)
    assert torch.allclose(weighted_mse(a, b), F.mse_loss(a, b))
    w = torch.tensor([0.0, 0.0, 2.0, 2.0])
    assert torch.allclose(weighted_mse(a, b, w), F.mse_loss(a[2:], b[2:]))


def test_a_daclip_step_sees_clip_batch_slices(tiny_dataset, tmp_path, monkeypatch):
    """The harness draws `clip_batch` whole slices for DA-CLIP's stage (it drew DA-Diff's batch_size, and DA-CLIP
    contrasted min(clip_batch, batch_size) of them)."""
    m = build("founddiff", clip_batch=4, batch_size=2, daclip_iterations=2, dadiff_iterations=1)
    seen = []
    forward = type(m.daclip).forward
    monkeypatch.setattr(type(m.daclip), "forward", lambda self, x: seen.append(len(x)) or forward(self, x))
    job = TrainJob("founddiff", "quick", (0.1,), ("chest",), tiny_dataset.root.name, seed=0)
    fit(m, tiny_dataset, job, tmp_path / "ck", progress=False)
    # each step contrasts two views of clip_batch low-dose and clip_batch // 2 full-dose slices
    assert seen[:2] == [2 * (4 + 2)] * 2


def test_training_stops_at_a_validation_plateau_and_records_its_budget(tiny_dataset, tmp_path):
    from ldct_bench.training import plateau_gain

    # clinical2's RED-CNN: a fifth of 3 000 steps holds two validations below the best before it; its last three
    # reach back to 1 500 and rose 0.19 dB
    curve = [(500, 44.10), (1000, 45.31), (1500, 45.63), (2000, 45.82), (2500, 45.60), (3000, 45.75)]
    assert plateau_gain(curve, 3000, 500) == pytest.approx(45.82 - 45.63)
    late = [(s, 45.0 + 0.01 * (s >= 16_500)) for s in range(500, 20_001, 500)]  # the fifth is longer: (16 000, 20 000]
    assert plateau_gain(late, 20_000, 500) == pytest.approx(0.01)
    assert plateau_gain(late[:-1] + [(20_000, 45.2)], 20_000, 500) == pytest.approx(0.2)
    assert plateau_gain([(10, 40.0)], 10, 5) is None
    assert plateau_gain([(5, 40.0), (10, 40.5), (15, 40.52)], 15, 5) is None  # nothing before the last three
    m = build("redcnn", lr=1e-12, lr_final=1e-12, iterations=40, val_every=5, plateau_db=0.05)  # cannot improve
    job = TrainJob("redcnn", "quick", (0.1,), ("chest",), tiny_dataset.root.name, seed=0)
    man = fit(m, tiny_dataset, job, tmp_path / "ck", progress=False)
    # judged from the fifth validation on, over its last three (10, 25]
    assert man["complete"] and man["steps"] == {"main": 25} and man["plateaued"] == {"main": True}
    assert [s for _, s, _ in man["validation_curve"]] == [5, 10, 15, 20, 25]
    assert man["patches_seen"] == {"main": 25 * 2}
    flops = man["training_flops"] / 25  # one step: forward and backward of 5 convolutions + 5 deconvolutions
    assert 1e6 < flops < 1e9, flops
    full = fit(build("redcnn", iterations=12, val_every=4), tiny_dataset, job, tmp_path / "ck2", progress=False)
    assert full["steps"] == {"main": 12} and full["plateaued"] == {"main": False}  # plateau_db=0: the whole budget
