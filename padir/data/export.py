r"""Exports task splits as numpy arrays, for training without TensorFlow.

  python -m padir.data.export --task=bible_es_en --feature_lengths=inputs=128,targets=128 \
      --output_dir=exports/bible_es_en [--split=train | --splits=train,validation,test] \
      [--converter=padir|encdec] [--text=auto|yes|no] [--module=my.tasks]

tokenises and converts each split once (in file order, no shuffling) and writes
``OUTPUT_DIR/<split>/`` as described in :mod:`padir.data.arrays`; load it with
``padir.data.arrays.ArrayDataset.load`` or ``padir.data.iterator.make_batch_iterator``.
``metadata.json`` records the task, split, converter, feature lengths, number of examples, the
vocabulary fingerprint (with the model file's sha256) and how many examples were truncated or
filtered as over-long. ``--text`` also writes every row's source text and references
(``text.jsonl``; ``auto``: for every split but train). ``--module=my.tasks`` imports a module
that registers your own tasks first.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from typing import Any, Mapping, Sequence

import numpy as np
import seqio

from padir import errors
from padir.data import arrays as arrays_lib
from padir.data import features
from padir.data import preprocessors
from padir.data import tasks


def _task_text(task_name: str, split: str,
               feature_lengths: Mapping[str, int]) -> tuple[list[str], list[list[str]]]:
  """Source texts and references of a split, in the order the arrays were written."""
  ds = tasks.get_task(task_name).get_dataset(dict(feature_lengths), split=split, shuffle=False,
                                             num_epochs=1)
  inputs, references = [], []
  for ex in ds.as_numpy_iterator():
    inputs.append(ex['inputs_pretokenized'].decode('utf-8'))
    references.append([r.decode('utf-8') for r in ex[tasks.REFERENCES]])
  return inputs, references


def export_split(task_name: str, split: str, feature_lengths: Mapping[str, int],
                 output_dir: str | os.PathLike[str], converter: str = 'padir',
                 write_text: bool | None = None) -> dict[str, Any]:
  """Writes one split of a task as arrays; returns its metadata.

  Args:
    task_name: a registered task.
    split: one of its splits.
    feature_lengths: task feature lengths, e.g. ``{'inputs': 128, 'targets': 128}``.
    output_dir: the split's directory.
    converter: 'padir' or 'encdec'.
    write_text: also write ``text.jsonl`` (sources and references); None: for every split but
      'train'.

  Returns:
    The metadata written to ``metadata.json``.
  """
  task = tasks.get_task(task_name)
  if split not in task.splits:
    raise ValueError(f'{task_name} has no split {split!r}; it has {list(task.splits)}.')
  vocabulary = tasks.task_vocabulary(task)
  preprocessors.reset_overlong_counts(task_name)
  ds = seqio.get_dataset(task_name, dict(feature_lengths),
                         features.get_feature_converter(converter), dataset_split=split,
                         shuffle=False, num_epochs=1, verbose=False)
  chunks: dict[str, list[np.ndarray]] = {}
  for batch in ds.batch(1024).as_numpy_iterator():
    for k, v in batch.items():
      chunks.setdefault(k, []).append(v)
  if not chunks:
    raise ValueError(f'{task_name}/{split} produced no examples.')
  arrays = {k: np.concatenate(v).astype(np.int32) for k, v in chunks.items()}
  targets = arrays['decoder_target_tokens']
  metadata = {
      'task': task_name,
      'split': split,
      'converter': converter,
      'task_feature_lengths': {k: int(v) for k, v in feature_lengths.items()},
      'vocabulary': vocabulary,
      'overlong': preprocessors.overlong_counts(task_name).get(task_name, {}),
      'mean_target_tokens': float((targets != 0).sum(axis=1).mean()),
  }
  if write_text is None:
    write_text = split != 'train'
  if write_text:
    inputs, references = _task_text(task_name, split, feature_lengths)
    if len(inputs) != len(targets):
      raise RuntimeError(f'{task_name}/{split}: {len(inputs)} texts for {len(targets)} rows.')
    metadata['text_file'] = arrays_lib.TEXT_FILE
  meta = arrays_lib.write_split(output_dir, arrays, metadata)
  if write_text:
    arrays_lib.write_text(output_dir, inputs, references)
  preprocessors.reset_overlong_counts(task_name)
  return meta


def parse_feature_lengths(text: str) -> dict[str, int]:
  """``'inputs=128,targets=64'`` (or ``inputs:128,...``) -> dict; a single ``'128'`` sets both."""
  try:
    if text.strip().isdigit():
      return {'inputs': int(text), 'targets': int(text)}
    pairs = [item.replace(':', '=').split('=') for item in text.split(',') if item.strip()]
    lengths = {k.strip(): int(v) for k, v in pairs}
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'--feature_lengths={text!r}: expected inputs=N,targets=M (or one number)') from None
  if set(lengths) != {'inputs', 'targets'} or min(lengths.values()) < 2:
    raise argparse.ArgumentTypeError(
        f'--feature_lengths={text!r}: give inputs and targets, each >= 2 (a token and EOS).')
  return lengths


@errors.command('python -m padir.data.export')
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m padir.data.export',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--task', required=True)
  parser.add_argument('--split', help='one split (same as --splits=SPLIT)')
  parser.add_argument('--splits', default='train,validation,test')
  parser.add_argument('--feature_lengths', type=parse_feature_lengths,
                      default={'inputs': 128, 'targets': 128})
  parser.add_argument('--text', default='auto', choices=('auto', 'yes', 'no'),
                      help='write text.jsonl (sources and references); auto: not for train')
  parser.add_argument('--converter', default='padir', choices=sorted(features.FEATURE_CONVERTERS))
  parser.add_argument('--output_dir', required=True)
  parser.add_argument('--module', action='append', default=[],
                      help='import this module first (to register tasks); repeatable')
  args = parser.parse_args(argv)
  for module in args.module:
    importlib.import_module(module)
  write_text = {'auto': None, 'yes': True, 'no': False}[args.text]
  for split in ([args.split] if args.split else args.splits.split(',')):
    start = time.perf_counter()
    out = os.path.join(args.output_dir, split)
    meta = export_split(args.task, split, args.feature_lengths, out, args.converter, write_text)
    overlong = ', '.join(f'{k} {v}' for k, v in sorted(meta['overlong'].items())) or 'none'
    print(f'{args.task}/{split}: {meta["num_examples"]} examples -> {out} '
          f'({time.perf_counter() - start:.1f}s; over-long: {overlong}; '
          f'vocabulary {meta["vocabulary"]["spec"]})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
