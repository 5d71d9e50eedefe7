"""Tests of padir.quiet: Orbax's noise is dropped, real errors still show."""

import asyncio
import logging
import os
import sys
import types

from padir import quiet


def _closed_loop_error():
  loop = asyncio.new_event_loop()
  loop.close()
  try:
    loop.call_soon_threadsafe(print)
  except RuntimeError as err:
    return err
  raise AssertionError('call_soon_threadsafe on a closed loop did not raise')


def _unraisable(err, obj=None):
  return types.SimpleNamespace(exc_type=type(err), exc_value=err, exc_traceback=err.__traceback__,
                               err_msg=None, object=obj)


def test_closed_loop_tracebacks_are_dropped_other_errors_are_not(monkeypatch):
  shown = []
  monkeypatch.delenv('PADIR_DEBUG', raising=False)
  monkeypatch.setattr(quiet, '_installed', False)
  monkeypatch.setattr(sys, 'unraisablehook', lambda u: shown.append(str(u.exc_value)))
  quiet.install()
  sys.unraisablehook(_unraisable(_closed_loop_error()))
  assert not shown
  try:
    raise RuntimeError('a real problem')
  except RuntimeError as err:
    sys.unraisablehook(_unraisable(err))
  assert shown == ['a real problem']


def test_orbax_coroutine_noise_is_recognised():
  code = compile('async def f(): pass', os.path.join('site-packages', 'orbax', 'x.py'), 'exec')
  namespace = {}
  exec(code, namespace)  # pylint: disable=exec-used
  coroutine = namespace['f']()
  try:
    assert quiet.is_orbax_noise(_unraisable(ValueError('OUT_OF_RANGE'), coroutine))
  finally:
    coroutine.close()
  assert not quiet.is_orbax_noise(_unraisable(ValueError('mine'), None))


def test_orbax_log_records_below_error_are_dropped():
  noise = quiet.OrbaxNoiseFilter()
  orbax_file = os.path.join('site-packages', 'orbax', 'checkpoint', 'manager.py')
  record = lambda level, path: logging.LogRecord('absl', level, path, 1, 'msg', None, None)
  assert not noise.filter(record(logging.WARNING, orbax_file))
  assert noise.filter(record(logging.ERROR, orbax_file))
  assert noise.filter(record(logging.WARNING, os.path.join('padir', 'train.py')))
