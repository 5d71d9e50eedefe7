"""Tests of padir.partitioning: mesh shapes, rules, divisibility errors, derived shardings."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from padir import partitioning


def test_resolve_mesh_shape_fills_one_axis():
  assert partitioning.resolve_mesh_shape((-1, 1, 1), 8) == (8, 1, 1)
  assert partitioning.resolve_mesh_shape((2, -1, 2), 8) == (2, 2, 2)
  assert partitioning.resolve_mesh_shape((4, 1, 2), 8) == (4, 1, 2)


@pytest.mark.parametrize('shape, message', [
    ((-1, -1, 1), 'at most one'),
    ((3, 1, 1), 'has 3 devices but 8'),
    ((-1, 3, 1), 'not a multiple'),
    ((8, 1), 'needs 3 entries'),
    ((0, -1, 1), 'positive'),
])
def test_resolve_mesh_shape_errors(shape, message):
  with pytest.raises(ValueError, match=message):
    partitioning.resolve_mesh_shape(shape, 8)


def test_rules_map_params_and_activations():
  p = partitioning.Partitioner((2, 2, 2))
  assert p.mesh_shape == {'data': 2, 'fsdp': 2, 'tensor': 2}
  assert p.batch_shards == 4
  # Parameters: embed on fsdp, mlp / vocab / heads on tensor.
  assert p.mesh_spec(P('embed', 'mlp')) == P('fsdp', 'tensor')
  assert p.mesh_spec(P('vocab', 'embed')) == P('tensor', 'fsdp')
  # Activations: the batch takes data and fsdp, so embed stays replicated.
  assert p.mesh_spec(P('batch', 'length', 'embed')) == P(('data', 'fsdp'), None, None)


def test_num_devices_uses_a_prefix_of_the_devices():
  p = partitioning.Partitioner((-1, 1, 1), num_devices=2)
  assert p.mesh_shape == {'data': 2, 'fsdp': 1, 'tensor': 1}
  assert list(p.mesh.devices.flat) == jax.devices()[:2]
  with pytest.raises(ValueError, match=r'num_devices=9 must be in \[1, 8\]'):
    partitioning.Partitioner((-1, 1, 1), num_devices=9)


def test_unknown_mesh_axis_in_rules():
  with pytest.raises(ValueError, match="mesh axis 'model'"):
    partitioning.Partitioner((-1, 1, 1), logical_axis_rules=[('mlp', 'model')])


def test_divisibility_error_names_param_and_axis():
  p = partitioning.Partitioner((2, 1, 4))
  specs = {'decoder': {'mlp': {'wi': P('embed', 'mlp')}}}
  params = {'decoder': {'mlp': {'wi': jax.ShapeDtypeStruct((32, 6), jnp.float32)}}}
  with pytest.raises(ValueError, match=r"decoder/mlp/wi.*logical axis 'mlp'.*tensor of size 4"):
    p.param_shardings(specs, params)


def test_optimizer_shardings_are_derived_from_params():
  p = partitioning.Partitioner((2, 2, 2))
  params = {'w': jax.ShapeDtypeStruct((256, 512), jnp.float32),
            'scale': jax.ShapeDtypeStruct((256,), jnp.float32)}
  specs = {'w': P('embed', 'mlp'), 'scale': P('embed')}
  shardings = p.param_shardings(specs, params)
  # AdamW: moments have the params' shapes and shardings; the count is replicated.
  adam = p.optimizer_shardings(optax.adamw(1e-3), params, shardings)
  assert adam[0].mu['w'].spec == P('fsdp', 'tensor')
  assert adam[0].nu['scale'].spec == P('fsdp')
  assert adam[0].count.spec == P()
  # Adafactor: factored moments drop the reduced dimension's mesh axis.
  ada = p.optimizer_shardings(optax.adafactor(1e-2), params, shardings)
  factored = ada[0]
  assert factored.v_row['w'].spec == P('fsdp')
  assert factored.v_col['w'].spec == P('tensor')
  assert factored.v['w'].spec == P()  # the unused full moment of a factored param
  assert factored.v['scale'].spec == P('fsdp')
  # Every leaf got a sharding that fits its shape.
  state = jax.eval_shape(optax.adafactor(1e-2).init, params)
  for leaf, sharding in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(ada)):
    sharding.shard_shape(leaf.shape)


def test_shard_batch_and_batch_size_checks():
  p = partitioning.Partitioner((4, 1, 2))
  p.check_batch_size(8)
  with pytest.raises(ValueError, match='multiple of data x fsdp = 4'):
    p.check_batch_size(6)
  p.check_process_rows(8)
  local = {'tokens': np.arange(16, dtype=np.int32).reshape(8, 2)}
  out = p.shard_batch(local)
  assert out['tokens'].shape == (8, 2)
  assert out['tokens'].sharding.spec == P(('data', 'fsdp'), None)
  np.testing.assert_array_equal(np.asarray(out['tokens']), local['tokens'])
