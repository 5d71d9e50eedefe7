"""Tests for padir.bench.train: the FLOP model, the matmul peak, one timed and profiled step."""

import jax
import pytest

from padir.bench import train as bench_train
from padir import builders
from padir import models
from padir import partitioning


def _model(stages, length=8):
  return builders.build_model(models.PadirModel, vocabulary='bible',
                              task_feature_lengths={'inputs': length, 'targets': length},
                              network={'size': 'tiny'},
                              model_kwargs={'num_train_stages': stages})


def test_model_flops_grow_by_one_decoder_pass_per_stage_and_linearly_in_batch():
  f1, f2, f3 = (bench_train.model_flops_per_step(_model(s), 4, 8, 8) for s in (1, 2, 3))
  assert f1 > 0 and f2 - f1 > 0
  assert f3 - f2 == pytest.approx(f2 - f1)
  assert bench_train.model_flops_per_step(_model(2), 8, 8, 8) == pytest.approx(2 * f2)


def test_matmul_peak_is_positive_and_best_keeps_the_larger():
  peak = bench_train.measure_matmul_peak(size=64, repeats=2)
  assert peak.flops_per_sec > 0 and peak.flops_per_cpu_sec > 0
  other = bench_train.Peak(peak.flops_per_sec * 2, 1.0)
  best = peak.best(other)
  assert best.flops_per_sec == other.flops_per_sec
  assert best.flops_per_cpu_sec == peak.flops_per_cpu_sec


def test_bench_size_times_a_step_and_xla_agrees_with_the_flop_model():
  partitioner = partitioning.Partitioner((-1, 1, 1), devices=jax.local_devices()[:1])
  result = bench_train.bench_size('tiny', 'padir', batch_size=4, length=16, steps=1,
                                  dtype='float32', partitioner=partitioner, dropout_rate=0.0,
                                  padir_stages=2, profile=True)
  assert result.seconds_per_step > 0 and result.tokens_per_sec > 0
  # --profile: the step's kernel time charged to padir's functions, the loss and the output
  # projection among them, and the rows adding up to the total.
  functions = {row.function for row in result.profile.rows}
  assert {'token_cross_entropy', 'Decoder.__call__'} <= functions
  assert sum(row.us_per_call for row in result.profile.rows) == pytest.approx(
      result.profile.kernel_us_per_call)
  assert result.model_flops == pytest.approx(
      bench_train.model_flops_per_step(_model(2, 16), 4, 16, 16))
  # XLA's count of the compiled step includes softmax, norms and the optimizer, so it is a
  # little larger (1.08 here); an analytic model that missed a stage would be off by ~1.6x.
  assert result.xla_flops is not None
  assert 0.9 < result.xla_flops / result.model_flops < 1.3


def test_network_overrides_change_the_timed_model_and_bad_json_is_refused(capsys):
  partitioner = partitioning.Partitioner((-1, 1, 1), devices=jax.local_devices()[:1])
  wide = {'emb_dim': 96, 'num_encoder_layers': 1, 'num_decoder_layers': 1}
  result = bench_train.bench_size('tiny', 'ar', batch_size=2, length=8, steps=1,
                                  dtype='float32', partitioner=partitioner, dropout_rate=0.0,
                                  network_overrides=wide)
  model = builders.build_model(models.EncoderDecoderModel, vocabulary='bible',
                               task_feature_lengths={'inputs': 8, 'targets': 8},
                               network={'size': 'tiny', 'overrides': wide})
  assert model.network_config.emb_dim == 96
  assert result.model_flops == pytest.approx(bench_train.model_flops_per_step(model, 2, 8, 8))
  with pytest.raises(SystemExit):
    bench_train.main(['--network={emb_dim: 128}'])
  assert "--network='{emb_dim: 128}' is not JSON" in capsys.readouterr().err
  with pytest.raises(SystemExit):
    bench_train.main(['--network=[1]'])
  assert 'must be a JSON object of T5Config fields' in capsys.readouterr().err
