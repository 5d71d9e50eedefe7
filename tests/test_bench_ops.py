"""Tests for padir.bench.ops: kernel time charged to source functions."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from padir.bench import ops

HERE = os.path.dirname(os.path.abspath(__file__))


def _project(x, w):  # [N, D] x [D, V] -> [N, V]
  return x @ w


def _normaliser(logits):  # [N, V] -> [N]
  return jax.nn.logsumexp(logits, axis=-1)


def _sorted_ranks(keys):  # [N, K] -> [N, K]
  return jnp.argsort(jnp.argsort(keys, axis=-1), axis=-1)


@jax.jit
def _step(x, w, keys):
  return _normaliser(_project(x, w)), _sorted_ranks(keys)


def test_op_profile_charges_kernels_to_the_functions_that_made_them():
  rng = np.random.RandomState(0)
  arg_sets = [(jnp.asarray(rng.randn(64, 128), jnp.float32),
               jnp.asarray(rng.randn(128, 2048), jnp.float32),
               jnp.asarray(rng.randn(8, 32), jnp.float32)) for _ in range(3)]
  profile = ops.op_profile(_step, arg_sets, source_dirs=[HERE])
  functions = {r.function: r for r in profile.rows}
  # The sort is its own kernel; the projection and the normaliser may be fused into one.
  assert '_sorted_ranks' in functions
  assert {'_project', '_normaliser'} & set(functions)
  assert all(r.us_per_call > 0 and r.kernels_per_call > 0 for r in profile.rows)
  assert [r.us_per_call for r in profile.rows] == sorted(
      (r.us_per_call for r in profile.rows), reverse=True)
  assert profile.kernel_us_per_call == pytest.approx(sum(r.us_per_call for r in profile.rows))
  assert 0 < profile.busy_us_per_call <= profile.kernel_us_per_call + 1e-6
  assert profile.wall_us_per_call >= profile.busy_us_per_call
  table = profile.to_markdown(top=1)
  assert '| **kernels in all** |' in table and 'other functions' in table
  assert set(profile.to_json()) == {'rows', 'wall_us_per_call', 'kernel_us_per_call',
                                    'busy_us_per_call'}


def test_union_length_counts_overlaps_once():
  assert ops._union_length([]) == 0.0
  assert ops._union_length([(0.0, 2.0), (1.0, 3.0), (5.0, 6.0), (5.5, 5.7)]) == 4.0


def test_op_profile_refuses_what_it_cannot_profile():
  with pytest.raises(ValueError, match='jax.jit'):
    ops.op_profile(lambda x: x, [(1.0,)])
  with pytest.raises(ValueError, match='at least one'):
    ops.op_profile(_step, [])


def test_cli_needs_a_run_with_a_finished_select_stage(tmp_path, capsys):
  assert ops.main(['--run_dir', str(tmp_path)]) == 2
  assert 'no finished select stage' in capsys.readouterr().out
