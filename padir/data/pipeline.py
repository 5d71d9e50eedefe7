"""A :class:`padir.data.iterator.BatchIterator` over a seqio task (tf.data).

Same contract as the array iterator: ``batch_size`` is global, each process gets
``batch_size // process_count`` rows, batches are numpy dicts, and the position (batches served)
round-trips through :meth:`get_state` / :meth:`set_state`. Resuming rebuilds the pipeline with
the same seed and skips the batches already served, so it needs a seed and the same process
count, and takes time proportional to the position (export to arrays for long runs).

With ``drop_remainder=True`` (training) each process reads its own shard of the split
(``seqio.ShardInfo``). With ``drop_remainder=False`` (evaluation) and several processes, every
process reads the whole split and keeps its slice of each global batch, the last one padded
with all-zero rows, so that all processes serve the same number of batches (multi-host
evaluation steps stay in lockstep) exactly as the array iterator does.
"""

from __future__ import annotations

from typing import Any, Iterator, Mapping

import numpy as np
import seqio

from padir.data import features
from padir.data import tasks

_STATE_FORMAT = 'padir-seqio-iterator'


class SeqioBatchIterator:
  """Batches of a seqio task's split, converted to model features."""

  def __init__(self,
               task_name: str,
               split: str,
               feature_lengths: Mapping[str, int],
               batch_size: int,
               *,
               converter: str = 'padir',
               shuffle: bool = True,
               seed: int | None = 0,
               num_epochs: int | None = None,
               drop_remainder: bool = True,
               process_index: int = 0,
               process_count: int = 1):
    if batch_size < 1 or batch_size % process_count:
      raise ValueError(f'batch_size={batch_size} must be a positive multiple of '
                       f'process_count={process_count}.')
    if not 0 <= process_index < process_count:
      raise ValueError(f'process_index={process_index} not in [0, {process_count}).')
    if shuffle and seed is None:
      raise ValueError('Shuffling needs a seed (the same on every process) so that the order '
                       'can be resumed.')
    self._task = tasks.get_task(task_name)
    if split not in self._task.splits:
      raise ValueError(f'{task_name} has no split {split!r}; it has {list(self._task.splits)}.')
    self._split = split
    self._lengths = dict(feature_lengths)
    self._converter_name = converter
    self._converter = features.get_feature_converter(converter)
    self._local = batch_size // process_count
    self._batch_size = batch_size
    self._shuffle = shuffle
    self._seed = seed
    self._num_epochs = num_epochs
    self._drop_remainder = drop_remainder
    self._process_index = process_index
    self._process_count = process_count
    self._position = 0
    self._it: Iterator[dict[str, np.ndarray]] | None = None

  @property
  def task(self) -> seqio.Task:
    return self._task

  @property
  def element_spec(self) -> dict[str, tuple[tuple[int, int], np.dtype]]:
    lengths = self._converter.get_model_feature_lengths(self._lengths)
    return {k: ((self._local, int(v)), np.dtype(np.int32)) for k, v in lengths.items()}

  @property
  def _slices_global_batches(self) -> bool:
    return not self._drop_remainder and self._process_count > 1

  def _build(self) -> Iterator[dict[str, np.ndarray]]:
    shard = (seqio.ShardInfo(self._process_index, self._process_count)
             if self._process_count > 1 and not self._slices_global_batches else None)
    ds = seqio.get_dataset(
        self._task.name, self._lengths, self._converter, dataset_split=self._split,
        shuffle=self._shuffle, num_epochs=self._num_epochs, shard_info=shard, seed=self._seed,
        verbose=False)
    if self._slices_global_batches:
      ds = ds.batch(self._batch_size, drop_remainder=False)
    else:
      ds = ds.batch(self._local, drop_remainder=self._drop_remainder)
    return ds.skip(self._position).as_numpy_iterator()

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    if self._it is None:
      self._it = self._build()
    batch = next(self._it)
    self._position += 1
    if self._slices_global_batches:  # this process's rows of the global batch
      start = self._process_index * self._local
      batch = {k: v[start:start + self._local] for k, v in batch.items()}
    rows = next(iter(batch.values())).shape[0]
    if rows < self._local:  # the last batch, without drop_remainder: pad with empty rows
      batch = {k: np.pad(v, ((0, self._local - rows), (0, 0))) for k, v in batch.items()}
    return batch

  def get_state(self) -> dict[str, Any]:
    return {
        'format': _STATE_FORMAT,
        'position': self._position,
        'task': self._task.name,
        'split': self._split,
        'feature_lengths': self._lengths,
        'converter': self._converter_name,
        'seed': self._seed,
        'shuffle': self._shuffle,
        'batch_size': self._batch_size,
        'drop_remainder': self._drop_remainder,
        'process_count': self._process_count,
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    if state.get('format') != _STATE_FORMAT:
      raise ValueError(f'Not a seqio iterator state: {dict(state)}.')
    mine = self.get_state()
    for key, value in mine.items():
      if key != 'position' and state.get(key) != value:
        raise ValueError(f'Cannot resume: the saved iterator had {key}={state.get(key)!r}, '
                         f'this one has {value!r}.')
    self._position = int(state['position'])
    self._it = None
