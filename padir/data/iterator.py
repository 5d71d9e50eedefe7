"""The one batch interface the trainer consumes, over either data source. TensorFlow-free.

``make_batch_iterator(source, split, batch_size, ...)`` returns a :class:`BatchIterator`:

* ``source`` a directory written by ``python -m padir.data.export`` -> arrays, no TensorFlow;
* ``source`` a registered seqio task name -> a tf.data pipeline (imports padir.data.pipeline,
  hence TensorFlow and seqio, only then).

Either way a batch is ``{feature: np.int32 [batch_size // process_count, L]}`` for this
process, and ``get_state()`` is a small JSON-serialisable dict to save with checkpoints.
"""

from __future__ import annotations

import os
from typing import Any, Iterator, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np

from padir.data import arrays as arrays_lib
from padir.data import vocab as vocab_lib


@runtime_checkable
class BatchIterator(Protocol):
  """Numpy batches with a resumable position."""

  @property
  def element_spec(self) -> dict[str, tuple[tuple[int, int], np.dtype]]:
    """Feature -> (per-process batch shape, dtype)."""

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    ...

  def __next__(self) -> dict[str, np.ndarray]:
    ...

  def get_state(self) -> dict[str, Any]:
    """JSON-serialisable position."""

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Resume at a position from get_state()."""


def _process_layout(process_index: int | None, process_count: int | None) -> tuple[int, int]:
  if process_index is not None and process_count is not None:
    return process_index, process_count
  try:
    import jax  # pylint: disable=g-import-not-at-top
    index, count = jax.process_index(), jax.process_count()
  except ImportError:
    index, count = 0, 1
  return (index if process_index is None else process_index,
          count if process_count is None else process_count)


def find_exported_split(source: str | os.PathLike[str], split: str) -> str | None:
  """``source/split`` or ``source`` itself when it holds an export of ``split``; else None."""
  source = os.fspath(source)
  for path in (os.path.join(source, split), source):
    if os.path.isfile(os.path.join(path, arrays_lib.METADATA_FILE)):
      return path
  return None


def make_batch_iterator(source: str | os.PathLike[str],
                        split: str,
                        batch_size: int,
                        *,
                        feature_lengths: Mapping[str, int] | None = None,
                        converter: str = 'padir',
                        shuffle: bool = True,
                        seed: int = 0,
                        num_epochs: int | None = None,
                        drop_remainder: bool = True,
                        process_index: int | None = None,
                        process_count: int | None = None,
                        vocabulary: Any = None,
                        length_buckets: Sequence[int] | None = None) -> BatchIterator:
  """Batches of an exported split (a directory) or of a seqio task (a name).

  Args:
    source: an export directory (``OUT`` or ``OUT/<split>``) or a registered task name.
    split: 'train', 'validation' or 'test'.
    batch_size: global batch size.
    feature_lengths: task feature lengths (``{'inputs': 128, 'targets': 128}``); required for
      a task; for an export, checked against what it was exported with when given.
    converter: 'padir' or 'encdec' (for a task; an export has its own).
    shuffle, seed, num_epochs, drop_remainder: as in ArrayBatchIterator.
    process_index, process_count: default to jax.process_index() / jax.process_count().
    vocabulary: when given (anything padir.data.vocab.load_tokenizer accepts), the data must
      use this vocabulary.
    length_buckets: batch widths of an export (`ArrayBatchIterator`); a seqio task refuses
      them.

  Returns:
    A BatchIterator.
  """
  process_index, process_count = _process_layout(process_index, process_count)
  path = find_exported_split(source, split) if os.path.isdir(source) else None
  if path is not None:
    dataset = arrays_lib.ArrayDataset.load(path, vocabulary=vocabulary)
    exported = dataset.metadata.get('task_feature_lengths')
    if feature_lengths is not None and dict(feature_lengths) != exported:
      raise ValueError(f'{path} was exported with feature lengths {exported}, not '
                       f'{dict(feature_lengths)}; export again with the lengths you want.')
    if dataset.metadata.get('split') != split:
      raise ValueError(f'{path} holds split {dataset.metadata.get("split")!r}, not {split!r}.')
    return arrays_lib.ArrayBatchIterator(
        dataset, batch_size, shuffle=shuffle, seed=seed, num_epochs=num_epochs,
        drop_remainder=drop_remainder, process_index=process_index,
        process_count=process_count, length_buckets=length_buckets)
  if os.path.isdir(source) or os.sep in os.fspath(source):
    raise FileNotFoundError(f'{source}: no exported split {split!r} there (expected '
                            f'{os.path.join(source, split, arrays_lib.METADATA_FILE)}).')
  if feature_lengths is None:
    raise ValueError(f'Task {source!r}: feature_lengths are required, e.g. '
                     "{'inputs': 128, 'targets': 128}.")
  if length_buckets is not None:
    raise ValueError(f'Task {source!r}: length_buckets={tuple(length_buckets)!r} needs an '
                     'exported split (python -m padir.data.export, then point the dataset at '
                     'its directory), or set length_buckets=None.')
  from padir.data import pipeline  # pylint: disable=g-import-not-at-top
  from padir.data import tasks  # pylint: disable=g-import-not-at-top
  it = pipeline.SeqioBatchIterator(
      os.fspath(source), split, feature_lengths, batch_size, converter=converter,
      shuffle=shuffle, seed=seed, num_epochs=num_epochs, drop_remainder=drop_remainder,
      process_index=process_index, process_count=process_count)
  if vocabulary is not None:
    vocab_lib.check_fingerprint(tasks.task_vocabulary(it.task),
                                vocab_lib.load_tokenizer(vocabulary), what=f'task {source}')
  return it
