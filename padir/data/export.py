r"""Exports task splits as numpy arrays, for training without TensorFlow.

  python -m padir.data.export --task=bible_es_en --feature_lengths=inputs=128,targets=128 \
      --output_dir=/tmp/bible_es_en [--splits=train,validation,test] [--converter=padir]

tokenises and converts each split once (in file order, no shuffling) and writes
``OUTPUT_DIR/<split>/`` as described in :mod:`padir.data.arrays`; load it with
``padir.data.arrays.ArrayDataset.load`` or ``padir.data.iterator.make_batch_iterator``.
``--module=my.tasks`` imports a module that registers your own tasks first.
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

from padir.data import arrays as arrays_lib
from padir.data import features
from padir.data import preprocessors
from padir.data import tasks


def export_split(task_name: str, split: str, feature_lengths: Mapping[str, int],
                 output_dir: str | os.PathLike[str], converter: str = 'padir') -> dict[str, Any]:
  """Writes one split of a task as arrays; returns its metadata."""
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
  return arrays_lib.write_split(output_dir, arrays, metadata)


def _parse_lengths(text: str) -> dict[str, int]:
  try:
    pairs = [item.split('=') for item in text.split(',') if item]
    return {k.strip(): int(v) for k, v in pairs}
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'--feature_lengths={text!r}: expected inputs=N,targets=M') from None


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m padir.data.export',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--task', required=True)
  parser.add_argument('--splits', default='train,validation,test')
  parser.add_argument('--feature_lengths', type=_parse_lengths,
                      default={'inputs': 128, 'targets': 128})
  parser.add_argument('--converter', default='padir', choices=sorted(features.FEATURE_CONVERTERS))
  parser.add_argument('--output_dir', required=True)
  parser.add_argument('--module', action='append', default=[],
                      help='import this module first (to register tasks); repeatable')
  args = parser.parse_args(argv)
  for module in args.module:
    importlib.import_module(module)
  for split in args.splits.split(','):
    start = time.perf_counter()
    out = os.path.join(args.output_dir, split)
    meta = export_split(args.task, split, args.feature_lengths, out, args.converter)
    overlong = ', '.join(f'{k} {v}' for k, v in sorted(meta['overlong'].items())) or 'none'
    print(f'{args.task}/{split}: {meta["num_examples"]} examples -> {out} '
          f'({time.perf_counter() - start:.1f}s; over-long: {overlong}; '
          f'vocabulary {meta["vocabulary"]["spec"]})')
  return 0


if __name__ == '__main__':
  sys.exit(main())
