"""Exported task splits as numpy arrays, and a batch iterator over them. TensorFlow-free.

``python -m padir.data.export`` writes one directory per split::

  metadata.json                  format, task, split, feature lengths, vocabulary (with its
                                 fingerprint), number of examples, over-long counts, file sha256s
  encoder_input_tokens.npy       int32 [N, L_in]
  decoder_target_tokens.npy      int32 [N, L]
  decoder_loss_weights.npy       int32 [N, L]      (the features of the chosen converter)
  text.jsonl                     optional: per row, its source text and every reference
                                 (multi-reference BLEU without TensorFlow); by default written
                                 for evaluation splits

:class:`ArrayBatchIterator` serves batches of those rows:

* seeded shuffling: epoch ``e`` visits the rows in ``default_rng([seed, e]).permutation(N)``,
  so every run, and every process, sees the same order;
* multi-host: ``batch_size`` is the global batch; process ``p`` of ``P`` gets rows
  ``[p * B/P, (p+1) * B/P)`` of each global batch, so processes never overlap;
* resumable: the position is (epoch, step), global and tiny; :meth:`get_state` /
  :meth:`set_state` round-trip it through JSON (save it with the checkpoint), and a resumed
  iterator yields exactly what the original would have, even with another process count;
* length buckets (optional, for training): rows of similar length share a batch, which is
  trimmed to the narrowest bucket width that holds them, so a step spends little compute on
  padding (fairseq batches by length for the same reason; T5X packs).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from padir.data import vocab as vocab_lib

FORMAT = 'padir-arrays'
FORMAT_VERSION = 1
METADATA_FILE = 'metadata.json'
TEXT_FILE = 'text.jsonl'
_STATE_FORMAT = 'padir-array-iterator'


def array_sha256(array: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def write_split(directory: str | os.PathLike[str], arrays: Mapping[str, np.ndarray],
                metadata: Mapping[str, Any]) -> dict[str, Any]:
  """Writes arrays (int32 [N, L] each, same N) and their metadata; returns the metadata."""
  directory = os.fspath(directory)
  sizes = {k: a.shape[0] for k, a in arrays.items()}
  if len(set(sizes.values())) != 1:
    raise ValueError(f'Arrays have different numbers of rows: {sizes}.')
  os.makedirs(directory, exist_ok=True)
  meta_path = os.path.join(directory, METADATA_FILE)
  if os.path.exists(meta_path):  # written last: an interrupted export is never loadable
    os.remove(meta_path)
  meta = dict(metadata)
  meta.update(
      format=FORMAT, format_version=FORMAT_VERSION,
      num_examples=int(next(iter(sizes.values()))),
      features={k: {'shape': list(a.shape), 'dtype': 'int32', 'sha256': array_sha256(a)}
                for k, a in arrays.items()})
  for k, a in arrays.items():
    np.save(os.path.join(directory, f'{k}.npy'), np.asarray(a, dtype=np.int32))
  with open(meta_path, 'w', encoding='utf-8') as f:
    json.dump(meta, f, indent=2, sort_keys=True)
    f.write('\n')
  return meta


def write_text(directory: str | os.PathLike[str], inputs: Sequence[str],
               references: Sequence[Sequence[str]]) -> str:
  """Writes ``text.jsonl``: row i's source text and references, in the arrays' row order.

  Returns:
    The file's path.
  """
  if len(inputs) != len(references):
    raise ValueError(f'{len(inputs)} inputs but {len(references)} reference lists.')
  path = os.path.join(os.fspath(directory), TEXT_FILE)
  with open(path, 'w', encoding='utf-8') as f:
    for source, refs in zip(inputs, references):
      f.write(json.dumps({'inputs': source, 'references': list(refs)}, ensure_ascii=False))
      f.write('\n')
  return path


@dataclasses.dataclass
class ArrayDataset:
  """One exported split: its metadata and its arrays (memory-mapped by default)."""

  path: str
  metadata: dict[str, Any]
  arrays: dict[str, np.ndarray]

  @property
  def num_examples(self) -> int:
    return int(self.metadata['num_examples'])

  @property
  def vocabulary(self) -> dict[str, Any]:
    """The fingerprint of the vocabulary it was made with (padir.data.vocab.Tokenizer)."""
    return self.metadata['vocabulary']

  def text(self) -> list[dict[str, Any]] | None:
    """Per row ``{'inputs': str, 'references': [str, ...]}`` from ``text.jsonl``, or None.

    Raises:
      ValueError: the file does not have one line per row.
    """
    path = os.path.join(self.path, TEXT_FILE)
    if not os.path.isfile(path):
      return None
    with open(path, encoding='utf-8') as f:
      rows = [json.loads(line) for line in f]
    if len(rows) != self.num_examples:
      raise ValueError(f'{path} has {len(rows)} lines for {self.num_examples} rows; export '
                       'the split again.')
    return rows

  @property
  def feature_lengths(self) -> dict[str, int]:
    """Model feature -> length."""
    return {k: int(a.shape[1]) for k, a in self.arrays.items()}

  @classmethod
  def load(cls,
           path: str | os.PathLike[str],
           *,
           vocabulary: Any = None,
           mmap: bool = True,
           verify: bool = False) -> 'ArrayDataset':
    """Loads an exported split.

    Args:
      path: the split's directory.
      vocabulary: when given (anything padir.data.vocab.load_tokenizer accepts), the split
        must have been made with this vocabulary.
      mmap: memory-map the arrays (fast start, little memory) instead of reading them.
      verify: recompute every array's sha256 and compare with the metadata.

    Raises:
      FileNotFoundError, ValueError: a missing file, a format or shape mismatch, a vocabulary
        mismatch, or (verify) a changed array; the message names the file.
    """
    path = os.fspath(path)
    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.isfile(meta_path):
      raise FileNotFoundError(
          f'{meta_path} not found: {path} is not an exported split (make one with '
          'python -m padir.data.export).')
    with open(meta_path, encoding='utf-8') as f:
      meta = json.load(f)
    if meta.get('format') != FORMAT or meta.get('format_version') != FORMAT_VERSION:
      raise ValueError(f'{meta_path}: format {meta.get("format")!r} version '
                       f'{meta.get("format_version")!r}; expected {FORMAT!r} {FORMAT_VERSION}.')
    arrays = {}
    for name, spec in meta['features'].items():
      file = os.path.join(path, f'{name}.npy')
      if not os.path.isfile(file):
        raise FileNotFoundError(f'{file} (listed in {meta_path}) is missing.')
      a = np.load(file, mmap_mode='r' if mmap else None, allow_pickle=False)
      if list(a.shape) != spec['shape'] or a.dtype != np.int32:
        raise ValueError(f'{file}: {a.dtype}{list(a.shape)}, but {meta_path} says '
                         f'int32{spec["shape"]}.')
      if verify and array_sha256(a) != spec['sha256']:
        raise ValueError(f'{file} has changed since it was exported (sha256 mismatch).')
      arrays[name] = a
    ds = cls(path=path, metadata=meta, arrays=arrays)
    if vocabulary is not None:
      vocab_lib.check_fingerprint(meta['vocabulary'], vocab_lib.load_tokenizer(vocabulary),
                                  what=f'exported split {path}')
    return ds


def row_lengths(dataset: ArrayDataset) -> np.ndarray:
  """int64 [N]: per row, the longest of its features (tokens up to the last non-pad one)."""
  out = np.zeros((dataset.num_examples,), np.int64)
  chunk = 1 << 16  # bounded memory on large memory-mapped splits
  for a in dataset.arrays.values():
    width = a.shape[1]
    for start in range(0, dataset.num_examples, chunk):
      block = np.asarray(a[start:start + chunk]) != 0  # [n, L]
      last = width - np.argmax(block[:, ::-1], axis=1)  # 1 + index of the last non-pad
      last[~block.any(axis=1)] = 0
      out[start:start + chunk] = np.maximum(out[start:start + chunk], last)
  return out


def check_length_buckets(buckets: Sequence[int], max_length: int) -> tuple[int, ...]:
  """Sorted bucket widths, the features' full length (``max_length``) always last.

  Raises:
    ValueError: a width that is not a positive integer.
  """
  widths = []
  for b in buckets:
    if isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1:
      raise ValueError(f'length_buckets={tuple(buckets)!r}: every width must be a positive '
                       'integer (e.g. (16, 24) for 32-token features).')
    if b < max_length:
      widths.append(int(b))
  return tuple(sorted(set(widths))) + (int(max_length),)


class ArrayBatchIterator:
  """Seeded, process-sharded, resumable batches of an :class:`ArrayDataset`.

  Yields ``{feature: int32 [batch_size // process_count, W]}`` numpy dicts: ``W`` is the
  feature's length, or with ``length_buckets`` the batch's bucket width (at most the length).
  """

  def __init__(self,
               dataset: ArrayDataset,
               batch_size: int,
               *,
               shuffle: bool = True,
               seed: int = 0,
               num_epochs: int | None = None,
               drop_remainder: bool = True,
               process_index: int = 0,
               process_count: int = 1,
               length_buckets: Sequence[int] | None = None):
    """Args:
      dataset: the split.
      batch_size: the global batch size (all processes together).
      shuffle: visit rows in a seeded random order, reshuffled every epoch.
      seed: the shuffling seed; the same on every process.
      num_epochs: stop after this many passes; None repeats forever.
      drop_remainder: drop the last, partial batch of each epoch; otherwise it is padded
        with all-zero rows (pad tokens, zero loss weight) to the full size.
      process_index, process_count: this process and how many there are.
      length_buckets: batch widths, e.g. ``(16, 24)`` (the features' full length is always
        the last). Each epoch, the shuffled rows are grouped by the narrowest width that
        holds every feature of the row; each group is cut into batches (its leftover rows
        move on to the next width), the batches are shuffled, and each is trimmed to its
        width. The number of batches per epoch, the seeding and resuming are as without
        buckets. None: every batch has the full length.
    """
    if batch_size < 1 or batch_size % process_count:
      raise ValueError(f'batch_size={batch_size} must be a positive multiple of '
                       f'process_count={process_count}.')
    if not 0 <= process_index < process_count:
      raise ValueError(f'process_index={process_index} not in [0, {process_count}).')
    if num_epochs is not None and num_epochs < 1:
      raise ValueError(f'num_epochs={num_epochs} must be >= 1 or None (forever).')
    n = dataset.num_examples
    if n == 0:
      raise ValueError(f'{dataset.path} has no examples.')
    if drop_remainder and n < batch_size:
      raise ValueError(f'{dataset.path} has {n} examples, fewer than batch_size={batch_size} '
                       'with drop_remainder=True: no batch would be produced.')
    self._ds = dataset
    self._batch_size = batch_size
    self._local = batch_size // process_count
    self._shuffle = shuffle
    self._seed = int(seed)
    self._num_epochs = num_epochs
    self._drop_remainder = drop_remainder
    self._process_index = process_index
    self._steps_per_epoch = n // batch_size if drop_remainder else -(-n // batch_size)
    self._epoch = 0
    self._step = 0
    self._order_epoch = -1
    self._order = np.arange(n)
    self._last_rows = np.zeros((0,), np.int64)
    self._full = dataset.feature_lengths
    self._buckets: tuple[int, ...] | None = None
    self._bucket_of = np.zeros((n,), np.int64)
    self._batches: list[tuple[int, np.ndarray]] = []
    if length_buckets is not None:
      self._buckets = check_length_buckets(length_buckets, max(self._full.values()))
      # The narrowest bucket that holds the row's longest feature.
      self._bucket_of = np.searchsorted(np.asarray(self._buckets), row_lengths(dataset))

  @property
  def last_rows(self) -> np.ndarray:
    """int64 [batch_size // process_count]: the dataset rows of the last batch, -1 for padding.

    With ``ArrayDataset.text()`` this finds each row's source text and references.
    """
    return self._last_rows

  @property
  def steps_per_epoch(self) -> int:
    return self._steps_per_epoch

  @property
  def element_spec(self) -> dict[str, tuple[tuple[int, int], np.dtype]]:
    """Feature -> (per-process batch shape, dtype) of every batch (the widest, with buckets)."""
    return {k: ((self._local, length), np.dtype(np.int32))
            for k, length in self._full.items()}

  @property
  def length_buckets(self) -> tuple[int, ...] | None:
    """The batch widths (the full length last), or None."""
    return self._buckets

  @property
  def batch_shapes(self) -> list[dict[str, tuple[int, int]]]:
    """Feature -> per-process batch shape, for every shape a batch can have (widest last)."""
    if self._buckets is None:
      return [{k: shape for k, (shape, _) in self.element_spec.items()}]
    # The same in every epoch: which buckets get batches depends on their sizes only.
    used = sorted({b for b, _ in self._bucket_batches(np.arange(self._ds.num_examples))})
    return [{k: (self._local, min(self._buckets[b], n)) for k, n in self._full.items()}
            for b in used]

  def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
    return self

  def _epoch_order(self) -> np.ndarray:
    if self._order_epoch != self._epoch:
      n = self._ds.num_examples
      self._order = (np.random.default_rng([self._seed, self._epoch]).permutation(n)
                     if self._shuffle else np.arange(n))
      if self._buckets is not None:
        self._batches = self._bucket_batches(self._order)
      self._order_epoch = self._epoch
    return self._order

  def _bucket_batches(self, order: np.ndarray) -> list[tuple[int, np.ndarray]]:
    """(bucket, global rows) of every batch of an epoch whose rows come in ``order``."""
    batches, carry = [], np.zeros((0,), np.int64)
    for b in range(len(self._buckets)):
      rows = np.concatenate([carry, order[self._bucket_of[order] == b]])
      full = len(rows) // self._batch_size
      batches += [(b, rows[i * self._batch_size:(i + 1) * self._batch_size])
                  for i in range(full)]
      carry = rows[full * self._batch_size:]
    if len(carry) and not self._drop_remainder:
      batches.append((len(self._buckets) - 1, carry))
    if self._shuffle:
      shuffled = np.random.default_rng([self._seed, self._epoch, 1]).permutation(len(batches))
      batches = [batches[i] for i in shuffled]
    return batches

  def _global_batch(self) -> tuple[np.ndarray, dict[str, int]]:
    """The current global batch's rows and its feature widths."""
    order = self._epoch_order()
    if self._buckets is None:
      start = self._step * self._batch_size
      return order[start:start + self._batch_size], self._full
    bucket, rows = self._batches[self._step]
    return rows, {k: min(self._buckets[bucket], n) for k, n in self._full.items()}

  def __next__(self) -> dict[str, np.ndarray]:
    if self._num_epochs is not None and self._epoch >= self._num_epochs:
      raise StopIteration
    global_rows, widths = self._global_batch()
    start = self._process_index * self._local
    # Sorted rows read the (memory-mapped) arrays front to back; the order inside a batch is
    # immaterial.
    rows = np.sort(global_rows[start:start + self._local])
    batch = {k: np.asarray(a[rows, :widths[k]]) for k, a in self._ds.arrays.items()}
    self._last_rows = np.full((self._local,), -1, np.int64)
    self._last_rows[:len(rows)] = rows
    if len(rows) < self._local:  # only the last batch of an epoch, without drop_remainder
      batch = {k: np.pad(v, ((0, self._local - len(rows)), (0, 0))) for k, v in batch.items()}
    self._step += 1
    if self._step == self._steps_per_epoch:
      self._epoch, self._step = self._epoch + 1, 0
    return batch

  def get_state(self) -> dict[str, Any]:
    """A JSON-serialisable position: save it with the checkpoint."""
    return {
        'format': _STATE_FORMAT,
        'epoch': self._epoch,
        'step': self._step,
        'seed': self._seed,
        'shuffle': self._shuffle,
        'batch_size': self._batch_size,
        'drop_remainder': self._drop_remainder,
        'num_examples': self._ds.num_examples,
        'task': self._ds.metadata.get('task'),
        'split': self._ds.metadata.get('split'),
        'length_buckets': None if self._buckets is None else list(self._buckets),
    }

  def set_state(self, state: Mapping[str, Any]) -> None:
    """Resumes at a position from :meth:`get_state` (of an iterator over the same data)."""
    if state.get('format') != _STATE_FORMAT:
      raise ValueError(f'Not an array iterator state: {dict(state)}.')
    mine = self.get_state()
    for key in ('seed', 'shuffle', 'batch_size', 'drop_remainder', 'num_examples', 'task',
                'split', 'length_buckets'):
      if state.get(key) != mine[key]:
        raise ValueError(f'Cannot resume: the saved iterator had {key}={state.get(key)!r}, '
                         f'this one has {mine[key]!r}.')
    if not 0 <= int(state['step']) < self._steps_per_epoch:
      raise ValueError(f'Saved step {state["step"]} outside [0, {self._steps_per_epoch}).')
    self._epoch, self._step = int(state['epoch']), int(state['step'])
