"""seqio tasks: the embedded Bible corpus, WMT (TFDS), users' TSV files and distilled data.

Importing this module registers:

  bible_es_en, bible_en_es   the embedded Reina-Valera 1909 / World English Bible corpus with the
                             shipped 8k SentencePiece vocabulary; splits train / validation / test.
                             es->en examples carry both English translations (WEB and KJV) as
                             references, so BLEU and chrF are multi-reference.
  wmt14_en_de, wmt14_de_en   TFDS wmt14_translate/de-en   (the data is downloaded and prepared by
  wmt16_en_ro, wmt16_ro_en   TFDS wmt16_translate/ro-en    TFDS on first use, on your machine).

WMT tasks are registered with seqio's ByteVocabulary, which needs no file; for real runs train a
SentencePiece model on them (``python -m padir.data.train_vocab --task=wmt14_de_en
--vocab_size=32000 --output=de_en.model``) and re-register with
``register_wmt_tasks(vocabulary='de_en.model')``.

Every padir task has the same source contract: text features ``inputs``, ``targets`` and
``references`` (a vector of every reference of the target), which is what lets a distilled task
take its evaluation splits from the task it was distilled from. Registration is idempotent: a
name registered again replaces the old task, so re-importing or reloading this module is safe.
"""

from __future__ import annotations

import difflib
import functools
import os
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import seqio
import tensorflow as tf

from padir.data import corpus
from padir.data import metrics
from padir.data import preprocessors
from padir.data import vocab as vocab_lib

SPLITS = ('train', 'validation', 'test')
REFERENCES = metrics.REFERENCES
WMT_TASKS = {
    # name: (tfds name, source language, target language)
    'wmt14_en_de': ('wmt14_translate/de-en:1.0.0', 'en', 'de'),
    'wmt14_de_en': ('wmt14_translate/de-en:1.0.0', 'de', 'en'),
    'wmt16_en_ro': ('wmt16_translate/ro-en:1.0.0', 'en', 'ro'),
    'wmt16_ro_en': ('wmt16_translate/ro-en:1.0.0', 'ro', 'en'),
}
BIBLE_TASKS = {
    # name: (source column, target column, reference columns)
    'bible_es_en': ('es', 'en', ('en', 'en_kjv')),
    'bible_en_es': ('en', 'es', ('es',)),
}

LoadFn = Callable[[str, bool, 'int | None', 'seqio.ShardInfo | None'], tf.data.Dataset]


class TextSource(seqio.DataSource):
  """A seqio DataSource yielding ``{'inputs', 'targets', 'references'}`` text examples.

  ``load_fn(split, shuffle, seed, shard_info)`` builds the dataset; sharding happens there,
  before any shuffling, so shards are disjoint whatever the seeds.
  """

  def __init__(self, load_fn: LoadFn, splits: Sequence[str]):
    # No num_input_examples: seqio would then cache small splits in memory after the source's
    # shuffle, and every later epoch would repeat the first one's order.
    super().__init__(splits=splits)
    self._load_fn = load_fn

  @property
  def supports_arbitrary_sharding(self) -> bool:
    return True

  def list_shards(self, split: str) -> Sequence[str]:
    return [split]

  def get_dataset(self, split: str = 'train', shuffle: bool = True, seed: int | None = None,
                  shard_info: seqio.ShardInfo | None = None, *, sequence_length=None,
                  use_cached=False, num_epochs=1) -> tf.data.Dataset:
    del sequence_length, use_cached, num_epochs  # handled by the Task
    if split not in self.splits:
      raise ValueError(f'Unknown split {split!r}; this source has {list(self.splits)}.')
    return self._load_fn(split, shuffle, seed, shard_info)


def _rows_to_dataset(inputs: Sequence[str], targets: Sequence[str],
                     references: Sequence[Sequence[str]], shuffle: bool, seed: int | None,
                     shard_info: seqio.ShardInfo | None) -> tf.data.Dataset:
  """In-memory rows -> a (sharded, then shuffled) text dataset."""
  index = np.arange(len(inputs))
  if shard_info is not None and shard_info.num_shards > 1:
    index = index[shard_info.index::shard_info.num_shards]
  columns = {
      'inputs': np.asarray(inputs, dtype=object)[index],
      'targets': np.asarray(targets, dtype=object)[index],
      REFERENCES: np.asarray(references, dtype=object).reshape(len(inputs), -1)[index],
  }
  ds = tf.data.Dataset.from_tensor_slices(
      {k: tf.constant(v.tolist(), dtype=tf.string) for k, v in columns.items()})
  if shuffle:
    ds = ds.shuffle(max(len(index), 1), seed=seed, reshuffle_each_iteration=True)
  return ds


@functools.lru_cache(maxsize=32)
def _read_cached(path: str, columns: tuple[str, ...], header: bool | tuple[str, ...],
                 max_bad_fraction: float, stamp: tuple[int, int]) -> dict[str, list[str]]:
  del stamp  # part of the cache key only: a changed file is read again
  rows, _ = corpus.read_tsv(path, columns, header=header, max_bad_fraction=max_bad_fraction)
  return rows


def _read(path: str, columns: Sequence[str], header: bool | Sequence[str] = True,
          max_bad_fraction: float = corpus.DEFAULT_MAX_BAD_FRACTION) -> dict[str, list[str]]:
  st = os.stat(path)
  header_key = header if isinstance(header, bool) else tuple(header)
  return _read_cached(os.fspath(path), tuple(columns), header_key, max_bad_fraction,
                      (st.st_mtime_ns, st.st_size))


def tsv_load_fn(paths: Mapping[str, str], source_column: str, target_column: str,
                reference_columns: Sequence[str], header: bool | Sequence[str] = True,
                max_bad_fraction: float = corpus.DEFAULT_MAX_BAD_FRACTION) -> LoadFn:
  """A TextSource load_fn over one TSV file per split."""
  columns = list(dict.fromkeys([source_column, target_column, *reference_columns]))

  def load(split, shuffle, seed, shard_info):
    rows = _read(paths[split], columns, header, max_bad_fraction)
    refs = list(zip(*(rows[c] for c in reference_columns)))
    return _rows_to_dataset(rows[source_column], rows[target_column], refs, shuffle, seed,
                            shard_info)

  return load


def tfds_load_fn(tfds_name: str, source_lang: str, target_lang: str,
                 data_dir: str | None = None, download: bool = True) -> LoadFn:
  """A TextSource load_fn over a TFDS translation dataset (features keyed by language)."""

  def load(split, shuffle, seed, shard_info):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    if shard_info is not None and shard_info.num_shards > 1:
      split = tfds.even_splits(split, n=shard_info.num_shards)[shard_info.index]
    ds = tfds.load(tfds_name, split=split, shuffle_files=shuffle, data_dir=data_dir,
                   download=download, read_config=tfds.ReadConfig(shuffle_seed=seed))
    return ds.map(lambda ex: {'inputs': ex[source_lang], 'targets': ex[target_lang],
                              REFERENCES: tf.reshape(ex[target_lang], [1])},
                  num_parallel_calls=tf.data.experimental.AUTOTUNE)

  return load


def output_features(vocabulary: Any) -> dict[str, seqio.Feature]:
  return {
      'inputs': seqio.Feature(vocabulary, add_eos=True),
      'targets': seqio.Feature(vocabulary, add_eos=True),
  }


def _add_task(name: str, source: TextSource, vocabulary: Any, overlong: str) -> seqio.Task:
  if not isinstance(vocabulary, seqio.Vocabulary):
    vocabulary = vocab_lib.seqio_vocabulary(vocab_lib.check_available(vocabulary))
  vocab_lib.load_tokenizer(vocabulary).special_ids()  # fail now if too few extra ids
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=source,
      output_features=output_features(vocabulary),
      preprocessors=preprocessors.task_preprocessors(name, overlong),
      postprocess_fn=metrics.postprocess_translation,
      metric_fns=[metrics.translation_metrics])


def register_bible_task(name: str, source_lang: str, target_lang: str,
                        reference_columns: Sequence[str] | None = None,
                        vocabulary: Any = 'bible', overlong: str = 'truncate') -> seqio.Task:
  """Registers a direction of the embedded corpus ('es', 'en' or 'en_kjv' columns)."""
  refs = tuple(reference_columns or (target_lang,))
  load = tsv_load_fn({s: os.fspath(corpus.bible_path(s)) for s in SPLITS}, source_lang,
                     target_lang, refs, max_bad_fraction=0.0)
  return _add_task(name, TextSource(load, SPLITS), vocabulary, overlong)


def register_tsv_task(name: str,
                      train: str | None = None,
                      validation: str | None = None,
                      test: str | None = None,
                      *,
                      source_column: str = 'source',
                      target_column: str = 'target',
                      reference_columns: Sequence[str] | None = None,
                      vocabulary: Any = 'bible',
                      header: bool | Sequence[str] = True,
                      max_bad_fraction: float = corpus.DEFAULT_MAX_BAD_FRACTION,
                      overlong: str = 'truncate') -> seqio.Task:
  """Registers a task over your own parallel TSV files (plain or gzip'd, UTF-8).

  Args:
    name: the task name.
    train, validation, test: one file per split; give at least one.
    source_column, target_column: the columns that become inputs and targets.
    reference_columns: columns holding every reference of the target (multi-reference BLEU);
      default: the target column.
    vocabulary: 'bible', 'byte', a SentencePiece file or a seqio Vocabulary.
    header: True when the first line names the columns, else the column names in order.
    max_bad_fraction: fail when more than this fraction of a file's rows is bad.
    overlong: 'truncate' or 'filter' examples longer than the feature lengths.

  Returns:
    The registered seqio.Task.
  """
  paths = {s: os.fspath(p) for s, p in (('train', train), ('validation', validation),
                                         ('test', test)) if p is not None}
  if not paths:
    raise ValueError(f'register_tsv_task({name!r}): give at least one of train, validation, '
                     'test.')
  for split, path in paths.items():
    if not os.path.isfile(path):
      raise FileNotFoundError(f'register_tsv_task({name!r}): {split} file {path} not found.')
  load = tsv_load_fn(paths, source_column, target_column,
                     tuple(reference_columns or (target_column,)), header, max_bad_fraction)
  return _add_task(name, TextSource(load, tuple(paths)), vocabulary, overlong)


def register_distilled_task(name: str, train: str, base_task: str,
                            max_bad_fraction: float = corpus.DEFAULT_MAX_BAD_FRACTION,
                            overlong: str = 'truncate') -> seqio.Task:
  """Registers training on teacher outputs, evaluated on the original task's references.

  Args:
    name: the new task.
    train: a TSV with columns ``source`` and ``teacher`` (as padir.distill writes with
      :func:`padir.data.corpus.write_distilled_tsv`).
    base_task: the padir task that was distilled; its vocabulary and its non-train splits are
      used as they are.
    max_bad_fraction: as in :func:`register_tsv_task`.
    overlong: as in :func:`register_tsv_task`.

  Returns:
    The registered seqio.Task.
  """
  base = get_task(base_task)
  if not isinstance(base.source, TextSource):
    raise ValueError(f'{base_task!r} is not a padir text task; distilled tasks build on tasks '
                     'registered by padir.data.tasks.')
  if not os.path.isfile(train):
    raise FileNotFoundError(f'register_distilled_task({name!r}): {train} not found.')
  source_col, teacher_col = corpus.DISTILLED_COLUMNS
  train_load = tsv_load_fn({'train': os.fspath(train)}, source_col, teacher_col, (teacher_col,),
                           max_bad_fraction=max_bad_fraction)
  base_source = base.source

  def load(split, shuffle, seed, shard_info):
    if split == 'train':
      return train_load(split, shuffle, seed, shard_info)
    return base_source.get_dataset(split, shuffle=shuffle, seed=seed, shard_info=shard_info)

  splits = tuple(dict.fromkeys(('train', *base_source.splits)))
  return _add_task(name, TextSource(load, splits), base.output_features['targets'].vocabulary,
                   overlong)


def register_wmt_tasks(vocabulary: Any = 'byte', data_dir: str | None = None,
                       download: bool = True, overlong: str = 'truncate') -> list[seqio.Task]:
  """(Re-)registers the WMT tasks of the paper with the given vocabulary."""
  return [
      _add_task(name, TextSource(tfds_load_fn(tfds_name, src, tgt, data_dir, download), SPLITS),
                vocabulary, overlong)
      for name, (tfds_name, src, tgt) in WMT_TASKS.items()
  ]


def task_vocabulary(task: seqio.Task) -> dict[str, Any]:
  """The fingerprint of the task's vocabulary; inputs and targets must share it."""
  prints = {k: vocab_lib.load_tokenizer(f.vocabulary).fingerprint()
            for k, f in task.output_features.items()}
  if prints['inputs'] != prints['targets']:
    raise ValueError(f'{task.name}: inputs and targets use different vocabularies {prints}; '
                     'padir needs one shared vocabulary.')
  return prints['targets']


def get_task(name: str) -> seqio.Task:
  """The registered task ``name``; an unknown name lists the registered names closest to it."""
  names = sorted(seqio.TaskRegistry.names())
  if name not in names:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    raise ValueError(f'Unknown task {name!r}.{hint} Registered tasks: {", ".join(names)}.')
  return seqio.get_mixture_or_task(name)


def register_default_tasks() -> None:
  for name, (src, tgt, refs) in BIBLE_TASKS.items():
    register_bible_task(name, src, tgt, refs)
  register_wmt_tasks()


register_default_tasks()
