"""Test set-up: eight virtual CPU devices for mesh tests, quiet TensorFlow, clean gin state."""

import os

import pytest

os.environ.setdefault('XLA_FLAGS', '--xla_force_host_platform_device_count=8')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
os.environ.setdefault('JAX_PLATFORMS', 'cpu')


@pytest.fixture(autouse=True)
def _clear_gin_bindings():
  """Gin bindings are process-global: a test's bindings must not leak into the next test."""
  yield
  import gin  # pylint: disable=g-import-not-at-top
  gin.clear_config()
