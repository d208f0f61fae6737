"""The classic baselines; importing this package registers them."""

from . import corediff, ldct, redcnn, wgan  # noqa: F401
