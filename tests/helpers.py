"""Small builders the tests share (fixtures live in conftest.py): a tiny phantom config, tiny method configs."""

from __future__ import annotations

from pathlib import Path

from ldct_bench.checkpoints import REFERENCE_DIR, committed_checkpoints
from ldct_bench.data.dataset import PhantomConfig
from ldct_bench.data.geometry import FanBeamGeometry
from ldct_bench.data.simulate import Simulator
from ldct_bench.methods import get_method

TINY_GEOMETRY = FanBeamGeometry(image_size=128, n_views=360, n_channels=368, det_pitch_mm=1.2858 * 2)
TINY_DOSES = (0.05, 0.1, 0.25, 0.5)
# the real head CT volume, where `bash scripts/fetch_cranium.sh` (and .ci/run) installed it
CRANIUM = Path.home() / ".cache" / "ldct-bench" / "real" / "Cranium.inv3"

# Tiny configs so every method builds and runs in a second or two on CPU.
TINY = {
    "redcnn": dict(filters=8, iterations=4, val_every=2, patch_size=32, batch_size=2),
    "wgan-mse": dict(filters=8, iterations=4, val_every=2, patch_size=32, batch_size=2),
    "wganvgg": dict(filters=8, iterations=4, val_every=2, patch_size=32, batch_size=2),
    "dncnn": dict(depth=4, features=8, iterations=4, val_every=2, patch_size=32, batch_size=2),
    "bilateral": dict(iterations=4, val_every=2, patch_size=32, batch_size=2),
    "restormer": dict(dim=8, blocks=(1, 1, 1, 1), refinement=1, iterations=4, val_every=2, patch_size=32, batch_size=2),
    "corediff": dict(width=4, emm_middle=4, iterations=4, val_every=2, patch_size=32, batch_size=2, timesteps=3),
    "founddiff": dict(clip_layers=(1, 1, 1, 1), clip_width=8, clip_heads=2, clip_embed=32, clip_anatomy_dim=16,
                      clip_text_width=32, clip_text_layers=1, clip_n_ctx=2, clip_crop=0, clip_batch=2,
                      daclip_iterations=2, dadiff_iterations=2, dim=8, base_d_state=2, patch_size=32, batch_size=2,
                      val_every=2),
}


def tiny_config(**kw) -> PhantomConfig:
    """128 x 128 phantoms through a coarser scanner: 3/1/1 train/val/test patients of 4 slices per anatomy. The
    ellipse anatomy, which simulates about 2.7x faster: the realistic default has its own tests (test_anatomy,
    test_realism) and the committed checkpoints' tests simulate it afresh."""
    base = dict(image_size=128, slices_per_patient=4, train_patients=3, val_patients=1, test_patients=1,
                simulator=Simulator(TINY_GEOMETRY).to_dict(), anatomy_model="ellipses")
    return PhantomConfig(**{**base, **kw})


def committed_methods() -> tuple[str, ...]:
    """The methods with a committed reference checkpoint under results/checkpoints, sorted."""
    return tuple(sorted(p.name for p in REFERENCE_DIR.iterdir() if committed_checkpoints(p.name)))


def build(name, **kw):
    """Method `name` with its tiny config (and `kw` on top)."""
    cls = get_method(name)
    return cls(cls.Config.profile("quick", **{**TINY.get(name, {}), **kw})) if cls.learned else cls()


def tiny_overrides(*names):
    """The TINY configs of `names` as a run's overrides (what --set would give)."""
    from ldct_bench.config import Override

    return tuple(Override(n, k, v) for n in names for k, v in TINY[n].items())
