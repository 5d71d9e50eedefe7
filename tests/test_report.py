"""Tests for padir.report: target checks, markdown, JSON and the BLEU-latency plot."""

import json
import os

import pytest

from padir import report


def _system(name, model, kind, bleu, rep, latency, iterations=None):
  return {'name': name, 'label': name.replace('_', ' '), 'model': model, 'kind': kind,
          'iterations': iterations, 'bleu': bleu, 'chrf': bleu * 2, 'repetition_rate': rep,
          'mean_length_error': -0.5, 'mean_abs_length_error': 1.5, 'num_examples': 100,
          'mean_iterations': iterations,
          'latency_ms': None if latency is None else {'mean': latency, 'median': latency,
                                                      'p90': latency * 1.2}}


def _results(distilled_t4=19.5, raw_t4=17.0, reps=(0.08, 0.05, 0.03, 0.03)):
  systems = [_system('ar_greedy', 'teacher', 'ar', 20.0, 0.01, 100.0),
             _system('ar_beam4', 'teacher', 'ar', 21.0, 0.01, None)]
  for t, rep in zip((1, 2, 4, 8), reps):
    bleu = distilled_t4 - 4 + t if t < 4 else distilled_t4
    systems.append(_system(f'padir_distilled_t{t}', 'student_distilled', 'padir', bleu, rep,
                           10.0 * t, t))
    systems.append(_system(f'padir_raw_t{t}', 'student_raw', 'padir', raw_t4, rep * 2,
                           10.0 * t, t))
  return {
      'title': 'synthetic', 'systems': systems,
      'per_iteration': {'student_distilled': [
          {'iteration': 1, 'repetition_rate': 0.1, 'bleu': 12.0, 'mean_length': 20.0},
          {'iteration': 2, 'repetition_rate': 0.05, 'bleu': 15.0, 'mean_length': 21.0}]},
      'latency_small': {'config': 'small', 'output_length': 26, 'length_beam': 3,
                        'systems': [{'name': 'ar_greedy', 'label': 'AR greedy',
                                     'latency_ms': {'median': 300.0, 'mean': 310.0,
                                                    'p90': 330.0}},
                                    {'name': 'padir_t4', 'label': 'PaDIR 4 it.',
                                     'iterations': 4,
                                     'latency_ms': {'median': 100.0, 'mean': 101.0,
                                                    'p90': 105.0}}]},
      'setup': {'hardware': {'cpu': 'test cpu', 'cpu_count': 2}, 'steps': [1, 2]},
  }


def test_check_targets_met_and_missed_with_margins():
  met = report.check_targets(_results())
  assert met['padir_vs_teacher']['met'] is True
  assert met['padir_vs_teacher']['gap_bleu'] == pytest.approx(0.5)
  assert met['padir_vs_teacher']['speedup'] == pytest.approx(100.0 / 40.0)
  assert met['distillation_helps']['met'] is True
  assert met['distillation_helps']['margin_bleu'] == pytest.approx(2.5)
  assert met['repetition_falls']['met'] is True

  missed = report.check_targets(_results(distilled_t4=16.0, raw_t4=17.0,
                                         reps=(0.08, 0.09, 0.03, 0.03)))
  assert missed['padir_vs_teacher']['met'] is False
  assert 'missed by 3.00 BLEU' in missed['padir_vs_teacher']['detail']
  assert missed['distillation_helps']['met'] is False
  assert 'missed by 1.00 BLEU' in missed['distillation_helps']['detail']
  assert missed['repetition_falls']['met'] is False
  assert 'from 1 to 2 iterations' in missed['repetition_falls']['detail']

  flat = report.check_targets(_results(reps=(0.03, 0.03, 0.03, 0.03)))
  assert flat['repetition_falls']['met'] is False  # not lower at 8 than at 1

  empty = report.check_targets({'systems': [_system('ar_greedy', 'teacher', 'ar', 20, 0, 1)]})
  assert all(v['met'] is None for v in empty.values())


def test_repetition_target_reads_the_rate_before_merging_repeats():
  results = _results()
  for s in results['systems']:
    if s['kind'] == 'padir':  # merged outputs: no repeats left, the canvas had some
      s['repetition_before_collapse'], s['repetition_rate'] = s['repetition_rate'], 0.0
  targets = report.check_targets(results)
  assert targets['repetition_falls']['met'] is True
  assert targets['repetition_falls']['series'] == [[1, 0.08], [2, 0.05], [4, 0.03], [8, 0.03]]
  assert '| repetition before merging repeats |' in report.render_markdown(results)


def test_targets_follow_the_main_student_chosen_on_validation():
  results = dict(_results(distilled_t4=16.0, raw_t4=19.6, reps=(0.08, 0.05, 0.03, 0.03)),
                 main_student='student_raw')
  targets = report.check_targets(results)
  vs_teacher = targets['padir_vs_teacher']
  assert vs_teacher['met'] is True and vs_teacher['student_bleu'] == pytest.approx(19.6)
  assert 'PaDIR (reference-trained, 4 iterations)' in vs_teacher['detail']
  assert 'The distilled student: 16.00 BLEU, gap +4.00.' in vs_teacher['detail']
  assert 'validation_gap_bleu' not in vs_teacher  # no validation selection in these results
  # With one, the target also states the gap on the split the setting was chosen on.
  results['selection'] = {'chosen_name': 'student_raw/b', 'teacher': {'bleu': 20.5},
                          'candidates': [{'name': 'student_raw/a', 'bleu': 19.9},
                                         {'name': 'student_raw/b', 'bleu': 18.25}]}
  vs_teacher = report.check_targets(results)['padir_vs_teacher']
  assert vs_teacher['validation_gap_bleu'] == pytest.approx(2.25)
  assert 'On the validation split (where the setting was chosen) the gap is +2.25 BLEU.' in (
      vs_teacher['detail'])
  del results['selection']
  assert targets['distillation_helps']['met'] is False  # still distilled vs raw
  assert targets['distillation_helps']['margin_bleu'] == pytest.approx(-3.6)
  # The raw student's repetition doubles the distilled one's and still falls.
  assert targets['repetition_falls']['series'][0] == [1, 0.16]
  assert 'the reference-trained student' in targets['repetition_falls']['detail']
  assert 'padir_vs_matched_ar' not in targets  # no AR model trained as long in these results
  assert 'an AR model trained as long' not in report.render_markdown(results)
  results['systems'].append(_system('ar_matched_greedy', 'ar_matched', 'ar', 21.0, 0.01, 100.0))
  matched = report.check_targets(results)['padir_vs_matched_ar']
  assert matched['met'] is False and matched['gap_bleu'] == pytest.approx(1.4)
  assert 'missed by 0.40 BLEU' in matched['detail']
  md = report.render_markdown(dict(results, models={'teacher': 'qs/teacher',
                                                    'student_raw': 'qs/student_raw'}))
  assert '**PaDIR within 1 BLEU of an AR model trained as long: MISSED.**' in md
  assert 'padir.load("qs/student_raw")' in md
  assert 'PaDIR on the human references: the main student, chosen on validation' in md


def test_write_report_files_and_rerender(tmp_path, capsys):
  paths = report.write_report(_results(), str(tmp_path))
  assert set(paths) == {'json', 'markdown', 'plot'}
  with open(paths['plot'], 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
  saved = json.loads(open(paths['json'], encoding='utf-8').read())
  assert saved['format'] == report.FORMAT
  assert saved['targets']['padir_vs_teacher']['met'] is True
  md = open(paths['markdown'], encoding='utf-8').read()
  assert '**PaDIR within 1 BLEU of its AR teacher: MET.**' in md
  assert '| padir distilled t4 | 4 | 19.50 |' in md
  assert '2.50x' in md  # speedup of 4 iterations (40 ms) over AR greedy (100 ms)
  assert '| 2 | 0.0500 | 15.00 | 21.00 |' in md  # per-iteration table
  assert '## Batch-1 latency at the small size' in md and '3.00x' in md
  assert '- cpu: test cpu' in md and '![BLEU against batch-1 latency](report.png)' in md

  os.remove(paths['markdown'])
  assert report.main([paths['json']]) == 0
  assert os.path.isfile(paths['markdown'])
  assert report.main([str(tmp_path / 'missing.json')]) == 2
  assert 'does not exist' in capsys.readouterr().err


def test_report_without_latency_has_no_plot_and_rejects_empty(tmp_path):
  results = _results()
  for s in results['systems']:
    s['latency_ms'] = None
  paths = report.write_report(results, str(tmp_path))
  assert 'plot' not in paths
  assert 'latency ms (median)' in open(paths['markdown'], encoding='utf-8').read()
  with pytest.raises(ValueError, match='no systems'):
    report.write_report({'systems': []}, str(tmp_path))


def test_speed_target_and_validation_sections():
  results = _results()
  targets = report.check_targets(results)
  assert targets['padir_faster']['met'] is True
  assert targets['padir_faster']['speedup'] == pytest.approx(100.0 / 40.0)
  slow = _results()
  for s in slow['systems']:
    if s['name'] == 'padir_distilled_t4':
      s['latency_ms'] = {'median': 125.0, 'mean': 125.0, 'p90': 130.0}
  assert 'missed by 0.20x' in report.check_targets(slow)['padir_faster']['detail']

  results['selection'] = {
      'teacher': {'bleu': 11.0, 'median_ms': 5.0}, 'margin': 1.0, 'validation_examples': 50,
      'chosen_name': 'mp_t2', 'why': 'the fastest of the 1 setting(s) within 1 BLEU',
      'candidates': [{'name': 'mp_t2', 'label': 'mask_predict, 2 it.', 'bleu': 10.4,
                      'mean_length_error': -1.0, 'repetition_rate': 0.01, 'median_ms': 2.5,
                      'speedup': 2.0},
                     {'name': 'mp_t1', 'label': 'mask_predict, 1 it.', 'bleu': 8.0,
                      'mean_length_error': -2.0, 'repetition_rate': 0.1, 'median_ms': 2.0,
                      'speedup': 2.5}],
      'ablations': [{'label': 'chosen: mask_predict, 2 it.', 'bleu': 10.4, 'delta_bleu': 0.0,
                     'median_ms': 2.5, 'speedup': 2.0, 'mean_length_error': -1.0,
                     'repetition_rate': 0.01},
                    {'label': 'no distillation (human references)', 'bleu': 7.9,
                     'delta_bleu': -2.5, 'median_ms': 2.6, 'speedup': 1.9,
                     'mean_length_error': 0.5, 'repetition_rate': 0.05}]}
  results['distillation'] = {'chosen': 'greedy', 'length_ratio': 0.9,
                             'looping_share': {'distilled': 0.25, 'references': 0.04},
                             'rows': 100, 'rows_kept': 97,
                             'candidates': [{'name': 'greedy', 'bleu': 11.0,
                                             'length_ratio': 0.8, 'looping_share': 0.3},
                                            {'name': 'beam4_lp0.6', 'bleu': 10.0,
                                             'length_ratio': 0.7}]}
  text = report.render_markdown(results)
  assert '## Validation: choosing the PaDIR decoding' in text
  assert '| mask_predict, 2 it. **(chosen)** | 10.40 | -1.00 | 0.0100 | 2.5 | 2.00x |' in text
  assert text.index('mask_predict, 2 it. **(chosen)**') < text.index('| mask_predict, 1 it.')
  assert '| no distillation (human references) | 7.90 | -2.50 |' in text
  assert '| greedy **(chosen)** | 11.00 | 0.800 | 0.300 |' in text
  assert '| beam4_lp0.6 | 10.00 | 0.700 | - |' in text  # a record without loops
  assert 'below 0.95' in text
  assert 'repeated 4-gram: distilled 0.250, human references 0.040' in text
  assert 'Distilled rows kept: 97 of 100' in text
  assert '**PaDIR faster than AR greedy at batch 1: MET.**' in text
