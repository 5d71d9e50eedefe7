"""seqio preprocessors of padir's tasks: over-long handling with counts, and EOS.

A task's pipeline is ``tokenize -> [cache] -> handle_overlong -> append_eos``. ``handle_overlong``
makes room for the EOS so it is never cut off (the PaDIR length head counts it), and either
truncates an over-long feature or drops the example. Every such example is counted per task and
feature (:func:`overlong_counts`); the first one of each kind is logged as a warning, and
``python -m padir.data.export`` reports the totals.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
from typing import Mapping

import seqio
import tensorflow as tf

_LOG = logging.getLogger(__name__)

OVERLONG_MODES = ('truncate', 'filter')


class _OverlongCounter:
  """Thread-safe counts of over-long examples: (task, feature, mode) -> count."""

  def __init__(self):
    self._lock = threading.Lock()
    self._counts: collections.Counter[tuple[str, str, str]] = collections.Counter()

  def add(self, task: str, feature: str, mode: str, length: int, limit: int) -> None:
    with self._lock:
      first = self._counts[(task, feature, mode)] == 0
      self._counts[(task, feature, mode)] += 1
    if first and feature != 'examples':
      done = 'truncated' if mode == 'truncate' else 'dropped'
      _LOG.warning(
          '%s: an example\'s %s has %d tokens, more than %d (room left for EOS); over-long '
          'examples are %s and counted (padir.data.preprocessors.overlong_counts).',
          task, feature, length, limit, done)

  def counts(self, task: str | None) -> dict[str, dict[str, int]]:
    with self._lock:
      items = list(self._counts.items())
    out: dict[str, dict[str, int]] = collections.defaultdict(dict)
    for (t, feature, mode), n in items:
      if task is None or t == task:
        key = f'{feature}_{"truncated" if mode == "truncate" else "filtered"}'
        out[t][key] = n
    return dict(out)

  def reset(self, task: str | None) -> None:
    with self._lock:
      for key in [k for k in self._counts if task is None or k[0] == task]:
        del self._counts[key]


_COUNTER = _OverlongCounter()


def overlong_counts(task: str | None = None) -> dict[str, dict[str, int]]:
  """``{task: {'targets_truncated': n, 'inputs_filtered': m, ...}}`` since the last reset."""
  return _COUNTER.counts(task)


def reset_overlong_counts(task: str | None = None) -> None:
  _COUNTER.reset(task)


def _count_if(overlong: tf.Tensor, length: tf.Tensor, task: str, feature: str, mode: str,
              limit: int) -> tf.Tensor:
  """Counts on the host only for over-long examples (no Python call for the others)."""

  def count(n):
    _COUNTER.add(task, feature, mode, int(n), limit)
    return n

  return tf.cond(
      overlong,
      lambda: tf.numpy_function(count, [length], tf.int32, stateful=True),
      lambda: length)


def handle_overlong(dataset: tf.data.Dataset,
                    sequence_length: Mapping[str, int | None] | None,
                    output_features: Mapping[str, seqio.Feature],
                    *,
                    task_name: str,
                    mode: str = 'truncate') -> tf.data.Dataset:
  """Truncates or drops examples whose tokenised features do not fit ``sequence_length``.

  Features that get an EOS appended are limited to ``length - 1`` tokens. Without a
  ``sequence_length`` (as when seqio is asked for unbounded lengths) nothing happens.

  Args:
    dataset: tokenised examples.
    sequence_length: feature -> length (injected by seqio).
    output_features: the task's features (injected by seqio).
    task_name: the name the counts are kept under.
    mode: 'truncate' or 'filter'.

  Returns:
    The dataset with every length-limited feature within its limit.
  """
  if mode not in OVERLONG_MODES:
    raise ValueError(f'overlong mode {mode!r} must be one of {OVERLONG_MODES}.')
  if not sequence_length:
    return dataset
  limits = {
      k: int(sequence_length[k]) - int(f.add_eos)
      for k, f in output_features.items()
      if sequence_length.get(k) is not None
  }
  for k, limit in limits.items():
    if limit < 1:
      raise ValueError(f'{task_name}: sequence length {sequence_length[k]} for {k} leaves no '
                       'room for a token and the EOS.')
  if not limits:
    return dataset

  def checked(ex):
    """(ex with counting ops attached, all-fit flag)."""
    ex = dict(ex)
    fits = tf.constant(True)
    for k, limit in limits.items():
      length = tf.size(ex[k], out_type=tf.int32)
      overlong = length > limit
      counted = _count_if(overlong, length, task_name, k, mode, limit)
      with tf.control_dependencies([counted]):
        ex[k] = tf.identity(ex[k][:limit] if mode == 'truncate' else ex[k])
      fits = tf.logical_and(fits, tf.logical_not(overlong))
    return ex, fits

  def truncated(ex):
    return checked(ex)[0]

  def keep(ex, fits):
    del ex
    # Counts each dropped example once, under 'examples', besides the per-feature counts.
    one = tf.constant(1, tf.int32)
    counted = _count_if(tf.logical_not(fits), one, task_name, 'examples', mode, 0)
    with tf.control_dependencies([counted]):
      return tf.identity(fits)

  def first(ex, fits):
    del fits
    return ex

  autotune = tf.data.experimental.AUTOTUNE
  if mode == 'truncate':
    return dataset.map(truncated, num_parallel_calls=autotune)
  return dataset.map(checked, num_parallel_calls=autotune).filter(keep).map(first)


def task_preprocessors(task_name: str, overlong: str = 'truncate') -> list:
  """The token-side preprocessors of a padir task whose source yields text features."""
  if overlong not in OVERLONG_MODES:
    raise ValueError(f'overlong={overlong!r} must be one of {OVERLONG_MODES}.')
  return [
      seqio.preprocessors.tokenize,
      seqio.CacheDatasetPlaceholder(),
      functools.partial(handle_overlong, task_name=task_name, mode=overlong),
      seqio.preprocessors.append_eos,
  ]
