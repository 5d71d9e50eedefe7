"""Postprocessing and sacrebleu metrics (no TensorFlow)."""

import pytest
import sacrebleu

from padir.data import metrics

HYPS = ['the cat sat on the mat', 'a dog barked loudly', 'it rained all day']
REF1 = ['the cat sat on a mat', 'the dog barked loudly', 'it rained the whole day']
REF2 = ['a cat sat on the mat', 'a dog was barking', 'it was raining all day']


def test_single_reference_matches_sacrebleu(capsys):
  scores = metrics.translation_metrics(REF1, HYPS)
  assert scores['bleu'] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REF1]).score)
  assert scores['chrf'] == pytest.approx(sacrebleu.corpus_chrf(HYPS, [REF1]).score)
  out = capsys.readouterr().out
  assert 'BLEU' in out and 'chrF2' in out
  assert 'nrefs:1' in out and 'tok:13a' in out and f'version:{sacrebleu.__version__}' in out


def test_multi_reference(capsys):
  multi = metrics.translation_metrics(list(zip(REF1, REF2)), HYPS)
  assert multi['bleu'] == pytest.approx(sacrebleu.corpus_bleu(HYPS, [REF1, REF2]).score)
  assert multi['bleu'] > metrics.translation_metrics(REF1, HYPS, print_fn=None)['bleu']
  assert 'nrefs:2' in capsys.readouterr().out


def test_variable_number_of_references():
  targets = [[REF1[0], REF2[0]], [REF1[1]], [REF1[2], REF2[2]]]
  scores = metrics.translation_metrics(targets, HYPS, print_fn=None)
  expected = sacrebleu.corpus_bleu(HYPS, [REF1, [REF2[0], None, REF2[2]]]).score
  assert scores['bleu'] == pytest.approx(expected)


def test_perfect_output_and_bad_arguments():
  assert metrics.translation_metrics(REF1, REF1, print_fn=None)['bleu'] == pytest.approx(100)
  with pytest.raises(ValueError, match='3 targets but 2'):
    metrics.translation_metrics(REF1, HYPS[:2], print_fn=None)
  with pytest.raises(ValueError, match='at least one reference'):
    metrics.translation_metrics([[], ['x']], ['a', 'b'], print_fn=None)


def test_postprocess():
  assert metrics.postprocess_translation(b' caf\xc3\xa9 ') == 'café'
  example = {'references': [b'one ', b'two']}
  assert metrics.postprocess_translation(b'x', example=example, is_target=True) == ['one', 'two']
  assert metrics.postprocess_translation('y ', example=example, is_target=False) == 'y'
  assert metrics.postprocess_translation('z', example={}, is_target=True) == 'z'
