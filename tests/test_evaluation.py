"""Tests of padir.evaluation: decode_split's statistics (a fake decoder) and the Predictor."""

import numpy as np
import pytest

from padir import evaluation


class _Tokenizer:

  def decode(self, ids):
    return ' '.join(str(int(i)) for i in ids if int(i) > 1)


class _FakePredictor:
  """Returns fixed outputs per batch, like Predictor: (tokens [B, L], aux)."""

  def __init__(self, outputs):
    self.outputs = outputs

  def __call__(self, params, batch, batch_index=0):
    del params, batch
    return self.outputs[batch_index]


def _batches():
  # Two batches of two rows; the second batch's last row is padding (all-zero source).
  return [{'encoder_input_tokens': np.array([[5, 1], [6, 1]], np.int32)},
          {'encoder_input_tokens': np.array([[7, 1], [0, 0]], np.int32)}]


def test_decode_split_counts_repetition_and_merged_repeats():
  # Row tokens (EOS = 1 ends a row): "5 5 6" (1 repeat of 3), "7 8" (0 of 2), "9 9 9 4" (2 of 4);
  # the padding row's repeats must not count.
  tokens_a = np.array([[5, 5, 6, 1, 0], [7, 8, 1, 0, 0]], np.int32)
  tokens_b = np.array([[9, 9, 9, 4, 1], [3, 3, 3, 3, 3]], np.int32)
  outputs = [(tokens_a, {'repeats_removed': np.array([2, 0]), 'iterations': np.array([3, 3])}),
             (tokens_b, {'repeats_removed': np.array([1, 50]), 'iterations': np.array([4, 4])})]
  rows, stats = evaluation.decode_split(_FakePredictor(outputs), None, _batches(), _Tokenizer())
  assert [r.prediction for r in rows] == ['5 5 6', '7 8', '9 9 9 4']
  assert stats['num_examples'] == 3
  assert stats['repetition_rate'] == pytest.approx(3 / 9)
  # Before the merge: 3 + 3 merged repeats over 9 + 3 tokens.
  assert stats['repetition_before_collapse'] == pytest.approx(6 / 12)
  assert stats['mean_repeats_removed'] == pytest.approx(3 / 3)
  assert stats['mean_iterations'] == pytest.approx(10 / 3)


def test_decode_split_without_merges_reports_only_the_repetition_rate():
  tokens_a = np.array([[5, 5, 1], [7, 8, 1]], np.int32)
  tokens_b = np.array([[4, 4, 4], [0, 0, 0]], np.int32)
  outputs = [(tokens_a, {}), (tokens_b, {})]
  _, stats = evaluation.decode_split(_FakePredictor(outputs), None, _batches(), _Tokenizer())
  assert stats['repetition_rate'] == pytest.approx(3 / 7)
  assert 'repetition_before_collapse' not in stats
  assert 'mean_repeats_removed' not in stats
  assert 'mean_iterations' not in stats


def test_predictor_decodes_at_the_gold_lengths_when_asked():
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  from padir import models, partitioning  # pylint: disable=g-import-not-at-top,g-multiple-import
  from padir.network import T5Config  # pylint: disable=g-import-not-at-top
  from padir.special_ids import special_ids  # pylint: disable=g-import-not-at-top
  ids = special_ids(40, 40, 96)
  width = 10
  cfg = T5Config.preset('tiny', num_encoder_layers=1, num_decoder_layers=1, vocab_size=96,
                        decoder_mode='bidirectional', length_id=ids.length,
                        max_target_length=width, dropout_rate=0.0)
  model = models.PadirModel(cfg, ids)
  params = jax.jit(lambda k: nn.unbox(model.module.init(
      {'params': k}, jnp.ones((1, 6), jnp.int32), jnp.ones((1, width), jnp.int32),
      enable_dropout=False)['params']))(jax.random.PRNGKey(0))
  part = partitioning.Partitioner(mesh_shape=(-1, 1, 1))
  shardings = jax.tree_util.tree_map(lambda _: part.replicated(), params)
  sources = np.full((8, 6), 5, np.int32)
  sources[:, -1] = 1
  gold = np.array([2, 3, 4, 5, 6, 7, 8, 9])  # EOS included
  targets = np.zeros((8, width), np.int32)
  for r, n in enumerate(gold):
    targets[r, :n - 1] = 7
    targets[r, n - 1] = ids.eos
  batch = {'encoder_input_tokens': sources, 'decoder_target_tokens': targets}
  kwargs = {'num_iterations': 2, 'canvas_init': 'mask'}
  oracle = evaluation.Predictor(model, part, shardings, dict(kwargs, use_gold_lengths=True))
  tokens, aux = oracle(params, batch)
  np.testing.assert_array_equal(aux['candidate_lengths'][:, 0], gold)
  assert tokens.shape == (8, width)
  # Without the flag only the sources are read: the length head picks the lengths.
  _, head_aux = evaluation.Predictor(model, part, shardings, kwargs)(
      params, {'encoder_input_tokens': sources})
  assert head_aux['candidate_lengths'].shape == (8, 1)
  with pytest.raises(ValueError, match='decoder_target_tokens'):
    oracle(params, {'encoder_input_tokens': sources})
