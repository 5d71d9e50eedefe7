r"""Sequence-level distillation: a teacher decodes a task split into a distilled task.

  python -m padir.distill \
    --gin_file=gin/experiments/bible_es_en_ar.gin --gin_file=gin/runs/distill.gin \
    --gin.CHECKPOINT_PATH="'/tmp/bible_es_en_ar'" --gin.DISTILL_OUTPUT_DIR="'/tmp/distilled'"

The teacher (any model with ``predict_batch_with_aux``, normally the AR
`padir.models.EncoderDecoderModel` with beam search) decodes the sources of a split (default:
'train') in batches, sharded over the device mesh like evaluation, and writes

  DISTILL_OUTPUT_DIR/distilled-<split>.tsv     columns ``source`` and ``teacher``
                                               (`padir.data.corpus.write_distilled_tsv`)
  DISTILL_OUTPUT_DIR/distill.json              teacher checkpoint and step, decoding settings,
                                               rows written, rows dropped (empty outputs), time
  DISTILL_OUTPUT_DIR/arrays/<split>/           with ``export_feature_lengths``: the distilled
                                               task exported as arrays (train from the teacher,
                                               validation and test with their human references),
                                               ready as ``MIXTURE_OR_TASK_NAME`` of a student

and registers the distilled task (``padir.data.tasks.register_distilled_task``) in this process.
In your own code, register it again from the TSV::

  tasks.register_distilled_task('bible_es_en_distilled', 'DIR/distilled-train.tsv',
                                base_task='bible_es_en')

Resumable: the rows are decoded in chunks of ``chunk_batches`` batches, each saved under
``DIR/parts/`` as soon as it is done; rerunning the command skips the finished chunks, and a
finished distillation (``distill.json``) is not redone. Large corpora can be split over several
jobs with ``num_shards`` / ``shard_index`` (batch ``k`` belongs to shard ``k % num_shards``);
the job that finds every shard's chunks complete merges them, registers and exports.

Sources come from the export's ``text.jsonl`` when the split is an export with texts (the
original text), else from the detokenized source ids.
"""

from __future__ import annotations

import dataclasses
import glob
import importlib
import json
import os
import sys
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax

from padir import datasets as datasets_lib
from padir import eval as eval_lib
from padir import evaluation
from padir import gin_utils
from padir import partitioning as partitioning_lib
from padir import train as train_lib
from padir.ar_decoding import ARConfig

SUMMARY_FILE = 'distill.json'
PARTS_DIR = 'parts'
ARRAYS_DIR = 'arrays'


@dataclasses.dataclass
class DistillResult:
  """What :func:`distill` returns.

  Attributes:
    complete: every shard is decoded and merged (False while other shards are missing).
    tsv_path: the distilled TSV (None until complete).
    num_rows: rows in the TSV (this shard's decoded rows until complete).
    num_empty: rows dropped because the teacher output was empty.
    seconds: decoding time of this call (0 when everything was already done).
    task_name: the registered distilled task (None when no base task is known).
    arrays_dir: the exported arrays (None without ``export_feature_lengths``).
    summary: the contents of ``distill.json``.
  """
  complete: bool
  tsv_path: str | None
  num_rows: int
  num_empty: int
  seconds: float
  task_name: str | None = None
  arrays_dir: str | None = None
  summary: dict[str, Any] = dataclasses.field(default_factory=dict)


def default_teacher_decoding(beam_size: int = 4, length_penalty: float = 0.6,
                             no_repeat_ngram: int = 0) -> ARConfig:
  """Beam search, the usual sequence-level distillation decoder (Kim & Rush 2016).

  ``no_repeat_ngram`` > 0 keeps a looping teacher's repeated n-grams out of the distilled
  targets (`padir.ar_decoding.ARConfig.no_repeat_ngram`; the quickstart chooses it on
  validation, docs/quickstart.md).
  """
  return ARConfig(method='beam', beam_size=beam_size, length_penalty=length_penalty,
                  no_repeat_ngram=no_repeat_ngram)


class _ChunkBatches:
  """The batches of one chunk of one shard, read from a shared split iterator.

  Exposes ``last_rows`` of the underlying iterator (for `evaluation.decode_split`'s texts).
  """

  def __init__(self, iterator: Any, indices: Sequence[int], position: list[int],
               on_batch: Callable[[], Any] | None):
    self._it = iterator
    self._indices = list(indices)
    self._position = position  # [next global batch index of the iterator], shared
    self._on_batch = on_batch

  @property
  def last_rows(self):
    return getattr(self._it, 'last_rows', None)

  def __iter__(self) -> Iterator[Mapping[str, Any]]:
    for wanted in self._indices:
      batch = None
      while self._position[0] <= wanted:
        try:
          batch = next(self._it)
        except StopIteration:  # the split ended inside this chunk
          return
        self._position[0] += 1
      if batch is None:
        continue
      yield batch
      if self._on_batch is not None:
        self._on_batch()


def _chunk_path(parts: str, split: str, shard: int, shards: int, chunk: int) -> str:
  return os.path.join(parts, f'{split}-{shard:05d}-of-{shards:05d}.chunk-{chunk:05d}.jsonl')


def _done_marker(parts: str, split: str, shard: int, shards: int) -> str:
  return os.path.join(parts, f'{split}-{shard:05d}-of-{shards:05d}.done')


def _write_jsonl(path: str, rows: Sequence[Mapping[str, Any]]) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + '\n')
  os.replace(tmp, path)


def _read_jsonl(path: str) -> list[dict[str, Any]]:
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def _num_batches(iterator: Any) -> int | None:
  steps = getattr(iterator, 'steps_per_epoch', None)
  return int(steps) if steps else None


def _base_task_of(dataset_cfg: datasets_lib.DatasetConfig, base_task: str | None) -> str | None:
  """The task the split belongs to: ``base_task``, the source task name, or an export's task."""
  if base_task:
    return base_task
  if not os.path.isdir(dataset_cfg.source):
    return dataset_cfg.source
  from padir.data import iterator as iterator_lib  # pylint: disable=g-import-not-at-top
  path = iterator_lib.find_exported_split(dataset_cfg.source, dataset_cfg.split)
  if path is None:
    return None
  with open(os.path.join(path, 'metadata.json'), encoding='utf-8') as f:
    return json.load(f).get('task')


def _progress(total: int | None, initial: int, desc: str, enabled: bool):
  from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm(total=total, initial=initial, desc=desc, unit='batch', disable=not enabled,
              dynamic_ncols=True)


def distill(*,
            model: Any,
            checkpoint_path: str,
            partitioner: partitioning_lib.Partitioner,
            dataset_cfg: datasets_lib.DatasetConfig,
            output_dir: str,
            task_name: str | None = None,
            base_task: str | None = None,
            vocabulary: Any = None,
            decode_kwargs: Mapping[str, Any] | None = None,
            num_examples: int | None = None,
            num_shards: int = 1,
            shard_index: int = 0,
            chunk_batches: int = 8,
            export_feature_lengths: Mapping[str, int] | None = None,
            export_splits: Sequence[str] = ('train', 'validation', 'test'),
            overlong: str = 'truncate',
            random_seed: int = 0,
            progress: bool = True,
            print_fn: Callable[[str], Any] = print) -> DistillResult:
  """Decodes ``dataset_cfg``'s split with a teacher checkpoint into a distilled task.

  Args:
    model: the teacher (``MODEL`` of its experiment gin).
    checkpoint_path: a model dir (newest checkpoint) or a step dir (``CHECKPOINT_PATH``).
    partitioner: mesh and rules; batches are split over its batch axes.
    dataset_cfg: the split to distill (``distill/padir.datasets.DatasetConfig``); a seqio
      task name or an export directory.
    output_dir: where the TSV, the parts, the summary and the arrays go.
    task_name: the distilled task's name (default ``<base task>_distilled``).
    base_task: the task that is distilled (default: the source task, or an export's task);
      its vocabulary and non-train splits are reused. It must be registered in this process.
    vocabulary: the run's vocabulary (default: the model's).
    decode_kwargs: ``predict_batch_with_aux`` arguments (default: beam search of 4,
      `default_teacher_decoding`).
    num_examples: distill at most this many rows (None: the whole split).
    num_shards: split the batches over this many jobs.
    shard_index: this job's shard.
    chunk_batches: batches per saved chunk (the granularity of resuming).
    export_feature_lengths: also export the distilled task as arrays with these lengths.
    export_splits: the splits to export (those the task has).
    overlong: how the distilled task treats over-long examples ('truncate' or 'filter').
    random_seed: key of sampling teachers.
    progress: show a progress bar.
    print_fn: console output.

  Returns:
    `DistillResult`.

  Raises:
    ValueError: bad arguments, a missing checkpoint, or an unknown base task.
  """
  if not output_dir:
    raise ValueError('DISTILL_OUTPUT_DIR is empty; set --gin.DISTILL_OUTPUT_DIR="\'/path\'".')
  if not isinstance(num_shards, int) or num_shards < 1 or not 0 <= shard_index < num_shards:
    raise ValueError(f'shard_index={shard_index} must be in [0, num_shards={num_shards}).')
  if not isinstance(chunk_batches, int) or chunk_batches < 1:
    raise ValueError(f'chunk_batches={chunk_batches!r} must be an integer >= 1.')
  if num_examples is not None and num_examples < 1:
    raise ValueError(f'num_examples={num_examples} must be >= 1 or None (the whole split).')
  if export_feature_lengths is not None and set(export_feature_lengths) != {'inputs', 'targets'}:
    raise ValueError(f'export_feature_lengths={dict(export_feature_lengths)} needs "inputs" and '
                     '"targets".')
  output_dir = os.path.abspath(os.path.expanduser(output_dir))
  split = dataset_cfg.split
  if dataset_cfg.module:
    # The user's task module registers the base task with its vocabulary; import it before
    # anything looks the task up (a finished run re-registers the distilled task from it).
    importlib.import_module(dataset_cfg.module)
  base = _base_task_of(dataset_cfg, base_task)
  task_name = task_name or (f'{base}_distilled' if base else None)
  decode_kwargs = dict(decode_kwargs) if decode_kwargs else {
      'decode_config': default_teacher_decoding()}
  is_chief = jax.process_index() == 0
  summary_path = os.path.join(output_dir, SUMMARY_FILE)
  tsv_path = os.path.join(output_dir, f'distilled-{split}.tsv')

  if os.path.isfile(summary_path) and os.path.isfile(tsv_path):
    with open(summary_path, encoding='utf-8') as f:
      summary = json.load(f)
    print_fn(f'{output_dir} already holds a finished distillation ({summary["num_rows"]} rows); '
             'delete it to distill again.')
    arrays = _register_and_export(summary, tsv_path, output_dir, export_feature_lengths,
                                  export_splits, overlong, print_fn)
    return DistillResult(True, tsv_path, int(summary['num_rows']),
                         int(summary.get('num_empty', 0)), 0.0, summary.get('task_name'),
                         arrays, summary)

  tokenizer = train_lib._vocabulary_of(model, vocabulary)  # pylint: disable=protected-access
  partitioner.check_batch_size(dataset_cfg.batch_size, 'distill batch_size')
  iterator = datasets_lib.make_iterator(dataset_cfg, vocabulary=tokenizer, shuffle=False,
                                        num_epochs=1, drop_remainder=False)
  total = _num_batches(iterator)
  if num_examples is not None:
    limit = -(-num_examples // dataset_cfg.batch_size)
    total = limit if total is None else min(total, limit)
  texts = datasets_lib.export_texts(dataset_cfg)
  parts = os.path.join(output_dir, PARTS_DIR)
  if is_chief:
    os.makedirs(parts, exist_ok=True)

  # This shard's batches (global indices), grouped into chunks.
  mine = list(range(shard_index, total, num_shards)) if total is not None else None
  seconds = 0.0
  done_marker = _done_marker(parts, split, shard_index, num_shards)
  if not os.path.isfile(done_marker):
    input_shapes = datasets_lib.global_shapes(iterator)
    params, shardings, step = eval_lib.load_for_inference(model, partitioner, checkpoint_path,
                                                          tokenizer, input_shapes)
    predictor = evaluation.Predictor(model, partitioner, shardings, decode_kwargs,
                                     seed=random_seed)
    position = [0]
    finished = 0
    chunk = 0
    bar_total = len(mine) if mine is not None else None
    done_before = 0
    if mine is not None:
      while os.path.isfile(_chunk_path(parts, split, shard_index, num_shards, chunk)):
        done_before += len(mine[chunk * chunk_batches:(chunk + 1) * chunk_batches])
        chunk += 1
    with _progress(bar_total, done_before, f'distill {split}', progress and is_chief) as bar:
      while True:
        if mine is not None:
          indices = mine[chunk * chunk_batches:(chunk + 1) * chunk_batches]
        else:  # unknown length (a seqio task): walk on until the split ends
          first = (chunk * chunk_batches) * num_shards + shard_index
          indices = list(range(first, first + chunk_batches * num_shards, num_shards))
        if not indices:
          break
        path = _chunk_path(parts, split, shard_index, num_shards, chunk)
        if os.path.isfile(path):
          chunk += 1
          continue
        batches = _ChunkBatches(iterator, indices, position, bar.update)
        start = time.perf_counter()
        rows, _ = evaluation.decode_split(predictor, params, batches, tokenizer, texts=texts)
        seconds += time.perf_counter() - start
        if is_chief:
          _write_jsonl(path, [{'source': r.source, 'teacher': r.prediction} for r in rows])
        finished += len(rows)
        chunk += 1
        if len(rows) < len(indices) * dataset_cfg.batch_size and mine is None:
          break  # the split ended inside this chunk
    if is_chief:
      with open(done_marker, 'w', encoding='utf-8') as f:
        json.dump({'checkpoint_step': step, 'chunks': chunk}, f)
    print_fn(f'Shard {shard_index + 1}/{num_shards}: decoded {finished} rows in {seconds:.1f}s '
             f'with {checkpoint_path} (step {step}).')

  complete = all(os.path.isfile(_done_marker(parts, split, s, num_shards))
                 for s in range(num_shards))
  if not complete:
    print_fn(f'Waiting for the other shards of {split} (run shard_index 0..{num_shards - 1}); '
             'the last one to finish merges and registers.')
    return DistillResult(False, None, 0, 0, seconds)
  if not is_chief:
    return DistillResult(True, tsv_path, 0, 0, seconds, task_name)

  # Merge in batch order: chunk c of shard s holds batches s + num_shards * (c * chunk + j).
  files = sorted(glob.glob(os.path.join(parts, f'{split}-*-of-{num_shards:05d}.chunk-*.jsonl')))
  by_batch: list[tuple[int, list[dict[str, Any]]]] = []
  for path in files:
    name = os.path.basename(path)
    shard = int(name.split('-')[1])
    chunk = int(name.rsplit('chunk-', 1)[1].split('.')[0])
    rows = _read_jsonl(path)
    per_batch = dataset_cfg.batch_size
    for j in range(0, len(rows), per_batch):
      batch_index = shard + num_shards * (chunk * chunk_batches + j // per_batch)
      by_batch.append((batch_index, rows[j:j + per_batch]))
  merged = [row for _, rows in sorted(by_batch, key=lambda x: x[0]) for row in rows]
  if num_examples is not None:
    merged = merged[:num_examples]
  kept = [r for r in merged if r['teacher'].strip() and r['source'].strip()]
  if not kept:
    raise ValueError(f'The teacher produced no non-empty output for {split}; check the '
                     f'checkpoint {checkpoint_path}.')
  from padir.data import corpus  # pylint: disable=g-import-not-at-top
  corpus.write_distilled_tsv(tsv_path + '.tmp', [r['source'] for r in kept],
                             [r['teacher'] for r in kept])
  os.replace(tsv_path + '.tmp', tsv_path)
  summary = {
      'checkpoint_path': os.path.abspath(checkpoint_path),
      'split': split,
      'source': dataset_cfg.source,
      'base_task': base,
      'task_name': task_name,
      'num_rows': len(kept),
      'num_empty': len(merged) - len(kept),
      'num_shards': num_shards,
      'decode': {k: (dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v)
                 for k, v in decode_kwargs.items()},
      'decode_seconds': seconds,
  }
  arrays = _register_and_export(summary, tsv_path, output_dir, export_feature_lengths,
                                export_splits, overlong, print_fn)
  with open(summary_path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2, sort_keys=True, default=str)
    f.write('\n')
  os.replace(summary_path + '.tmp', summary_path)
  print_fn(f'Distilled {len(kept)} rows ({summary["num_empty"]} empty outputs dropped) -> '
           f'{tsv_path}' + (f'; task {task_name}' if summary.get('registered') else ''))
  return DistillResult(True, tsv_path, len(kept), summary['num_empty'], seconds,
                       task_name if summary.get('registered') else None, arrays, summary)


def _register_and_export(summary: dict[str, Any], tsv_path: str, output_dir: str,
                         export_feature_lengths: Mapping[str, int] | None,
                         export_splits: Sequence[str], overlong: str,
                         print_fn: Callable[[str], Any]) -> str | None:
  """Registers the distilled task (when its base task is known) and exports its arrays."""
  base, name = summary.get('base_task'), summary.get('task_name')
  summary['registered'] = False
  if not base or not name:
    if export_feature_lengths is not None:
      raise ValueError('Cannot export the distilled task: the base task is unknown; set '
                       'padir.distill.distill.base_task.')
    print_fn('No base task known: wrote the TSV only (set padir.distill.distill.base_task to '
             'register a task).')
    return None
  from padir.data import tasks  # pylint: disable=g-import-not-at-top
  tasks.get_task(base)  # a clear error when the base task is not registered
  task = tasks.register_distilled_task(name, tsv_path, base_task=base, overlong=overlong)
  summary['registered'] = True
  if export_feature_lengths is None:
    return None
  from padir.data import export  # pylint: disable=g-import-not-at-top
  arrays = os.path.join(output_dir, ARRAYS_DIR)
  exported = summary.setdefault('exported', {})
  for split in [s for s in export_splits if s in task.splits]:
    split_dir = os.path.join(arrays, split)
    if os.path.isfile(os.path.join(split_dir, 'metadata.json')) and split in exported:
      continue
    meta = export.export_split(name, split, dict(export_feature_lengths), split_dir,
                               write_text=split != 'train')
    exported[split] = {'num_examples': meta['num_examples'], 'overlong': meta['overlong']}
  return arrays


distill = gin_utils.configurable(distill, module='padir.distill')
gin_utils.configurable(default_teacher_decoding, module='padir.distill')


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m padir.distill`` / ``padir distill``."""
  entry = lambda: distill()  # pylint: disable=unnecessary-lambda  (gin resolves at call time)
  return train_lib.run_main(argv, entry, 'padir distill', __doc__)


if __name__ == '__main__':
  sys.exit(main())
