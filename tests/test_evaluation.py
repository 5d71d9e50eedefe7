"""Tests of padir.evaluation.decode_split's statistics (a fake decoder: no compilation)."""

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
