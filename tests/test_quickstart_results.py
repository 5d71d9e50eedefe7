"""Tests of padir.quickstart_results: the report's text about a run's training and set-up.

The whole results dict is checked on a real run in tests/test_quickstart.py; these tests cover
the text that depends on the configuration, on a stand-in run without any stage finished.
"""

import types

from padir import quickstart_results
from padir.refine_decoding import RefineConfig


def _run(student_start_steps, student_init='teacher', selects_data=True, matched=False):
  cfg = types.SimpleNamespace(student_init=student_init, student_start_steps=student_start_steps,
                              teacher_steps=1500, student_steps=750, refine=RefineConfig())
  return types.SimpleNamespace(cfg=cfg, selects_data=selects_data, trains_matched_ar=matched,
                               main_student=lambda: 'student_distilled',
                               stage_result=lambda name: None)


def test_the_report_names_each_cooldown():
  cooldown_text = quickstart_results._cooldown_text
  assert cooldown_text(250) == 'linear to 0 over the last 250 steps'
  assert cooldown_text(1) == 'linear to 0 over the last 1 step'
  assert cooldown_text(100, short=True) == '100 steps'  # the first leg's
  assert cooldown_text(0) == cooldown_text(0, True) == 'none'


def test_the_summary_says_how_fair_the_comparison_is():
  equal = quickstart_results._summary(_run(750))
  assert 'trained on the distilled targets' in equal
  assert 'chose it over the other student' in equal
  assert 'at step 750 of 1500' in equal and 'the AR baseline at equal training' in equal
  longer = quickstart_results._summary(_run(None, selects_data=False, matched=True))
  assert 'chose its decoding' in longer
  assert '2250 steps against the teacher\'s 1500' in longer and 'favours PaDIR' in longer
  assert 'the fair baseline' in longer
  assert 'favours PaDIR.' in quickstart_results._summary(_run(None))
  scratch = quickstart_results._summary(_run(None, student_init='random'))
  assert 'continues' not in scratch


def test_the_students_start_is_named():
  assert quickstart_results._student_start(_run(None, student_init='random')) == 'random weights'
  assert quickstart_results._student_start(_run(None)) == 'the AR teacher'
  assert quickstart_results._student_start(_run(750)) == (
      'the AR teacher at step 750 of 1500 (the end of its first leg)')
