"""Tests of padir.workers: jobs in processes of their own, each pinned to its cores."""

import os
import signal
import threading
import time

import pytest

from padir import workers

needs_two_cores = pytest.mark.skipif(
    not hasattr(os, 'sched_getaffinity') or len(os.sched_getaffinity(0)) < 2,
    reason='needs Linux and two cores')


def _report_cores(tag, emit):
  """A job: tells the parent its tag and the cores it may run on."""
  emit('hello', tag)
  return {'tag': tag, 'cores': sorted(os.sched_getaffinity(0)), 'pid': os.getpid()}


def _wait_for_sigterm(emit):
  """A job that works until SIGTERM, then stops cleanly (as training saves and stops)."""
  stop = []
  signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
  emit('ready', os.getpid())
  deadline = time.time() + 60
  while not stop and time.time() < deadline:
    time.sleep(0.05)
  return {'stopped': bool(stop)}


def _fail(emit):  # pylint: disable=unused-argument
  raise ValueError('a job that fails on purpose')


def test_cpu_shares_are_disjoint_and_cover_the_cores():
  if not hasattr(os, 'sched_getaffinity'):
    assert workers.cpu_shares(2) is None
    return
  cores = os.sched_getaffinity(0)
  shares = workers.cpu_shares(2)
  if len(cores) < 2:
    assert shares is None
    return
  assert len(shares) == 2 and all(shares)
  assert not shares[0] & shares[1]
  assert shares[0] | shares[1] == cores
  assert workers.cpu_shares(len(cores) + 1) is None


@needs_two_cores
def test_each_job_runs_in_its_own_process_on_its_own_cores():
  shares = workers.cpu_shares(2)
  seen = []
  results = workers.run_pinned(
      [workers.Job('a', _report_cores, ('A',)), workers.Job('b', _report_cores, ('B',))],
      lambda name, kind, payload: seen.append((name, kind, payload)))
  assert [r['tag'] for r in results] == ['A', 'B']
  assert [set(r['cores']) for r in results] == shares
  assert len({r['pid'] for r in results} | {os.getpid()}) == 3
  assert sorted(seen) == [('a', 'hello', 'A'), ('b', 'hello', 'B')]


@needs_two_cores
def test_a_failing_job_is_reported_with_its_traceback_after_the_others_end():
  with pytest.raises(workers.JobError, match='bad failed in its worker process: ValueError: a job that fails on purpose'):
    workers.run_pinned([workers.Job('good', _report_cores, ('A',)),
                        workers.Job('bad', _fail)], lambda *_: None)


def test_jobs_need_distinct_names_and_cores_of_their_own():
  with pytest.raises(ValueError, match='names must differ'):
    workers.run_pinned([workers.Job('a', _fail), workers.Job('a', _fail)], lambda *_: None)
  with pytest.raises(ValueError, match='cannot give each of 2 jobs cores'):
    workers.run_pinned([workers.Job('a', _fail), workers.Job('b', _fail)], lambda *_: None,
                       cores=[{0}])


@needs_two_cores
def test_sigterm_in_the_parent_stops_every_job_cleanly():
  ready = []

  def on_message(name, kind, payload):
    ready.append(name)
    if len(ready) == 2:  # both jobs wait: a scheduler sends SIGTERM to the parent only
      threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGTERM)).start()

  before, start = signal.getsignal(signal.SIGTERM), time.time()
  with pytest.raises(workers.JobStopped) as stopped:
    workers.run_pinned([workers.Job('a', _wait_for_sigterm), workers.Job('b', _wait_for_sigterm)],
                       on_message)
  assert stopped.value.signum == signal.SIGTERM
  assert time.time() - start < 30  # the jobs stopped on the forwarded signal, not the deadline
  assert signal.getsignal(signal.SIGTERM) == before  # the parent's handler is restored
  assert stopped.value.finished == {'a': {'stopped': True}, 'b': {'stopped': True}}


@needs_two_cores
def test_a_signal_after_one_job_returned_keeps_that_jobs_result():
  seen = []

  def on_message(name, kind, payload):
    seen.append(name)
    if len(seen) == 2:  # 'a' has returned or is about to; 'b' waits for the signal
      threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM)).start()

  with pytest.raises(workers.JobStopped) as stopped:
    workers.run_pinned([workers.Job('a', _report_cores, ('quick',)),
                        workers.Job('b', _wait_for_sigterm)], on_message)
  assert stopped.value.finished['a']['tag'] == 'quick'
  assert stopped.value.finished['b'] == {'stopped': True}
