"""Tests for padir.compile_time."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from padir.compile_time import CompileTimer


def test_counts_each_new_shape_once_and_nothing_after_it_stops():
  fn = jax.jit(lambda x: jnp.tanh(x) * 3.0 + 1.0)
  small, large = np.ones((3, 5), np.float32), np.ones((4, 5), np.float32)
  with CompileTimer() as timer:
    fn(small).block_until_ready()
    fn(small).block_until_ready()   # in the in-memory cache: no new program
    fn(large).block_until_ready()   # a new shape compiles again
  assert timer.programs == 2
  assert timer.seconds['backend'] > 0 and timer.seconds['trace'] > 0
  assert timer.total == pytest.approx(sum(timer.seconds.values()))
  assert timer.summary()['programs'] == 2
  fn(np.ones((6, 5), np.float32)).block_until_ready()   # after the block: not counted
  assert timer.programs == 2


def test_refuses_to_reenter_a_running_timer():
  timer = CompileTimer()
  with timer:
    with pytest.raises(RuntimeError, match='already running'):
      timer.__enter__()
