"""A method that only a test-only entry point registers (not imported by the suite)."""

from ldct_bench.methods import Method


class ToyMethod(Method):
    name = "toy"
    description = "test-only: subtract 1 HU"
    learned = False
    stages = ()

    def denoise(self, ld_hu):
        return ld_hu[:, :1] - 1
