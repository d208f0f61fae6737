"""The classic baselines: the low-dose input, RED-CNN, WGAN-VGG (and WGAN-MSE), CoreDiff.

Each registers through the `ldct_bench.methods` entry-point group in pyproject.toml, as a plug-in would."""
