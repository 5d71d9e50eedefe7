"""Tests for padir.analysis: repetition, length and per-iteration statistics."""

import numpy as np
import pytest

from padir import analysis, cli


def test_repetition_rate_counts_adjacent_duplicates_before_eos():
  tokens = np.array([[5, 5, 6, 7, 1, 7, 7],    # one repeat among 4 real tokens
                     [8, 9, 9, 9, 1, 0, 0],    # two repeats among 4
                     [4, 1, 4, 4, 4, 4, 0]])   # none before EOS
  assert analysis.repetition_rate(tokens) == pytest.approx(3 / 9)
  np.testing.assert_allclose(analysis.repetition_rate(tokens, per_row=True), [0.25, 0.5, 0.0])
  assert analysis.repetition_rate(np.zeros((2, 3), np.int32)) == 0.0
  # Repeats a decoder dropped count as they were before the merge: row 0 had 5 tokens, 2 repeats.
  collapsed = np.array([[5, 6, 7, 1, 0], [8, 9, 1, 0, 0]])
  assert analysis.repetition_rate(collapsed, removed=np.array([2, 0])) == pytest.approx(2 / 7)
  np.testing.assert_allclose(
      analysis.repetition_rate(collapsed, per_row=True, removed=np.array([2, 0])), [0.4, 0.0])


def test_looping_share_counts_rows_with_a_repeated_ngram_before_eos():
  tokens = np.array([[5, 6, 7, 5, 6, 7, 1, 0],   # "5 6 7" twice: loops
                     [5, 6, 7, 8, 5, 6, 1, 0],   # "5 6" twice, no 3-gram twice
                     [5, 6, 7, 1, 5, 6, 7, 0]])  # the repeat comes after EOS
  assert analysis.looping_share(tokens, n=3) == pytest.approx(1 / 3)
  assert analysis.looping_share(tokens, n=2) == pytest.approx(2 / 3)
  assert analysis.looping_share(np.zeros((0, 4), np.int32)) == 0.0


def test_length_stats_and_histogram():
  pred = np.array([[5, 6, 1, 0], [5, 6, 7, 1], [5, 1, 0, 0]])
  ref = np.array([[5, 6, 1, 0], [5, 6, 1, 0], [5, 6, 7, 1]])
  stats = analysis.length_stats(pred, ref)
  assert stats['mean_length_error'] == pytest.approx((0 + 1 - 2) / 3)
  assert stats['mean_abs_length_error'] == pytest.approx(1.0)
  assert stats['exact_length'] == pytest.approx(1 / 3)
  assert stats['length_within_1'] == pytest.approx(2 / 3)
  assert analysis.iterations_histogram(np.array([2, 1, 2, 4])) == {1: 1, 2: 2, 4: 1}


def test_per_iteration_with_bleu():
  refs = ['a b c d', 'e f g h']
  vocab = {3: 'a', 4: 'b', 5: 'c', 6: 'd', 7: 'e', 8: 'f', 9: 'g', 10: 'h'}
  decode = lambda rows: [' '.join(vocab[t] for t in r[analysis.real_token_mask(r)]) for r in rows]
  history = np.array([[[3, 3, 3, 6, 1], [7, 7, 9, 9, 1]],
                      [[3, 4, 5, 6, 1], [7, 8, 9, 10, 1]]])
  rows = analysis.per_iteration(history, decode, [refs])
  assert rows[0]['repetition_rate'] > rows[1]['repetition_rate'] == 0.0
  assert rows[1]['bleu'] == pytest.approx(100.0)
  assert rows[0]['bleu'] < 50
  with pytest.raises(ValueError, match='iterations, rows, length'):
    analysis.per_iteration(history[0])


def test_analyze_command_round_trip(tmp_path, capsys):
  path = tmp_path / 'decodes.npz'
  analysis.save_decodes(path, np.array([[5, 5, 1]]), history=np.array([[[5, 5, 1]]]),
                        iterations=np.array([1]), reference_tokens=np.array([[5, 6, 1]]),
                        metadata={'model': 'padir'})
  loaded = analysis.load_decodes(path)
  assert loaded['metadata'] == {'model': 'padir'}
  assert cli.main(['analyze', str(path), '--json', str(tmp_path / 'r.json')]) == 0
  out = capsys.readouterr().out
  assert 'repetition rate: 0.5000' in out and '| 1 | 0.5000 |' in out
  assert cli.main(['analyze', str(tmp_path / 'missing.npz')]) == 2
  assert 'does not exist' in capsys.readouterr().out
