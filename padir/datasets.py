"""Dataset configs of a run (gin) and the batch iterators they make.

A `DatasetConfig` names a source and a split; the source is either a directory of arrays from
``python -m padir.data.export`` (the TensorFlow-free path: a machine without TensorFlow trains
from it) or a registered seqio task name (tf.data, imported only then). Gin scopes tell the
run's datasets apart, as in T5X::

  train/padir.datasets.DatasetConfig.split = 'train'
  train_eval/padir.datasets.DatasetConfig.split = 'validation'
  infer_eval/padir.datasets.DatasetConfig.split = 'validation'
"""

from __future__ import annotations

import dataclasses
import importlib
import os
from typing import Any, Mapping

import jax

from padir import gin_utils


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """A split of a task or of an export, batched.

  Attributes:
    source: an export directory (``OUT`` or ``OUT/<split>``) or a seqio task name.
    split: 'train', 'validation' or 'test'.
    batch_size: global batch size (all processes).
    task_feature_lengths: ``{'inputs': L_in, 'targets': L}`` (required for a task; checked
      against an export's).
    shuffle: seeded shuffling (reshuffled every epoch).
    seed: shuffling seed (the same on every process).
    num_epochs: passes over the split (None: forever; eval splits use 1).
    drop_remainder: drop a last partial batch (train); otherwise it is padded with empty rows.
    converter: feature converter of a seqio task ('padir' or 'encdec').
    module: a module to import first (it registers your own seqio tasks).
    length_buckets: batch widths for an exported split, e.g. ``(16, 24)`` with 32-token
      features: rows of similar length share a batch trimmed to the narrowest width that holds
      them (`padir.data.arrays.ArrayBatchIterator`); the trainer compiles one step per width.
      None: full-length batches.
  """
  source: str
  split: str
  batch_size: int
  task_feature_lengths: Mapping[str, int] | None = None
  shuffle: bool = True
  seed: int = 0
  num_epochs: int | None = None
  drop_remainder: bool = True
  converter: str = 'padir'
  module: str | None = None
  length_buckets: tuple[int, ...] | None = None

  def __post_init__(self):
    if not isinstance(self.batch_size, int) or self.batch_size < 1:
      raise ValueError(f'DatasetConfig.batch_size={self.batch_size!r} must be a positive integer.')
    if not self.source:
      raise ValueError('DatasetConfig.source is empty: set MIXTURE_OR_TASK_NAME to a seqio task '
                       'or an export directory.')
    if self.length_buckets is not None:
      if isinstance(self.length_buckets, (str, bytes)) or not hasattr(self.length_buckets,
                                                                      '__iter__'):
        raise ValueError(f'DatasetConfig.length_buckets={self.length_buckets!r} must be a tuple '
                         'of widths, e.g. (16, 24), or None.')
      object.__setattr__(self, 'length_buckets', tuple(self.length_buckets))


gin_utils.configurable(DatasetConfig, module='padir.datasets')


def make_iterator(config: DatasetConfig, *, vocabulary: Any = None, shuffle: bool | None = None,
                  num_epochs: int | None = -1, drop_remainder: bool | None = None):
  """A `padir.data.iterator.BatchIterator` for this process.

  Args:
    config: the dataset config.
    vocabulary: the run's vocabulary; the data must use the same one.
    shuffle, num_epochs, drop_remainder: override the config's (``num_epochs=-1`` keeps it).

  Returns:
    The iterator (numpy batches of ``batch_size // process_count`` rows).
  """
  if config.module:
    importlib.import_module(config.module)
  vocabulary = getattr(vocabulary, 'spec', vocabulary)  # a Tokenizer -> its VocabularySpec
  from padir.data import iterator as iterator_lib  # pylint: disable=g-import-not-at-top
  return iterator_lib.make_batch_iterator(
      config.source, config.split, config.batch_size,
      feature_lengths=dict(config.task_feature_lengths) if config.task_feature_lengths else None,
      converter=config.converter,
      shuffle=config.shuffle if shuffle is None else shuffle,
      seed=config.seed,
      num_epochs=config.num_epochs if num_epochs == -1 else num_epochs,
      drop_remainder=config.drop_remainder if drop_remainder is None else drop_remainder,
      process_index=jax.process_index(), process_count=jax.process_count(),
      vocabulary=vocabulary, length_buckets=config.length_buckets)


def export_texts(config: DatasetConfig) -> list[dict[str, Any]] | None:
  """Per row source text and references of an exported split (``text.jsonl``), or None."""
  from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
  from padir.data import iterator as iterator_lib  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(config.source):
    return None
  path = iterator_lib.find_exported_split(config.source, config.split)
  return None if path is None else arrays_lib.ArrayDataset.load(path).text()


def global_shapes(iterator: Any) -> dict[str, tuple[int, ...]]:
  """Feature -> global batch shape of an iterator (its per-process shape x process count)."""
  return {k: (shape[0] * jax.process_count(),) + tuple(shape[1:])
          for k, (shape, _) in iterator.element_spec.items()}


def bucket_shapes(iterator: Any) -> list[dict[str, tuple[int, ...]]]:
  """Feature -> global batch shape of every length bucket narrower than the full length that
  the iterator's batches use (none without ``length_buckets``)."""
  full = global_shapes(iterator)
  out = []
  for shapes in getattr(iterator, 'batch_shapes', None) or []:
    shapes = {k: (v[0] * jax.process_count(),) + tuple(v[1:]) for k, v in shapes.items()}
    if shapes != full:
      out.append(shapes)
  return out
