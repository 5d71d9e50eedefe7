"""Tests of padir.quickstart_pairs that need no training (the pairs themselves run in
tests/test_quickstart.py)."""

import signal

from padir import quickstart_pairs
from padir import workers


def _stopped(signum, finished):
  return workers.JobStopped('stopped', signum, finished)


def test_the_stop_message_names_only_the_stages_a_signal_cut_short():
  stages = ('teacher', 'student_raw')
  both = _stopped(signal.SIGINT, {'teacher': {'stopped': 'saved', 'code': 130},
                                  'student_raw': {'stopped': 'saved', 'code': 130}})
  assert quickstart_pairs.stopped_message(both, stages) == (
      'teacher and student_raw stopped by Ctrl-C; rerun to resume.')
  one = _stopped(signal.SIGTERM, {'teacher': {'result': {}, 'compile': {}},
                                  'student_raw': {'stopped': 'saved', 'code': 143}})
  assert quickstart_pairs.stopped_message(one, stages) == (
      'student_raw stopped by SIGTERM (teacher had finished); rerun to resume.')
  killed = _stopped(signal.SIGTERM, {'teacher': {'result': {}, 'compile': {}}})
  assert quickstart_pairs.stopped_message(killed, stages) == (
      'student_raw stopped by SIGTERM (teacher had finished); rerun to resume.')
  none = _stopped(signal.SIGINT, {'teacher': {'result': {}}, 'student_raw': {'result': {}}})
  assert quickstart_pairs.stopped_message(none, stages) == (
      'teacher and student_raw finished, then Ctrl-C arrived; rerun to go on.')
