"""torchrun + DDP on CPU (gloo): two processes on halves of a global batch take the step one process takes on all of it."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from baselines.redcnn import REDCNNConfig
from ldct_bench.cli import main
from ldct_bench.distributed import World, shard
from ldct_bench.methods import get_method


def _train(tiny_dataset, out, method, processes, tmp_path, iterations=3):
    args = ["train", "--method", method, "--iterations", str(iterations), "--anatomies", "chest",
            "--data", str(tiny_dataset.root), "--device", "cpu", "--out", str(out), "--cache-dir", str(tmp_path / "c")]
    if processes == 1:  # the step of one process, taken in this one (a process start less)
        said = CliRunner().invoke(main, args)
        assert said.exit_code == 0, said.output
        return load_file(str(out / "weights.safetensors")), said.output
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    r = subprocess.run([*launch, "-m", "ldct_bench", *args], capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr[-2000:]
    return load_file(str(out / "weights.safetensors")), r.stdout


@pytest.mark.slow  # three processes through torchrun (about 20 s on 2 cores); the batch split is held below
def test_two_gloo_processes_take_the_single_process_step(tiny_dataset, tmp_path):
    one, _ = _train(tiny_dataset, tmp_path / "one", "redcnn", 1, tmp_path)
    two, said = _train(tiny_dataset, tmp_path / "two", "redcnn", 2, tmp_path)
    torch.manual_seed(0)  # the seeded initial weights both runs started from
    start = {f"net.{k}": v for k, v in get_method("redcnn")(REDCNNConfig.profile("quick")).net.state_dict().items()}
    assert said.count("complete") == 1  # rank 0 alone reports
    assert one.keys() == two.keys() == start.keys()
    trained = max((one[k] - start[k]).abs().max().item() for k in one)
    apart = max((one[k] - two[k]).abs().max().item() for k in one)
    print(f"3 Adam steps moved weights by up to {trained:.2e}; 1 vs 2 processes differ by {apart:.2e}")
    assert trained > 1e-4 and apart < 1e-6


@pytest.mark.slow  # two more processes (~10 s)
def test_gan_critic_gradients_are_averaged_by_hand_under_torchrun(tiny_dataset, tmp_path):
    weights, said = _train(tiny_dataset, tmp_path / "gan", "wgan-mse", 2, tmp_path, iterations=2)
    assert all(torch.isfinite(v).all() for v in weights.values()) and said.count("complete") == 1


def test_shard_splits_the_global_batch_and_refuses_uneven_ones():
    batch = {"ld": torch.arange(8).view(8, 1), "dose": torch.arange(8.0)}
    parts = [shard(batch, World(r, 2)) for r in range(2)]
    assert torch.equal(torch.cat([p["ld"] for p in parts]), batch["ld"])
    assert parts[1]["dose"].tolist() == [4.0, 5.0, 6.0, 7.0]
    with pytest.raises(ValueError, match="multiple of 3"):
        shard(batch, World(0, 3))
