"""Fixtures for the data-layer tests."""

import gzip

import numpy as np
import pytest


def _write_lines(path, lines, gz=False):
  data = b''.join(line + b'\n' for line in lines)
  path.write_bytes(gzip.compress(data) if gz else data)
  return path


@pytest.fixture
def write_lines():
  """write_lines(path, [b'raw line', ...], gz=False): a file of raw byte lines."""
  return _write_lines


@pytest.fixture
def synthetic_split(tmp_path):
  """A small exported split made without TensorFlow: row i holds token i + 3 everywhere."""
  from padir.data import arrays  # pylint: disable=g-import-not-at-top
  n, length = 103, 6
  ids = (np.arange(n, dtype=np.int32)[:, None] + 3) * np.ones((1, length), np.int32)
  meta = {
      'task': 'synthetic', 'split': 'train', 'converter': 'padir',
      'task_feature_lengths': {'inputs': length, 'targets': length},
      'vocabulary': {'kind': 'byte', 'sha256': None, 'num_real_pieces': 259,
                     'extra_ids': 100, 'vocab_size': 359, 'spec': 'byte'},
  }
  path = tmp_path / 'synthetic' / 'train'
  arrays.write_split(path, {'encoder_input_tokens': ids, 'decoder_target_tokens': ids,
                            'decoder_loss_weights': np.ones_like(ids)}, meta)
  return path


@pytest.fixture(scope='session')
def bible_validation_export(tmp_path_factory):
  """bible_es_en validation exported at lengths 32/32 (needs TensorFlow and seqio)."""
  pytest.importorskip('seqio')
  from padir.data import export  # pylint: disable=g-import-not-at-top
  out = tmp_path_factory.mktemp('export')
  export.main(['--task=bible_es_en', '--splits=validation',
               '--feature_lengths=inputs=32,targets=32', f'--output_dir={out}'])
  return out
