"""Tests of padir.trainer: sharded steps agree across meshes, accumulation, metric reduction."""

import jax
import numpy as np
import pytest

from padir import builders
from padir import models
from padir import optimizers
from padir import partitioning
from padir import trainer as trainer_lib

import train_testlib

NETWORK = {'size': 'tiny', 'overrides': dict(emb_dim=32, num_heads=2, head_dim=16, mlp_dim=64,
                                             num_encoder_layers=1, num_decoder_layers=1)}
LENGTHS = {'inputs': train_testlib.LENGTH, 'targets': train_testlib.LENGTH}


def _batch(batch_size=8, seed=0):
  rng = np.random.default_rng(seed)
  enc = rng.integers(3, 200, size=(batch_size, train_testlib.LENGTH)).astype(np.int32)
  dec = rng.integers(3, 200, size=(batch_size, train_testlib.LENGTH)).astype(np.int32)
  enc[:, -1] = dec[:, -1] = 1  # EOS; every row has the same length
  return {'encoder_input_tokens': enc, 'decoder_target_tokens': dec,
          'decoder_loss_weights': np.ones_like(dec)}


def _model(model_cls=models.PadirModel, dropout=0.1):
  network = {'size': 'tiny', 'overrides': dict(NETWORK['overrides'], dropout_rate=dropout)}
  return builders.build_model(model_cls, vocabulary=train_testlib.VOCABULARY,
                              task_feature_lengths=LENGTHS, network=network)


def _run(model, mesh_shape, steps=2, num_microbatches=1, devices=None):
  partitioner = partitioning.Partitioner(mesh_shape, devices=devices)
  batch = _batch()
  shapes = {k: v.shape for k, v in batch.items()}
  trainer = trainer_lib.Trainer(model, optimizers.adafactor(learning_rate=0.01), partitioner,
                                shapes, seed=3, num_microbatches=num_microbatches)
  state = trainer.init_state()
  losses, grad_norms = [], []
  for _ in range(steps):
    state, metrics = trainer.train_step(state, batch)
    losses.append(float(metrics['loss']))
    grad_norms.append(float(metrics['grad_norm']))
  return trainer, state, losses, grad_norms


def test_one_device_and_eight_device_mesh_agree():
  """Same init, dropout and corruption keys: the loss does not depend on the mesh."""
  model = _model()
  _, one_state, one, _ = _run(model, (1, 1, 1), devices=jax.devices()[:1])
  trainer, eight_state, eight, _ = _run(model, (2, 2, 2))  # data x fsdp x tensor
  np.testing.assert_allclose(one, eight, rtol=2e-5)
  assert int(eight_state.step) == 2
  # Parameters really are split over the tensor axis on the 8-device mesh.
  kernel = eight_state.params['decoder']['layers_0']['mlp']['wi_0']['kernel']
  assert kernel.sharding.spec == jax.sharding.PartitionSpec('fsdp', 'tensor')
  assert kernel.addressable_shards[0].data.shape == (16, 32)
  np.testing.assert_allclose(
      np.asarray(one_state.params['decoder']['layers_0']['mlp']['wi_0']['kernel']),
      np.asarray(kernel), rtol=1e-4, atol=1e-6)
  # The eval step runs on the same shardings.
  metrics = trainer.eval_step(eight_state.params, _batch(seed=1))
  assert np.isfinite(float(metrics['loss']))


def test_gradient_accumulation_matches_the_full_batch():
  """AR model without dropout, rows of equal length: two microbatches = one full batch."""
  model = _model(models.EncoderDecoderModel, dropout=0.0)
  _, full_state, full, full_gn = _run(model, (1, 1, 1), steps=1, devices=jax.devices()[:1])
  _, acc_state, acc, acc_gn = _run(model, (1, 1, 1), steps=1, num_microbatches=2,
                                   devices=jax.devices()[:1])
  np.testing.assert_allclose(acc, full, rtol=1e-5)
  np.testing.assert_allclose(acc_gn, full_gn, rtol=1e-4)
  for a, b in zip(jax.tree_util.tree_leaves(acc_state.params),
                  jax.tree_util.tree_leaves(full_state.params)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_trainer_rejects_bad_batch_settings():
  model = _model()
  partitioner = partitioning.Partitioner((4, 1, 2))
  shapes = {k: v.shape for k, v in _batch().items()}
  with pytest.raises(ValueError, match='num_microbatches=3'):
    trainer_lib.Trainer(model, optimizers.adafactor(), partitioner, shapes, num_microbatches=3)
  with pytest.raises(ValueError, match='multiple of data x fsdp = 4'):
    trainer_lib.Trainer(model, optimizers.adafactor(), partitioner,
                        {k: (6, v[1]) for k, v in shapes.items()})
  with pytest.raises(ValueError, match='padir.optimizers.Optimizer'):
    trainer_lib.Trainer(model, object(), partitioner, shapes)


def test_metrics_accumulator_sums_counts_and_finds_nan():
  acc = trainer_lib.MetricsAccumulator()
  acc.add(1, {'loss': np.float32(2.0), 'num_tokens': np.float32(10)})
  acc.add(2, {'loss': np.float32(4.0), 'num_tokens': np.float32(30)})
  reduced, losses = acc.reduce()
  assert reduced == {'loss': 3.0, 'num_tokens': 40.0}
  assert losses == [(1, 2.0), (2, 4.0)]
  with pytest.raises(trainer_lib.NonFiniteLossError, match='at step 7'):
    trainer_lib.check_finite([(6, 1.0), (7, float('nan')), (8, float('inf'))])


def test_narrower_batches_compile_their_own_step():
  """Length-bucketed batches: a narrower width trains (its own step, compiled once) and gives
  the loss of the same rows at the full width; a wider one is refused by name."""
  model = _model(models.EncoderDecoderModel, dropout=0.0)
  partitioner = partitioning.Partitioner((1, 1, 1), devices=jax.devices()[:1])
  full = _batch()
  half = train_testlib.LENGTH // 2
  narrow = {k: v[:, :half].copy() for k, v in full.items()}
  narrow['encoder_input_tokens'][:, -1] = narrow['decoder_target_tokens'][:, -1] = 1
  padded = {k: np.pad(v, ((0, 0), (0, half))) for k, v in narrow.items()}
  trainer = trainer_lib.Trainer(model, optimizers.adafactor(learning_rate=0.01), partitioner,
                                {k: v.shape for k, v in full.items()}, seed=3)
  trainer.compile({k: (8, half) for k in full})
  assert [w['encoder_input_tokens'] for w in trainer.compiled_widths] == [
      train_testlib.LENGTH, half]
  state = trainer.init_state()
  state, narrow_metrics = trainer.train_step(state, narrow)
  other = trainer_lib.Trainer(model, optimizers.adafactor(learning_rate=0.01), partitioner,
                              {k: v.shape for k, v in full.items()}, seed=3)
  _, padded_metrics = other.train_step(other.init_state(), padded)
  np.testing.assert_allclose(float(narrow_metrics['loss']), float(padded_metrics['loss']),
                             rtol=1e-5)
  assert len(trainer.compiled_widths) == 2  # the narrow step was reused, not recompiled
  wide = {k: np.pad(v, ((0, 0), (0, 1))) for k, v in full.items()}
  with pytest.raises(ValueError, match='or a narrower sequence'):
    trainer.train_step(state, wide)
