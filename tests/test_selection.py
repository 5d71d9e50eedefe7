"""Tests for padir.selection: the grid of decoding settings and the validation choice."""

import dataclasses
import numpy as np
import pytest

from padir import selection
from padir.refine_decoding import RefineConfig


def test_grid_keeps_one_single_pass_setting_per_beam_and_reranker():
  settings = selection.grid(('mask_predict', 'cosine'), (1, 2), (1, 3), (False, True),
                            (False, True))
  names = [s.name for s in settings]
  assert len(names) == len(set(names))
  single = [s for s in settings if s.iterations == 1]
  assert len(single) == 3  # beams x rerank, no rerank at beam 1; one rule, no stutter
  assert all(s.rule == 'mask_predict' and not s.stutter for s in single)
  assert len(settings) == 3 + 2 * 3 * 2  # rules x (beam, rerank) x stutter
  # Length beam 1 with one length: a single candidate, so re-ranking is not a separate setting.
  settings = selection.grid(('mask_predict',), (1, 2), (1, 3), (False, True), (False,))
  assert [(s.length_beam, s.rerank) for s in settings if s.iterations == 2] == [
      (1, False), (3, False), (3, True)]
  with_restarts = selection.grid(('mask_predict',), (2,), (1,), (False, True), (False,),
                                 candidates_per_length=2)
  assert [s.rerank for s in with_restarts] == [False, True]
  # Pruning: only with several candidates, a pass after it and no re-ranking.
  pruned = selection.grid(('mask_predict',), (1, 2, 4), (1, 3), (False, True), (False,),
                          prune=(0, 1, 2))
  assert sorted((s.iterations, s.length_beam, s.prune) for s in pruned if s.prune) == [
      (2, 3, 1), (4, 3, 1), (4, 3, 2)]
  assert len(pruned) == len(selection.grid(('mask_predict',), (1, 2, 4), (1, 3), (False, True),
                                           (False,))) + 3
  assert not any(s.prune and s.rerank for s in pruned)
  # Merging repeats doubles the grid when both values are tried; it applies to one pass too.
  both = selection.grid(('mask_predict',), (1, 2), (1,), (False,), (False,),
                        collapse=(False, True))
  assert [(s.iterations, s.collapse_repeats) for s in both] == [
      (1, False), (1, True), (2, False), (2, True)]
  avoid = selection.grid(('mask_predict',), (1, 2), (1,), (False,), (False,),
                         collapse=(True,), avoid=(False, True))
  assert [(s.iterations, s.avoid_repeats) for s in avoid] == [
      (1, False), (1, True), (2, False), (2, True)]
  offsets = selection.grid(('mask_predict',), (1, 2), (3,), (True,), (False,),
                           length_offsets=(0, 1))
  assert [(s.iterations, s.length_offset) for s in offsets] == [
      (1, 0), (1, 1), (2, 0), (2, 1)]
  # The teacher's fixes come with re-ranking only (the same pass); elsewhere they are dropped.
  fixes = selection.grid(('mask_predict',), (2,), (1, 3), (False, True), (False,),
                         teacher_fix=(0.0, 0.7))
  assert [(s.length_beam, s.rerank, s.teacher_fix) for s in fixes] == [
      (1, False, 0.0), (3, False, 0.0), (3, True, 0.0), (3, True, 0.7)]
  # Rounds of fixes come with the fixes only.
  rounds = selection.grid(('mask_predict',), (2,), (1, 3), (True,), (False,),
                          teacher_fix=(0.0, 0.7), teacher_fix_rounds=(1, 2))
  assert [(s.length_beam, s.teacher_fix, s.teacher_fix_rounds) for s in rounds] == [
      (1, 0.0, 1), (3, 0.0, 1), (3, 0.7, 1), (3, 0.7, 2)]


def test_setting_builds_the_refine_config_and_round_trips():
  setting = selection.DecodeSetting('mask_predict', 3, 5, rerank=True, stutter=True)
  config = setting.refine_config(RefineConfig(canvas_buckets=(16,)))
  assert config.num_iterations == 3 and config.length_beam == 5
  assert config.remask.rule == 'mask_predict' and config.remask.stutter
  assert config.remask.replacement == 'initial' and config.canvas_buckets == (16,)
  assert selection.DecodeSetting.from_json(setting.to_json()) == setting
  assert 'teacher re-ranks' in setting.label and 'stutter removal' in setting.label
  pruned = selection.DecodeSetting('mask_predict', 4, 3, prune=1)
  assert pruned.refine_config(RefineConfig()).prune_after == 1
  assert pruned.name.endswith('_prune1') and 'after pass 1' in pruned.label
  assert selection.DecodeSetting.from_json(pruned.to_json()) == pruned
  with pytest.raises(ValueError, match='one or the other'):
    selection.DecodeSetting('mask_predict', 4, 3, rerank=True, prune=1)
  merged = selection.DecodeSetting('mask_predict', 3, 1, collapse_repeats=True)
  assert merged.refine_config(RefineConfig()).collapse_repeats
  assert not setting.refine_config(RefineConfig(collapse_repeats=True)).collapse_repeats
  assert merged.name.endswith('_collapse') and 'repeats merged' in merged.label
  assert selection.DecodeSetting.from_json(merged.to_json()) == merged
  avoided = selection.DecodeSetting('mask_predict', 2, 1, avoid_repeats=True)
  assert avoided.refine_config(RefineConfig()).avoid_repeats
  assert not merged.refine_config(RefineConfig(avoid_repeats=True)).avoid_repeats
  assert avoided.name.endswith('_norepeat') and 'repeats avoided' in avoided.label
  assert selection.DecodeSetting.from_json(avoided.to_json()) == avoided
  longer = selection.DecodeSetting('mask_predict', 4, 3, rerank=True, length_offset=1)
  assert longer.refine_config(RefineConfig()).length_offset == 1
  assert not setting.refine_config(RefineConfig(length_offset=2)).length_offset
  assert longer.name.endswith('_len+1') and 'lengths +1' in longer.label
  assert selection.DecodeSetting.from_json(longer.to_json()) == longer
  fixing = selection.DecodeSetting('mask_predict', 4, 5, rerank=True, teacher_fix=0.7)
  assert fixing.refine_config(RefineConfig()).teacher_fix_threshold == 0.7
  assert not setting.refine_config(RefineConfig(teacher_fix_threshold=0.5)).teacher_fixes
  assert fixing.name.endswith('_fix0.7') and 'teacher fixes tokens (p > 0.7)' in fixing.label
  assert selection.DecodeSetting.from_json(fixing.to_json()) == fixing
  with pytest.raises(ValueError, match='needs the teacher in the decoder'):
    selection.DecodeSetting('mask_predict', 4, 5, teacher_fix=0.7)
  twice = dataclasses.replace(fixing, teacher_fix_rounds=2)
  assert twice.refine_config(RefineConfig()).teacher_fix_rounds == 2
  assert fixing.refine_config(RefineConfig(teacher_fix_rounds=3)).teacher_fix_rounds == 1
  assert twice.name.endswith('_fix0.7x2') and '(p > 0.7, 2 rounds)' in twice.label
  assert selection.DecodeSetting.from_json(twice.to_json()) == twice
  with pytest.raises(ValueError, match='teacher_fix=0 turns them off'):
    dataclasses.replace(twice, teacher_fix=0.0)
  for bad in (0, 1.5, True):
    with pytest.raises(ValueError, match='must be an integer >= 1'):
      dataclasses.replace(fixing, teacher_fix_rounds=bad)
  assert selection.DecodeSetting.from_json(
      {k: v for k, v in fixing.to_json().items() if k != 'teacher_fix_rounds'}) == fixing
  assert not selection.DecodeSetting.from_json(
      {k: v for k, v in longer.to_json().items() if k != 'teacher_fix'}).teacher_fix
  # Records written before the fields existed read as neither merging nor avoiding.
  old = {k: v for k, v in pruned.to_json().items()
         if k not in ('collapse_repeats', 'avoid_repeats')}
  assert not selection.DecodeSetting.from_json(old).collapse_repeats
  assert not selection.DecodeSetting.from_json(old).avoid_repeats
  assert not selection.DecodeSetting.from_json(
      {k: v for k, v in longer.to_json().items() if k != 'length_offset'}).length_offset


def test_choose_fastest_within_margin_else_best():
  rows = [{'name': 'a', 'bleu': 9.0, 'median_ms': 3.0},
          {'name': 'b', 'bleu': 10.5, 'median_ms': 6.0},
          {'name': 'c', 'bleu': 10.2, 'median_ms': 4.0}]
  best, why = selection.choose(rows, teacher_bleu=11.0, margin=1.0)
  assert best['name'] == 'c' and 'fastest of the 2' in why
  best, why = selection.choose(rows, teacher_bleu=13.0, margin=1.0)
  assert best['name'] == 'b' and 'no setting came within' in why
  with pytest.raises(ValueError):
    selection.choose([], 1.0)


def test_decode_interleaved_returns_outputs_and_times_per_decoder():
  calls = []

  def make(name, width):
    def fn(tokens):
      calls.append(name)
      aux = {'repeats_removed': np.array([tokens[0, 1]])} if name == 'y' else {}
      return np.full((1, width), tokens[0, 0], np.int32), aux
    return fn

  sources = np.arange(6, dtype=np.int32).reshape(3, 2)
  outputs, times, removed = selection.decode_interleaved(
      {'x': make('x', 2), 'y': make('y', 4)}, sources, warmup=1)
  assert list(removed) == ['y']  # only the decoder that merges repeats reports them
  np.testing.assert_array_equal(removed['y'], sources[:, 1])
  assert outputs['x'].shape == (3, 4) and outputs['y'].shape == (3, 4)
  np.testing.assert_array_equal(outputs['x'][:, 0], sources[:, 0])
  assert outputs['x'][0, 3] == 0  # padded to the widest decoder
  assert len(times['x']) == len(times['y']) == 3
  # One warm-up each, then interleaved by row: every decoder once per row.
  assert all(sorted(calls[2 + 2 * r: 4 + 2 * r]) == ['x', 'y'] for r in range(3))


def test_decode_interleaved_varies_the_order_between_rows_reproducibly():
  def orders():
    calls = []
    decoders = {name: (lambda t, n=name: calls.append(n) or (t, {})) for name in 'abcd'}
    selection.decode_interleaved(decoders, np.ones((8, 2), np.int32), warmup=0)
    return [''.join(calls[4 * r: 4 * r + 4]) for r in range(8)]

  first = orders()
  assert all(sorted(o) == list('abcd') for o in first)
  assert len(set(first)) > 1  # not one fixed order
  assert len({o[o.index('a') + 1:][:1] for o in first}) > 1  # 'a' is followed by several
  assert orders() == first  # the same orders every run


def test_distillation_prefers_reference_lengths_among_near_best_decodings():
  from padir import quickstart_select  # pylint: disable=g-import-not-at-top
  rows = [{'name': 'greedy', 'bleu': 11.54, 'length_ratio': 0.791},
          {'name': 'beam4_lp0.6', 'bleu': 11.27, 'length_ratio': 0.644},
          {'name': 'beam4_lp1', 'bleu': 11.97, 'length_ratio': 0.692}]
  best, why = quickstart_select.choose_distillation_row(rows, margin=1.0)
  assert rows[best]['name'] == 'greedy' and 'all shorter than 0.95x' in why
  best, _ = quickstart_select.choose_distillation_row(rows, margin=0.2)
  assert rows[best]['name'] == 'beam4_lp1'  # the only one within 0.2 BLEU
  # A near-best decoding at least 0.95x the reference length beats a closer but short one.
  rows = [{'name': 'greedy', 'bleu': 14.19, 'length_ratio': 0.912},
          {'name': 'beam4_lp1', 'bleu': 15.08, 'length_ratio': 0.794},
          {'name': 'beam4_lp1.5', 'bleu': 15.00, 'length_ratio': 1.092},
          {'name': 'beam4_lp2', 'bleu': 12.75, 'length_ratio': 1.350}]
  best, why = quickstart_select.choose_distillation_row(rows, margin=1.0)
  assert rows[best]['name'] == 'beam4_lp1.5' and 'at least 0.95x' in why
  # A near-best decoding whose outputs loop loses to a loop-free one, even a less long one
  # (a teacher at 2x the learning rate, validation).
  rows = [{'name': 'beam4_lp1.5', 'bleu': 24.32, 'length_ratio': 0.997, 'looping_share': 0.5},
          {'name': 'beam4_lp1.5_norep4', 'bleu': 24.99, 'length_ratio': 0.950,
           'looping_share': 0.0},
          {'name': 'greedy', 'bleu': 20.74, 'length_ratio': 0.870, 'looping_share': 0.3}]
  best, why = quickstart_select.choose_distillation_row(rows, margin=1.0)
  assert rows[best]['name'] == 'beam4_lp1.5_norep4' and 'loop at most 0.1' in why
  for row in rows:  # when every near-best one loops, the lengths decide as before
    row['looping_share'] = 0.5
  best, why = quickstart_select.choose_distillation_row(rows, margin=1.0)
  assert rows[best]['name'] == 'beam4_lp1.5' and 'loop' not in why
  candidates = quickstart_select.distill_candidates([(1, 0.0), (4, 2.0), (4, 1.0, 3)])
  assert [n for n, _ in candidates] == ['greedy', 'beam4_lp2', 'beam4_lp1_norep3']
  assert [c.no_repeat_ngram for _, c in candidates] == [0, 0, 3]


def test_distill_choices_take_an_optional_ngram_ban():
  from padir import quickstart_config  # pylint: disable=g-import-not-at-top
  ok = quickstart_config.QuickstartConfig(distill_choices=((1, 0.0, 4), (4, 1.0)))
  assert ok.distill_choices == ((1, 0.0, 4), (4, 1.0))
  for bad in (((4, 1.0, -1),), ((4, 1.0, 2.5),), ((4,),), ((0, 1.0),)):
    with pytest.raises(ValueError, match='no_repeat_ngram'):
      quickstart_config.QuickstartConfig(distill_choices=bad)


def test_decoder_optimization_level_is_checked():
  from padir import quickstart_config  # pylint: disable=g-import-not-at-top
  assert quickstart_config.QuickstartConfig(decoder_optimization_level=1)
  assert quickstart_config.QuickstartConfig(decoder_optimization_level=None)
  for bad in (4, -1, 1.0, '1'):
    with pytest.raises(ValueError, match='decoder_optimization_level'):
      quickstart_config.QuickstartConfig(decoder_optimization_level=bad)


def test_select_teacher_fix_is_checked():
  from padir import quickstart_config  # pylint: disable=g-import-not-at-top
  assert quickstart_config.QuickstartConfig(select_teacher_fix=[0, 0.7]).select_teacher_fix == (
      0, 0.7)
  for bad in ((1.0,), (True,), ('0.7',), (-0.5,)):
    with pytest.raises(ValueError, match='select_teacher_fix'):
      quickstart_config.QuickstartConfig(select_teacher_fix=bad)
  assert quickstart_config.QuickstartConfig(
      select_teacher_fix_rounds=[1, 2]).select_teacher_fix_rounds == (1, 2)
  for bad in ((0,), (True,), (1.5,), ()):
    with pytest.raises(ValueError, match='select_teacher_fix_rounds'):
      quickstart_config.QuickstartConfig(select_teacher_fix_rounds=bad)


def test_select_length_offsets_are_checked():
  from padir import quickstart_config  # pylint: disable=g-import-not-at-top
  ok = quickstart_config.QuickstartConfig(select_length_offsets=[0, 1])
  assert ok.select_length_offsets == (0, 1)
  for bad, match in (((0.5,), 'must be integers'), ((True,), 'must be integers'),
                     ((), 'is empty')):
    with pytest.raises(ValueError, match=match):
      quickstart_config.QuickstartConfig(select_length_offsets=bad)
