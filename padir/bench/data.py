r"""Input-pipeline speed: the seqio (tf.data) pipeline against the exported-array loader.

  python -m padir.bench data [--task=bible_es_en] [--batch_size=64] [--json=out.json]

Exports the task's train split to a temporary directory, then times, after a warm-up, the
batches each source serves (examples/s) and, for the array loader, the time to produce one batch
(the trainer waits at most that long for data). Not a test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from padir import errors
from padir.data import iterator as iterator_lib


def _time_batches(it, num_batches: int, warmup: int) -> np.ndarray:
  for _ in range(warmup):
    next(it)
  times = np.empty(num_batches)
  for i in range(num_batches):
    start = time.perf_counter()
    next(it)
    times[i] = time.perf_counter() - start
  return times


def run(task: str = 'bible_es_en', batch_size: int = 64, lengths: int = 128,
        seqio_batches: int = 200, array_batches: int = 5000) -> dict[str, Any]:
  from padir.data import export  # pylint: disable=g-import-not-at-top  (seqio: TensorFlow)
  feature_lengths = {'inputs': lengths, 'targets': lengths}
  result: dict[str, Any] = {
      'task': task, 'batch_size': batch_size, 'feature_lengths': feature_lengths,
      'cpus': os.cpu_count(), 'machine': platform.machine(),
  }
  it = iterator_lib.make_batch_iterator(task, 'train', batch_size,
                                        feature_lengths=feature_lengths, seed=0,
                                        process_index=0, process_count=1)
  t = _time_batches(it, seqio_batches, warmup=20)
  result['seqio_examples_per_s'] = batch_size * len(t) / t.sum()
  del it  # stop tf.data's prefetch threads before timing the array loader
  gc.collect()
  with tempfile.TemporaryDirectory() as tmp:
    start = time.perf_counter()
    meta = export.export_split(task, 'train', feature_lengths, tmp)
    result['export_s'] = time.perf_counter() - start
    result['export_examples_per_s'] = meta['num_examples'] / result['export_s']
    it = iterator_lib.make_batch_iterator(tmp, 'train', batch_size, seed=0,
                                          process_index=0, process_count=1)
    t = _time_batches(it, array_batches, warmup=50)
  result['array_examples_per_s'] = batch_size * len(t) / t.sum()
  result['array_batch_ms'] = {'mean': 1e3 * t.mean(), 'p50': 1e3 * np.percentile(t, 50),
                              'p99': 1e3 * np.percentile(t, 99), 'max': 1e3 * t.max(),
                              'batches': len(t), 'over_1ms': int((t > 1e-3).sum())}
  return result


@errors.command('python -m padir.bench data')
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m padir.bench data',
                                   description=__doc__.split('\n')[0])
  parser.add_argument('--task', default='bible_es_en')
  parser.add_argument('--batch_size', type=int, default=64)
  parser.add_argument('--length', type=int, default=128)
  parser.add_argument('--json', help='also write the results here')
  args = parser.parse_args(argv)
  r = run(args.task, args.batch_size, args.length)
  ms = r['array_batch_ms']
  print(f'{r["task"]}, batch {r["batch_size"]}, lengths {args.length}, {r["cpus"]} CPUs')
  print(f'  seqio pipeline : {r["seqio_examples_per_s"]:>12,.0f} examples/s')
  print(f'  export (once)  : {r["export_examples_per_s"]:>12,.0f} examples/s '
        f'({r["export_s"]:.1f} s)')
  print(f'  array loader   : {r["array_examples_per_s"]:>12,.0f} examples/s; one batch: '
        f'mean {ms["mean"]:.3f} ms, p50 {ms["p50"]:.3f}, p99 {ms["p99"]:.3f}, '
        f'max {ms["max"]:.3f}; {ms["over_1ms"]} of {ms["batches"]} over 1 ms')
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(r, f, indent=2)
  return 0


if __name__ == '__main__':
  sys.exit(main())
