"""padir outside padir.data's seqio modules runs where TensorFlow cannot be imported.

A subprocess makes tensorflow, tensorflow_text, tensorflow_datasets and seqio unimportable,
imports every padir module, and reads an exported split through the TF-free iterator, as a
trainer on a machine without TensorFlow would. Only padir.data modules may need TensorFlow.
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap

REPO = pathlib.Path(__file__).resolve().parents[2]
TF_FREE_DATA_MODULES = ['padir.data', 'padir.data.arrays', 'padir.data.iterator',
                        'padir.data.corpus', 'padir.data.metrics', 'padir.data.vocab',
                        'padir.data.textfile', 'padir.data.train_vocab']

SCRIPT = textwrap.dedent('''
    import importlib, json, pkgutil, sys

    BLOCKED = ('tensorflow', 'tensorflow_text', 'tensorflow_datasets', 'seqio')

    class Block:
      def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in BLOCKED:
          raise ImportError(f'BLOCKED: {name}')
        return None

    sys.meta_path.insert(0, Block())
    split_dir = sys.argv[1]
    import padir
    report = {'imported': [], 'needs_tf': [], 'other_errors': []}
    for info in pkgutil.walk_packages(padir.__path__, 'padir.'):
      if info.name.endswith('__main__'):  # importing it would run it
        continue
      try:
        importlib.import_module(info.name)
        report['imported'].append(info.name)
      except ImportError as e:
        key = 'needs_tf' if 'BLOCKED' in str(e) else 'other_errors'
        report[key].append(info.name)

    from padir.data import iterator
    it = iterator.make_batch_iterator(split_dir, 'validation', 16, vocabulary='bible',
                                      process_index=0, process_count=1, seed=0)
    batch = next(it)
    report['batch'] = {k: [list(v.shape), str(v.dtype)] for k, v in batch.items()}
    report['state'] = it.get_state()
    report['loaded'] = sorted(m for m in sys.modules if m.split('.')[0] in BLOCKED)
    print(json.dumps(report))
''')


def test_padir_imports_and_reads_exported_arrays_without_tensorflow(bible_validation_export):
  env = dict(os.environ)
  env['PYTHONPATH'] = os.pathsep.join(p for p in (str(REPO), env.get('PYTHONPATH')) if p)
  proc = subprocess.run(
      [sys.executable, '-c', SCRIPT, str(bible_validation_export)],
      capture_output=True, text=True, env=env, cwd=REPO, timeout=300, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  report = json.loads(proc.stdout.strip().splitlines()[-1])
  outside_data = [m for m in report['needs_tf'] if not m.startswith('padir.data')]
  assert not outside_data, f'these modules import TensorFlow or seqio: {outside_data}'
  assert 'padir.data.tasks' in report['needs_tf']  # the block works
  assert not report['loaded']
  for name in ['padir.special_ids', *TF_FREE_DATA_MODULES]:
    assert name in report['imported']
  assert report['batch'] == {k: [[16, 32], 'int32'] for k in
                             ('encoder_input_tokens', 'decoder_target_tokens',
                              'decoder_loss_weights')}
  assert report['state']['task'] == 'bible_es_en'
