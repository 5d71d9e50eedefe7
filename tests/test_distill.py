"""Tests for padir.distill: a tiny AR teacher distils a registered task, in shards, resumably."""

import csv
import json
import os
import sys

import gin
import numpy as np
import pytest

from padir import distill
from padir import train as train_lib
from padir.data import arrays as arrays_lib
from padir.data import export
from padir.data import tasks

import train_testlib as lib

BASE = 'distill_test_reverse'


def _write_task(root):
  """A reverse-the-letters TSV task (byte vocabulary), registered and exported."""
  rng = np.random.default_rng(0)
  paths = {}
  for split, n in (('train', 40), ('validation', 8)):
    words = [''.join(rng.choice(list('abcdef'), size=int(rng.integers(2, 6)))) for _ in range(n)]
    paths[split] = os.path.join(root, f'{split}.tsv')
    with open(paths[split], 'w', encoding='utf-8') as f:
      f.write('source\ttarget\talt\n')
      for w in words:
        f.write(f'{w}\t{w[::-1]}\t{w[::-1].upper()}\n')
  tasks.register_tsv_task(BASE, train=paths['train'], validation=paths['validation'],
                          reference_columns=['target', 'alt'], vocabulary=lib.VOCABULARY)
  data = os.path.join(root, 'data')
  lengths = {'inputs': lib.LENGTH, 'targets': lib.LENGTH}
  for split in ('train', 'validation'):
    export.export_split(BASE, split, lengths, os.path.join(data, split), write_text=True)
  return data


def _flags(data, teacher, out, extra=()):
  return lib.run_flags('distill', data, [
      f"--gin.CHECKPOINT_PATH='{teacher}'", f"--gin.DISTILL_OUTPUT_DIR='{out}'",
      '--gin.DISTILL_BATCH_SIZE=8', '--gin.padir.distill.distill.chunk_batches=2', *extra],
      objective='ar')


@pytest.fixture(scope='module')
def teacher(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('distill'))
  data = _write_task(root)
  model_dir = os.path.join(root, 'teacher')
  assert train_lib.main(lib.train_flags(data, model_dir, 2, objective='ar', period=2)) == 0
  yield root, data, model_dir
  gin.clear_config()


def test_distill_shards_merge_register_export_and_resume(teacher, capsys):
  root, data, model_dir = teacher
  out = os.path.join(root, 'out')
  shard = lambda i: ['--gin.padir.distill.distill.num_shards=2',
                     f'--gin.padir.distill.distill.shard_index={i}']
  assert distill.main(_flags(data, model_dir, out, shard(0))) == 0
  assert 'Waiting for the other shards' in capsys.readouterr().out
  assert not os.path.exists(os.path.join(out, 'distilled-train.tsv'))
  # 40 rows in batches of 8: shard 0 has batches 0, 2, 4 in two chunks.
  parts = sorted(os.listdir(os.path.join(out, 'parts')))
  assert parts == ['train-00000-of-00002.chunk-00000.jsonl',
                   'train-00000-of-00002.chunk-00001.jsonl', 'train-00000-of-00002.done']
  assert distill.main(_flags(data, model_dir, out, shard(1))) == 0
  printed = capsys.readouterr().out
  assert f'task {BASE}_distilled' in printed

  summary = json.load(open(os.path.join(out, distill.SUMMARY_FILE), encoding='utf-8'))
  assert summary['base_task'] == BASE and summary['registered']
  assert summary['num_rows'] + summary['num_empty'] == 40
  assert summary['decode']['decode_config']['method'] == 'beam'
  with open(os.path.join(out, 'distilled-train.tsv'), encoding='utf-8') as f:
    rows = list(csv.reader(f, delimiter='\t'))
  assert rows[0] == ['source', 'teacher'] and len(rows) == summary['num_rows'] + 1
  # Rows come back in the split's order (shards interleave by batch).
  train_text = arrays_lib.ArrayDataset.load(os.path.join(data, 'train')).text()
  sources = [t['inputs'] for t in train_text]
  kept = [r[0] for r in rows[1:]]
  assert kept == [s for s in sources if s in set(kept)]

  # The distilled task is registered and exported: train from the teacher, validation with
  # the base task's human references.
  assert f'{BASE}_distilled' in tasks.seqio.TaskRegistry.names()
  train = arrays_lib.ArrayDataset.load(os.path.join(out, 'arrays', 'train'))
  assert train.metadata['task'] == f'{BASE}_distilled'
  assert train.num_examples == summary['num_rows']
  valid = arrays_lib.ArrayDataset.load(os.path.join(out, 'arrays', 'validation')).text()
  base_valid = arrays_lib.ArrayDataset.load(os.path.join(data, 'validation')).text()
  assert valid == base_valid

  # A finished distillation is not redone, and the user's task module is still imported
  # (it registers the base task that the distilled task is registered from again).
  module = 'distill_test_user_tasks'
  with open(os.path.join(root, f'{module}.py'), 'w', encoding='utf-8') as f:
    f.write('IMPORTED = True\n')
  sys.path.insert(0, root)
  try:
    assert distill.main(_flags(data, model_dir, out, [
        f"--gin.distill/padir.datasets.DatasetConfig.module='{module}'"])) == 0
  finally:
    sys.path.remove(root)
  assert 'already holds a finished distillation' in capsys.readouterr().out
  assert sys.modules[module].IMPORTED


def test_distill_resumes_from_saved_chunks(teacher, capsys):
  root, data, model_dir = teacher
  out = os.path.join(root, 'resume')
  parts = os.path.join(out, 'parts')
  os.makedirs(parts)
  # A previous run saved chunk 0 (batches 0-1) and died: only batches 2-4 are decoded now.
  fake = [{'source': f'saved {i}', 'teacher': f'out {i}'} for i in range(16)]
  distill._write_jsonl(os.path.join(parts, 'train-00000-of-00001.chunk-00000.jsonl'), fake)
  assert distill.main(_flags(data, model_dir, out, ['--gin.DISTILL_NUM_EXAMPLES=32'])) == 0
  assert 'decoded 16 rows' in capsys.readouterr().out
  with open(os.path.join(out, 'distilled-train.tsv'), encoding='utf-8') as f:
    lines = f.read().splitlines()
  assert lines[1] == 'saved 0\tout 0'
  assert len(lines) - 1 <= 32


def test_distill_bad_arguments(teacher, capsys):
  root, data, model_dir = teacher
  flags = _flags(data, model_dir, os.path.join(root, 'bad'),
                 ['--gin.padir.distill.distill.num_shards=2',
                  '--gin.padir.distill.distill.shard_index=2'])
  assert distill.main(flags) == 1
  assert 'shard_index=2 must be in [0, num_shards=2)' in capsys.readouterr().err
