"""ldct-bench: a benchmark for generalizable low-dose CT denoising."""

__version__ = "0.1.0"
