"""`ldct-bench bench`: each stage's throughput beside a reference measured in the same run, and peak memory.

Stages:
  simulation  slices/s of exact fan-beam projection + noise + FBP, vs scikit-image's radon/iradon
              (parallel beam, same number of views over half a turn), and both FBP errors in HU;
  metrics     slices/s of the metric engine, vs a per-slice scikit-image (+ piq) loop, and the largest
              difference between their numbers;
  simulation  on CUDA also: the torch projector and FBP on the GPU vs the numba ones on this machine's CPU,
              with the largest difference between their images in HU;
  inference   ms per slice for every method (diffusion models with their sampling steps), batch sized
              to the device, at the chosen profile's network size (--profile quick|paper);
  training    iterations/s of each learned method's training stages at the chosen profile (its batch and
              patch size), with the GPU memory a step takes;
  import      seconds per dose of inserting doses into a 512^2, 440 mm slice (`data import --doses`), vs
              scikit-image's radon/iradon doing the same;
  iq          the cost of --iq at the embedded size (simulating and scoring the image-quality phantom), vs
              simulating and scoring the default run's test split; and how many images --iq denoises per method;
  acquisition patients/s simulated through each acquisition profile, vs the default profile (a second scanner,
              kernel or display field should cost what the default costs);
  end-to-end  (--end-to-end) the default `ldct-bench run` in a child process, split by stage, with its peak RSS.
Ratios are ours / reference throughput, so above 1 is faster. Results go to CSV and JSON so runs can be
compared over time.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .atomic import atomic_write_json, atomic_write_text
from .environment import git_commit, hardware, versions


def _row(stage, item, ours, reference=None, unit="", reference_name="", note="", higher_is_better=True) -> dict:
    ratio = (ours / reference if higher_is_better else reference / ours) if reference and ours else None
    return {"stage": stage, "item": item, "ours": None if ours is None else round(ours, 3),
            "reference": None if reference is None else round(reference, 3), "unit": unit,
            "ratio": None if ratio is None else round(ratio, 2), "reference_name": reference_name, "note": note}


def _best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


# ----------------------------------------------------------------------------------------------- simulation
def bench_simulation(size: int, device: str = "cpu", repeats: int = 2) -> list[dict]:
    from skimage.transform import iradon, radon

    from .data.fbp import fbp
    from .data.geometry import FanBeamGeometry
    from .data.noise import NoiseModel
    from .data.phantoms import phantom_slice, rasterize, to_additive
    from .data.projector import ellipse_sinogram, hu_to_mu, mu_to_hu
    from .data.simulate import Simulator, generator

    geom = FanBeamGeometry(image_size=size)
    theta = np.linspace(0.0, 180.0, geom.n_views // 2, endpoint=False)  # parallel beam needs half a turn
    rows = to_additive(phantom_slice("abdomen", 1, 0.0))
    mu_img = hu_to_mu(rasterize(rows, geom).double()).numpy()
    sim = Simulator(geom)

    def ours():
        return sim.scan(ellipse_sinogram(geom, rows), 1, [0.25], [2])

    def reference():
        sino = radon(mu_img, theta=theta, circle=False) * geom.pixel_mm
        noisy = NoiseModel().transmit(torch.from_numpy(sino), 0.25, generator(1)).numpy()
        return iradon(noisy / geom.pixel_mm, theta=theta, filter_name="hann", circle=False, output_size=size)

    ours()  # warm-up: numba compilation, cached filters
    t_ours, t_ref = _best_time(ours, repeats), _best_time(reference, repeats)

    # accuracy: noiseless reconstruction of a water ellipse (+ a bone insert) in a flat water region, HU RMSE
    mu_w = hu_to_mu(torch.tensor(0.0)).item()
    water = torch.tensor([[0, 0, 120, 100, 0.0, mu_w], [70, 0, 12, 12, 0.0, hu_to_mu(torch.tensor(1000.0)).item() - mu_w]],
                         dtype=torch.float64)
    x, y = geom.pixel_centres()
    roi = ((x + 20) ** 2 + y**2) < 40**2

    def rmse(img):
        return float(torch.as_tensor(img)[roi].pow(2).mean().sqrt())

    notes = []
    for label, phantom in (("water+bone", water), ("water", water[:1])):
        mine = mu_to_hu(fbp(geom, ellipse_sinogram(geom, phantom).float()))
        mu = hu_to_mu(rasterize(phantom, geom).double()).numpy()
        theirs = mu_to_hu(torch.from_numpy(iradon(radon(mu, theta=theta, circle=False), theta=theta, filter_name="hann",
                                                  circle=False, output_size=size)))
        notes.append(f"FBP RMSE {label}: ours {rmse(mine):.2f} HU, reference {rmse(theirs):.2f} HU")
    out = [_row("simulation", f"project+noise+FBP {size}x{size}", 1 / t_ours, 1 / t_ref, "slices/s",
                "scikit-image radon/iradon", "; ".join(notes))]
    if device.startswith("cuda"):
        out += bench_simulation_on_device(geom, rows, device, repeats)
    return out


def bench_simulation_on_device(geom, rows, device: str, repeats: int = 3, batch: int = 8) -> list[dict]:
    """The torch projector and FBP on `device` against the numba ones on the CPU, on a batch of noisy scans: slices/s
    of each, and the largest difference between the two reconstructions in HU (the GPU must agree within 0.5 HU)."""
    from .data.fbp import fbp
    from .data.noise import NoiseModel
    from .data.phantoms import rasterize
    from .data.projector import ellipse_sinogram, hu_to_mu, mu_to_hu, project_image
    from .data.simulate import generator

    clean = ellipse_sinogram(geom, rows)
    sino = torch.stack([NoiseModel().transmit(clean, 0.25, generator(i)) for i in range(batch)]).float()
    mu = hu_to_mu(rasterize(rows, geom).double()).float()[None].expand(batch, -1, -1).contiguous()

    def timed(fn):
        def run():
            fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize(device)
        run()  # warm-up: numba compilation, cuFFT plans
        return _best_time(run, repeats)

    sino_d, mu_d = sino.to(device), mu.to(device)
    fbp_cpu, fbp_dev = partial(fbp, geom, sino, backend="numba"), partial(fbp, geom, sino_d, backend="torch")
    prj_cpu, prj_dev = partial(project_image, geom, mu, backend="numba"), partial(project_image, geom, mu_d, backend="torch")
    hu_diff = float((mu_to_hu(fbp_dev()).cpu() - mu_to_hu(fbp_cpu())).abs().max())
    p_cpu = prj_cpu()
    rel = float((prj_dev().cpu() - p_cpu).abs().max() / p_cpu.abs().max())
    t_fbp_cpu, t_fbp_dev, t_prj_cpu, t_prj_dev = (timed(f) for f in (fbp_cpu, fbp_dev, prj_cpu, prj_dev))
    size = geom.image_size
    return [_row("simulation", f"FBP {size}x{size} on {device}, batch {batch}", batch / t_fbp_dev, batch / t_fbp_cpu,
                 "slices/s", "numba on this machine's CPU", f"max |difference| {hu_diff:.3f} HU (target <= 0.5 HU)"),
            _row("simulation", f"projection {size}x{size} on {device}, batch {batch}", batch / t_prj_dev,
                 batch / t_prj_cpu, "slices/s", "numba on this machine's CPU",
                 f"max relative difference {rel:.1e}")]


# ----------------------------------------------------------------------------------------------- DICOM import
def bench_import(size: int = 512, fov_mm: float = 440.0, doses=(0.25, 0.1), repeats: int = 1) -> list[dict]:
    """Dose insertion into one real-size slice (a 440 mm abdomen field of view, wider than the polynomial fan-angle
    range): reprojection, noise of each dose and FBP, as `data import --doses` does it, vs scikit-image's
    radon/iradon doing the same (parallel beam, half a turn, one reprojection, one FBP per dose)."""
    from skimage.transform import iradon, radon

    from .data.geometry import FanBeamGeometry
    from .data.noise import NoiseModel
    from .data.phantoms import phantom_slice, rasterize, to_additive
    from .data.projector import hu_to_mu
    from .data.simulate import Simulator, generator

    geom = FanBeamGeometry.covering(size, fov_mm)  # as `data import` builds it for a slice
    sim = Simulator(geom)
    image = rasterize(to_additive(phantom_slice("abdomen", 1, 0.0)), geom)
    mu = hu_to_mu(image.double()).numpy()
    theta = np.linspace(0.0, 180.0, geom.n_views // 2, endpoint=False)

    def ours():
        return sim.lower_dose(image, list(doses), list(range(len(doses))))

    def reference():
        sino = radon(mu, theta=theta, circle=False) * geom.pixel_mm
        full = NoiseModel().transmit(torch.from_numpy(sino), 1.0, generator(0))
        return [iradon(NoiseModel().insert(full, d, generator(1)).numpy() / geom.pixel_mm, theta=theta,
                       filter_name="hann", circle=False, output_size=size) for d in doses]

    ours()  # warm-up: numba compilation
    t_ours, t_ref = _best_time(ours, repeats), _best_time(reference, repeats)
    n = len(doses)
    return [_row("import", f"dose insertion {size}x{size}, {fov_mm:.0f} mm FOV, {n} doses", t_ours / n, t_ref / n,
                 "s/dose", "scikit-image radon/iradon", f"one reprojection and base FBP shared by the {n} doses",
                 False)]


# ------------------------------------------------------------------------------------------ image quality
def bench_iq(doses=(0.05, 0.1, 0.25, 0.5), n: int = 8) -> list[dict]:
    """The cost of --iq at the embedded size: simulating the phantom set and scoring it, beside simulating and
    scoring the anatomical test split of the default run (same chain, same doses)."""
    from .data.dataset import PhantomConfig, _simulate_patient
    from .data.iq_phantom import IQConfig, IQPhantomSet
    from .data.simulate import Simulator, dose_key
    from .iq import score_iq
    from .metrics import score_batch, windows_for

    iq, test = IQConfig(), PhantomConfig()
    keys = ["truth", "full", *(dose_key(d) for d in doses)]
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        small = IQPhantomSet.build(IQConfig(realisations=n), doses, cache_dir=Path(tmp), progress=False)
        per_scan = (time.perf_counter() - t) / (2 * n)
        # the scoring of a full set: its realisations repeated up to the default count (the cost, not the numbers)
        images = {c: np.resize(small.images(c, 0.1), (iq.realisations, *small.images(c, 0.1).shape[1:]))
                  for c in ("present", "absent")}
        t = time.perf_counter()
        score_iq(images["present"], images["absent"], small.geometry)
        score_s = time.perf_counter() - t
    sim = Simulator.from_dict(test.simulator)
    t = time.perf_counter()
    arrays = _simulate_patient(replace(test, slices_per_patient=1), sim, "abdomen", 0, keys)
    per_slice = time.perf_counter() - t
    slices = 3 * test.test_patients * test.slices_per_patient  # the default run's test split
    pred = torch.from_numpy(np.repeat(arrays["d0.1000"][:, None], slices, 0))
    t = time.perf_counter()
    score_batch(pred, torch.from_numpy(np.repeat(arrays["full"][:, None], slices, 0)), windows_for("abdomen"),
                ("psnr", "ssim", "rmse"))
    cell_s = 2 * (time.perf_counter() - t)  # two references
    images_per_method = 2 * iq.realisations * len(doses)
    return [
        _row("iq", f"simulate the phantom set ({2 * iq.realisations} scans x {len(doses)} doses)",
             per_scan * 2 * iq.realisations, per_slice * slices, "s", "simulate the default test split", "", False),
        _row("iq", "score one (method, dose): CHO, NPS, TTF", score_s, cell_s, "s",
             "score one anatomy x dose cell (PSNR/SSIM/RMSE)", "", False),
        _row("iq", "images each method denoises", images_per_method, slices * len(doses), "images",
             "test slices each method denoises in the default run",
             f"--iq denoises {images_per_method / (slices * len(doses)):.1f}x the default run's slices per method, "
             "and its inference time scales with that", False)]


# -------------------------------------------------------------------------------------------------- metrics
def bench_metrics(size: int, n: int = 16) -> list[dict]:
    import piq
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    from .metrics import WINDOWS, score_batch

    g = torch.Generator().manual_seed(0)
    ref = torch.randn(n, 1, size, size, generator=g) * 300
    pred = ref + torch.randn(ref.shape, generator=g) * 40
    w = WINDOWS["abdomen"]

    def reference_fidelity():
        out = {"psnr": [], "ssim": [], "rmse": []}
        for p, r in zip(pred[:, 0].double().numpy(), ref[:, 0].double().numpy()):
            p, r = np.clip(p, w.lo, w.hi) - w.lo, np.clip(r, w.lo, w.hi) - w.lo
            out["psnr"].append(peak_signal_noise_ratio(r, p, data_range=w.width))
            out["ssim"].append(structural_similarity(r, p, data_range=w.width, gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False))
            out["rmse"].append(float(np.sqrt(np.mean((p - r) ** 2))))
        return out

    calls = {"ms_ssim": piq.multi_scale_ssim, "vif": piq.vif_p, "gmsd": piq.gmsd,
             "fsim": lambda p, r, **k: piq.fsim(p, r, chromatic=False, **k), "haarpsi": piq.haarpsi}

    def reference_piq():
        pu, ru = ((t.double().clamp(w.lo, w.hi) - w.lo) / w.width for t in (pred, ref))
        return {k: [float(f(pu[i:i + 1], ru[i:i + 1], data_range=1.0)) for i in range(n)] for k, f in calls.items()}

    def diff(ours, theirs):
        return max(float(np.max(np.abs(ours[(w.name, k)].numpy() - np.array(v)) / np.maximum(1e-12, np.abs(v))))
                   for k, v in theirs.items())

    score_batch(pred[:2], ref[:2], [w], tuple(calls) + ("rmse", "psnr", "ssim"))  # warm-up
    rows = []
    t = time.perf_counter()
    ours = score_batch(pred, ref, [w], ("rmse", "psnr", "ssim"))
    t_ours = time.perf_counter() - t
    t = time.perf_counter()
    theirs = reference_fidelity()
    t_ref = time.perf_counter() - t
    rows.append(_row("metrics", f"PSNR/SSIM/RMSE {size}x{size}", n / t_ours, n / t_ref, "slices/s",
                     "scikit-image per slice", f"max relative difference {diff(ours, theirs):.1e}"))
    names = ("rmse", "psnr", "ssim", *calls)
    t = time.perf_counter()
    ours_all = score_batch(pred, ref, [w], names)
    t_all = time.perf_counter() - t
    t = time.perf_counter()
    theirs_piq = reference_piq()
    t_ref_all = t_ref + time.perf_counter() - t
    rows.append(_row("metrics", f"+ MS-SSIM/VIF/FSIM/GMSD/HaarPSI {size}x{size}", n / t_all, n / t_ref_all, "slices/s",
                     "scikit-image + piq per slice (float64)",
                     f"max relative difference {max(diff(ours_all, theirs), diff(ours_all, theirs_piq)):.1e}"))
    return rows


# ------------------------------------------------------------------------------------------------ inference
def auto_batch(method, size: int, device: str, cap: int = 16) -> int:
    """CUDA: the largest power of two up to `cap` that runs without running out of memory. CPU: 4, which
    keeps every method's activations at 512x512 well under a laptop's memory."""
    if not device.startswith("cuda"):
        return 4
    batch = 1
    while batch * 2 <= cap:
        try:
            method.denoise(torch.zeros(batch * 2, 1 + 2 * method.context, size, size, device=device))
            batch *= 2
        except torch.cuda.OutOfMemoryError:
            break
        finally:
            torch.cuda.empty_cache()
    return batch


def bench_inference(size: int, device: str, methods: list[str], min_seconds: float = 3.0,
                    profile: str = "quick") -> list[dict]:
    from .methods import get_method

    rows = []
    g = torch.Generator().manual_seed(0)
    for name in methods:
        cls = get_method(name)
        method = cls(cls.Config.profile(profile), device).for_inference()  # untrained: the cost, not the output
        batch = auto_batch(method, size, device)
        x = (torch.randn(batch, 1 + 2 * method.context, size, size, generator=g) * 200 + 40).to(device)
        method.denoise(x)  # warm-up
        n, t0 = 0, time.perf_counter()
        while n == 0 or time.perf_counter() - t0 < min_seconds:
            method.denoise(x)
            n += batch
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        ms = 1000 * (time.perf_counter() - t0) / n
        steps = method.sampling_steps
        note = ", ".join(filter(None, (f"{profile} profile, batch {batch}", steps and f"{steps} sampling steps",
                                       method.kernels(training=False))))
        rows.append(_row("inference", f"{name} {size}x{size}", ms, None, "ms/slice", "", note, higher_is_better=False))
    return rows


# ------------------------------------------------------------------------------------------------- training
def synthetic_pairs(n: int, size: int, context: int, seed: int = 0):
    """Random slices with doses and anatomies, shaped as the training harness's pairs: a training step costs the same
    whatever the pixels hold, so the bench needs no dataset."""
    from .data.dataset import Pairs
    from .toolkit import ANATOMY_INDEX

    g = torch.Generator().manual_seed(seed)
    fd = torch.randn(n, 1, size, size, generator=g) * 200 + 40
    ld = fd.expand(-1, 1 + 2 * context, -1, -1) + torch.randn(n, 1 + 2 * context, size, size, generator=g) * 40
    anatomies = list(ANATOMY_INDEX)
    meta = pd.DataFrame({"anatomy": [anatomies[i % len(anatomies)] for i in range(n)],
                         "dose": [(0.1, 0.5)[i % 2] for i in range(n)]})
    return Pairs(ld, fd, meta)


def bench_training(size: int, device: str, methods: list[str], profile: str = "quick",
                   min_seconds: float = 3.0) -> list[dict]:
    """Iterations/s of each learned method's training stages at `profile`, drawing batches as the harness does (the
    profile's batch and patch size; whole slices where its patch size is 0). A stage that runs out of GPU memory is
    reported as such rather than stopping the bench."""
    from .methods import get_method
    from .training import PatchSampler

    rows = []
    for name in methods:
        cls = get_method(name)
        if not cls.learned:
            continue
        cfg = cls.Config.profile(profile)
        torch.manual_seed(0)
        method = cls(cfg, device)
        sampler = PatchSampler(synthetic_pairs(8, size, cls.context), cfg.patch_size, cfg.batch_size, seed=0)
        for stage in method.stages:
            batch_size = cfg.stage_batch_size(stage)
            item = f"{name}:{stage} {size}x{size}"
            note = ", ".join(filter(None, (f"{profile} profile, batch {batch_size}, patch {sampler.patch}",
                                           method.kernels(training=True))))
            try:
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats(device)
                method.setup_training(stage)
                batch = {k: v.to(device) for k, v in sampler.sample(batch_size).items()}
                for step in range(2):  # warm-up: kernels chosen, optimiser state allocated
                    method.train_step(batch, step, stage)
                n, t0 = 0, time.perf_counter()
                while n == 0 or time.perf_counter() - t0 < min_seconds:
                    method.train_step(batch, 2 + n, stage)
                    n += 1
                if device.startswith("cuda"):
                    torch.cuda.synchronize(device)
                    note += f", peak GPU memory {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GB"
                rows.append(_row("training", item, n / (time.perf_counter() - t0), None, "it/s", "", note))
            except torch.cuda.OutOfMemoryError:
                torch.cuda.empty_cache()
                rows.append(_row("training", item, None, None, "it/s", "", note + ": out of GPU memory"))
        method.train(False)
        del method
        if device.startswith("cuda"):
            torch.cuda.empty_cache()
    return rows


# ---------------------------------------------------------------------------------------------- acquisition
def bench_acquisition(repeats: int = 2) -> list[dict]:
    """Patients per second simulated through each acquisition profile (at the embedded size: truth, full dose and
    the four default doses of a 4-slice patient, one per anatomy), vs the default profile in this run."""
    from .data.acquisition import ACQUISITIONS
    from .data.dataset import PhantomConfig, _simulate_patient
    from .data.resolve import phantoms_for
    from .data.simulate import Simulator, dose_key
    from .protocol import DEFAULT_DOSES

    keys = ["truth", "full", *(dose_key(d) for d in DEFAULT_DOSES)]

    def rate(name: str) -> float:
        config = phantoms_for(f"embedded@{name}", PhantomConfig())
        sim = Simulator.from_dict(config.simulator)
        return 3 / _best_time(lambda: [_simulate_patient(config, sim, a, 14, keys) for a in ("head", "chest",
                                                                                              "abdomen")], repeats)

    base = rate("default")
    return [_row("acquisition", f"simulate through {name} ({acq.pixel_mm:.2f} mm, {acq.kernel.name})", rate(name),
                 base, "patients/s", "the default profile") for name, acq in ACQUISITIONS.items() if name != "default"]


def bench_anatomy(repeats: int = 2) -> list[dict]:
    """Patients per second simulated with the realistic anatomy (data/detail.py) vs the ellipses in this run, through
    the default scanner and the smallest display field (as bench_acquisition: truth, full dose and four doses)."""
    from dataclasses import replace

    from .data.dataset import PhantomConfig, _simulate_patient
    from .data.resolve import phantoms_for
    from .data.simulate import Simulator, dose_key
    from .protocol import DEFAULT_DOSES

    keys = ["truth", "full", *(dose_key(d) for d in DEFAULT_DOSES)]

    def rate(model: str, acquisition: str) -> float:
        config = phantoms_for(f"embedded@{acquisition}", replace(PhantomConfig(), anatomy_model=model))
        sim = Simulator.from_dict(config.simulator)
        return 3 / _best_time(lambda: [_simulate_patient(config, sim, a, 14, keys) for a in ("head", "chest",
                                                                                              "abdomen")], repeats)

    return [_row("anatomy", f"simulate realistic anatomy through {acq}", rate("realistic", acq), rate("ellipses", acq),
                 "patients/s", f"the ellipses through {acq}") for acq in ("default", "dfov140")]


# ----------------------------------------------------------------------------------------------- end to end
def bench_end_to_end(cache_dir: Path | None = None) -> list[dict]:
    """The default `ldct-bench run --methods all --doses 5,10,25,50` in a child process."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        cmd = [sys.executable, "-m", "ldct_bench", "run", "--methods", "all", "--doses", "5,10,25,50", "--out", str(out)]
        if cache_dir:
            cmd += ["--cache-dir", str(cache_dir)]
        before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        wall = time.perf_counter() - t
        rss_gb = max(before, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 2**20
        timings = json.loads((out / "manifest.json").read_text())["timings"]
    rows = [_row("end-to-end", "default run: wall", wall, None, "s", "", f"peak RSS {rss_gb:.2f} GB", False)]
    for key, v in sorted(timings.items()):
        if key.endswith(("denoise_s", "score_s")) or key == "data_s":
            rows.append(_row("end-to-end", key, v, None, "s", "", "", False))
    return rows


STAGES = ("simulation", "metrics", "inference", "training", "import", "iq", "acquisition", "anatomy")
DEFAULT_STAGES = ("simulation", "metrics", "inference", "import", "iq", "acquisition", "anatomy")


def run_bench(size: int = 512, device: str = "cpu", methods: list[str] | None = None, end_to_end: bool = False,
              out: Path | None = None, cache_dir: Path | None = None, stages=DEFAULT_STAGES, profile: str = "quick",
              echo=print) -> pd.DataFrame:
    from .selection import resolve_methods

    rows = []
    if end_to_end:  # first, while this process is small: a forked child starts out counting its parent's pages
        rows += bench_end_to_end(cache_dir)
    if "simulation" in stages:
        rows += bench_simulation(size, device)
    if "metrics" in stages:
        rows += bench_metrics(size)
    if "import" in stages:
        rows += bench_import()
    if "iq" in stages:
        rows += bench_iq()
    if "acquisition" in stages:
        rows += bench_acquisition()
    if "anatomy" in stages:
        rows += bench_anatomy()
    if "inference" in stages:
        rows += bench_inference(size, device, methods or resolve_methods("all"), profile=profile)
    if "training" in stages:
        rows += bench_training(size, device, methods or resolve_methods("all"), profile)
    table = pd.DataFrame(rows)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    gpu = torch.cuda.max_memory_allocated() / 2**30 if device.startswith("cuda") else None
    echo(table.drop(columns=["reference_name"]).to_string(index=False))
    echo(f"peak RSS of this process {peak:.2f} GB" + (f"; peak GPU memory {gpu:.2f} GB" if gpu is not None else ""))
    if out is not None:
        out = Path(out)
        atomic_write_text(out.with_suffix(".csv"), table.to_csv(index=False))
        atomic_write_json(out.with_suffix(".json"), {
            "size": size, "device": device, "profile": profile, "rows": rows, "peak_rss_gb": round(peak, 3),
            "peak_gpu_gb": gpu,
            "hardware": hardware(device), "versions": versions(), "git_commit": git_commit(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%S")})
        echo(f"written: {out.with_suffix('.csv')} and {out.with_suffix('.json')}")
    return table
