"""End-to-end tests of ``padir.train``: outputs, corrupt checkpoints, NaN stop, kill -9 resume,
and a 2-process jax.distributed run. Subprocess runs use a TensorFlow-free interpreter."""

import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from padir import builders
from padir import checkpoints
from padir import datasets
from padir import eval as eval_lib
from padir import infer
from padir import optimizers
from padir import partitioning
from padir import train
from padir import trainer as trainer_lib

import train_testlib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs padir.train with TensorFlow and seqio made unimportable: the exported-array path.
NO_TF_MAIN = ("import sys; sys.modules['tensorflow'] = None; sys.modules['seqio'] = None; "
              "from padir import train; sys.exit(train.main(sys.argv[1:]))")


@pytest.fixture(scope='module')
def data_dir(tmp_path_factory):
  return train_testlib.write_reverse_task(str(tmp_path_factory.mktemp('reverse')))


def _train_in_process(flags: list[str]) -> tuple[int, str]:
  """``padir train`` with these flags in this process: (exit code, its console lines)."""
  lines = []
  code = train.run_main(flags, lambda: train.train(print_fn=lines.append), 'padir train',
                        train.__doc__)
  return code, '\n'.join(lines)


@pytest.fixture(scope='module')
def trained(data_dir, tmp_path_factory):
  """A 4-step run (checkpoints 2 and 4, validation loss and BLEU at step 4) and its output."""
  model_dir = str(tmp_path_factory.mktemp('trained') / 'run')
  # One device for training (fast compiles); eval and infer then restore onto all 8.
  flags = train_testlib.train_flags(data_dir, model_dir, 4, period=2,
                                    extra=['--gin.padir.partitioning.Partitioner.num_devices=1'])
  code, out = _train_in_process(flags)
  assert code == 0, out
  return model_dir, out, flags


def test_train_writes_outputs(trained):
  model_dir, out, _ = trained
  assert 'step 4/4' in out and 'tok/s' in out and 'ETA' in out
  assert 'eval at step 4: loss' in out and 'bleu' in out
  assert {'2', '4', 'config.gin', 'operative_config.gin', 'model-info.txt',
          'metrics.jsonl'} <= set(os.listdir(model_dir))
  assert 'total_steps = %TRAIN_STEPS' in open(os.path.join(model_dir, 'config.gin')).read()
  operative = open(os.path.join(model_dir, 'operative_config.gin')).read()
  assert 'padir.optimizers.adafactor' in operative and 'emb_dim = 32' in operative
  records = [json.loads(line) for line in open(os.path.join(model_dir, 'metrics.jsonl'))]
  assert [r['step'] for r in records if r['split'] == 'train'] == [1, 2, 3, 4]
  for key in ('loss', 'learning_rate', 'steps_per_sec', 'tokens_per_sec', 'eta_seconds',
              'length_accuracy', 'grad_norm'):
    assert key in records[0]
  evals = [r for r in records if r['split'] == 'eval']
  assert [r['step'] for r in evals] == [4]
  for key in ('loss', 'bleu', 'chrf', 'mean_iterations', 'num_examples'):
    assert key in evals[0]
  assert evals[0]['num_examples'] == 8
  if importlib.util.find_spec('tensorboardX') is not None:
    events = os.listdir(os.path.join(model_dir, 'tensorboard', 'train'))
    assert any(f.startswith('events') for f in events)
  else:
    assert 'TensorBoard summaries are off: install tensorboardX' in out
  assert 'total parameters' in open(os.path.join(model_dir, 'model-info.txt')).read()


def test_length_buckets_train_every_width_and_resume(data_dir, tmp_path):
  """``length_buckets`` through gin: every width is compiled before training, the run trains
  and resumes from its checkpoint with the same buckets."""
  model_dir = str(tmp_path / 'run')
  extra = ['--gin.padir.partitioning.Partitioner.num_devices=1',
           '--gin.train/padir.datasets.DatasetConfig.length_buckets=(4, 6)',
           '--gin.padir.train.train.infer_eval_dataset_cfg=None']
  code, out = _train_in_process(train_testlib.train_flags(data_dir, model_dir, 3, period=2,
                                                         extra=extra))
  assert code == 0, out
  assert 'length buckets 4/6/8' in out and 'step 3/3' in out
  code, out = _train_in_process(train_testlib.train_flags(data_dir, model_dir, 5, period=2,
                                                         extra=extra))
  assert code == 0, out
  assert 'Resumed from' in out and 'step 5/5' in out


def test_eval_and_infer_commands(trained, data_dir, tmp_path, capsys):
  model_dir, _, _ = trained
  out_dir = str(tmp_path / 'eval')
  code = eval_lib.main(train_testlib.run_flags('eval', data_dir, [
      f"--gin.CHECKPOINT_PATH='{model_dir}'", f"--gin.EVAL_OUTPUT_DIR='{out_dir}'",
      '--gin.EVAL_BATCH_SIZE=8']))
  assert code == 0, capsys.readouterr().err
  result = json.load(open(os.path.join(out_dir, 'eval-validation-4.json')))
  assert result['step'] == 4 and result['metrics']['num_examples'] == 16
  assert {'loss', 'bleu', 'chrf'} <= set(result['metrics'])
  # 16 examples in batches of 8: the second batch times the decoder without compilation.
  m = result['metrics']
  assert 0 < m['first_batch_seconds'] < m['decode_seconds']
  assert m['steady_examples_per_sec'] == pytest.approx(
      8 / (m['decode_seconds'] - m['first_batch_seconds']))
  header, *rows = open(os.path.join(out_dir, 'eval-validation-4.tsv')).read().splitlines()
  assert header.split('\t') == ['source', 'reference', 'prediction'] and len(rows) == 16

  # Lines end at \n only: U+2028/2029, U+0085, form feed and vertical tab stay inside a line;
  # a BOM and \r\n ends are removed; empty and blank lines give empty predictions.
  sources = tmp_path / 'sources.txt'
  sources.write_bytes('\ufeffabc\r\nhello world\n\n'.encode() + b'x' * 30 + '\na\u2028b\x0cc'
                      '\x0bd\u0085e\u2029f\n   \nxyz'.encode())
  infer_dir = str(tmp_path / 'infer')
  code = infer.main(train_testlib.run_flags('infer', data_dir, [
      f"--gin.CHECKPOINT_PATH='{model_dir}/2'", f"--gin.INFER_OUTPUT_DIR='{infer_dir}'",
      f"--gin.INFER_INPUT_FILE='{sources}'", '--gin.INFER_BATCH_SIZE=8']))
  assert code == 0, capsys.readouterr().err
  assert '3 of 5 sources were longer than 7 tokens' in capsys.readouterr().out
  header, *rows = open(os.path.join(infer_dir, 'sources-2.tsv'), newline='').read().split('\n')
  assert header == 'source\tprediction' and rows[-1] == ''
  cells = [r.split('\t') for r in rows[:-1]]
  assert [c[0] for c in cells] == ['abc', 'hello world', '', 'x' * 30, 'a b c d e f', '', 'xyz']
  assert cells[2][1] == cells[5][1] == ''  # nothing invented for an empty or blank line
  latin1 = tmp_path / 'latin1.txt'
  latin1.write_bytes(b'ok\nbad \xff byte\n')
  code = infer.main(train_testlib.run_flags('infer', data_dir, [
      f"--gin.CHECKPOINT_PATH='{model_dir}/2'", f"--gin.INFER_OUTPUT_DIR='{infer_dir}'",
      f"--gin.INFER_INPUT_FILE='{latin1}'", '--gin.INFER_BATCH_SIZE=8']))
  assert code == 1
  assert f'{latin1}, line 2: not UTF-8 (byte 0xff at column 5)' in capsys.readouterr().err

  # A checkpoint refuses another vocabulary with a clear message.
  code = infer.main(train_testlib.run_flags('infer', data_dir, [
      f"--gin.CHECKPOINT_PATH='{model_dir}'", f"--gin.INFER_OUTPUT_DIR='{infer_dir}'",
      f"--gin.INFER_INPUT_FILE='{sources}'", "--gin.VOCABULARY='byte:9'"]))
  assert code == 1
  assert 'vocabulary differs' in capsys.readouterr().err


def test_resume_survives_a_corrupt_checkpoint(trained, tmp_path, capsys):
  source_dir, _, flags = trained
  model_dir = str(tmp_path / 'copy')
  shutil.copytree(source_dir, model_dir)
  flags = [f.replace(source_dir, model_dir) for f in flags]
  flags += ['--gin.padir.train.train.infer_eval_dataset_cfg=None',
            '--gin.padir.train.train.train_eval_dataset_cfg=None']
  # Corrupt the newest checkpoint: it is reported and training redoes steps 3-4 from step 2.
  for root, _, files in os.walk(os.path.join(model_dir, '4', 'params')):
    for name in files:
      if os.sep + 'd' in root[len(model_dir):] and os.path.getsize(os.path.join(root, name)):
        with open(os.path.join(root, name), 'r+b') as f:
          f.truncate(1)
  assert train.main(flags) == 0
  out = capsys.readouterr().out
  assert 'is unreadable' in out and 'Resumed from' in out and '(step 2)' in out
  assert 'step 4/4' in out
  assert os.path.isdir(os.path.join(model_dir, 'corrupt_checkpoints', '4'))
  assert os.path.isdir(os.path.join(model_dir, '4'))
  # A finished run does nothing.
  assert train.main(flags) == 0
  assert 'nothing to do' in capsys.readouterr().out


def test_another_optimizer_is_refused_and_nothing_is_lost(trained, tmp_path, capsys):
  source_dir, _, flags = trained
  model_dir = str(tmp_path / 'copy')
  shutil.copytree(source_dir, model_dir)
  config = open(os.path.join(model_dir, 'config.gin')).read()
  flags = [f.replace(source_dir, model_dir) for f in flags] + [
      '--gin.TRAIN_STEPS=6', '--gin.OPTIMIZER=@padir.optimizers.adamw()',
      '--gin.padir.optimizers.adamw.learning_rate=0.001']
  assert train.main(flags) == 1
  err = capsys.readouterr().err
  assert f'padir train: {model_dir}/4 was saved with another optimizer (OPTIMIZER = ' in err
  assert '@padir.optimizers.adamw() here' in err and 'init_from' in err
  assert len(err.strip().splitlines()) == 2, err
  assert sorted(os.listdir(model_dir)) == sorted(os.listdir(source_dir))  # nothing moved
  assert open(os.path.join(model_dir, 'config.gin')).read() == config  # the trained config
  mgr = checkpoints.CheckpointManager(model_dir)
  assert mgr.all_steps() == [2, 4]
  mgr.close()


class _NanOnMarker:
  """A model whose loss is NaN on batches holding the token MARKER (delegates the rest)."""

  MARKER = 3

  def __init__(self, model):
    self._model = model

  def __getattr__(self, name):
    return getattr(self._model, name)

  def loss_fn(self, params, batch, rng):
    loss, metrics = self._model.loss_fn(params, batch, rng)
    bad = jnp.any(batch['encoder_input_tokens'] == self.MARKER)
    loss = jnp.where(bad, jnp.nan, loss)
    return loss, dict(metrics, loss=loss)


def test_nan_loss_stops_without_saving_a_bad_checkpoint(tmp_path):
  data_dir = train_testlib.write_reverse_task(str(tmp_path / 'data'), num_train=32)
  train_split = os.path.join(data_dir, 'train')
  tokens = np.load(os.path.join(train_split, 'encoder_input_tokens.npy'))
  tokens[24:, 0] = _NanOnMarker.MARKER  # the 4th batch (rows 24-31, no shuffling)
  np.save(os.path.join(train_split, 'encoder_input_tokens.npy'), tokens)
  model = _NanOnMarker(builders.build_model(
      vocabulary=train_testlib.VOCABULARY, task_feature_lengths={'inputs': 8, 'targets': 8},
      network={'size': 'tiny', 'overrides': dict(emb_dim=32, num_heads=2, head_dim=16,
                                                 mlp_dim=64, num_encoder_layers=1,
                                                 num_decoder_layers=1)}))
  data = datasets.DatasetConfig(data_dir, 'train', 8, shuffle=False)
  model_dir = str(tmp_path / 'nan')
  calls = []
  with pytest.raises(trainer_lib.NonFiniteLossError, match='loss is nan at step 4'):
    train.train(model=model, train_dataset_cfg=data,
                partitioner=partitioning.Partitioner((-1, 1, 1), num_devices=1),
                optimizer=optimizers.adafactor(learning_rate=0.01), model_dir=model_dir,
                total_steps=6, log_period=3, print_fn=lambda _: None,
                checkpoint_cfg=checkpoints.CheckpointConfig(period=2), tensorboard=False,
                step_callback=lambda step, metrics: calls.append((step, metrics)))
  # The callback sees every step, with the logged metrics at the log step (3) only; the
  # checkpoint at step 4 finds the NaN before anything of step 4 is logged.
  assert [step for step, _ in calls] == [1, 2, 3, 4]
  assert [metrics is None for _, metrics in calls] == [True, True, False, True]
  assert np.isfinite(calls[2][1]['loss']) and 'steps_per_sec' in calls[2][1]
  mgr = checkpoints.CheckpointManager(model_dir)
  assert mgr.all_steps() == [2]
  mgr.close()


def _subprocess_env(tmp_path, devices):
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  env['PYTHONPATH'] = REPO + os.pathsep + env.get('PYTHONPATH', '')
  env['JAX_COMPILATION_CACHE_DIR'] = str(tmp_path / 'jax_cache')
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  env['PYTHONUNBUFFERED'] = '1'
  return env


def test_kill_9_and_sigterm_then_rerun_resume_bit_identically(data_dir, tmp_path):
  env = _subprocess_env(tmp_path, 1)
  steps = 20
  command = lambda d: [sys.executable, '-c', NO_TF_MAIN, *train_testlib.train_flags(
      data_dir, str(tmp_path / d), steps, period=2,
      extra=['--gin.padir.train.train.infer_eval_dataset_cfg=None',
             '--gin.padir.train.train.train_eval_dataset_cfg=None'])]
  reference = subprocess.run(command('straight'), env=env, capture_output=True, text=True,
                             timeout=300)
  assert reference.returncode == 0, reference.stderr[-3000:]

  proc = subprocess.Popen(command('killed'), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  killed_at = None
  for line in proc.stdout:
    # Kill -9 mid-run once a checkpoint has been committed (its directory renamed into place).
    if line.startswith('step ') and any(n.isdigit() for n in os.listdir(tmp_path / 'killed')):
      proc.send_signal(signal.SIGKILL)
      killed_at = line
      break
  proc.wait(timeout=60)
  assert killed_at is not None and proc.returncode == -signal.SIGKILL, 'the run ended first'
  interrupted = checkpoints.CheckpointManager(str(tmp_path / 'killed'))
  assert 0 < max(interrupted.all_steps()) < steps
  interrupted.close()

  # Rerun; once it has resumed and trained a step, SIGTERM: it saves at that step and exits 143.
  proc = subprocess.Popen(command('killed'), env=env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True)
  seen = []
  for line in proc.stdout:
    seen.append(line)
    if line.startswith('step ') and any(s.startswith('Resumed from') for s in seen):
      proc.send_signal(signal.SIGTERM)
      break
  rest = proc.communicate(timeout=120)[0]
  assert proc.returncode == train.SIGTERM_EXIT_CODE, ''.join(seen) + rest
  assert 'SIGTERM: saved a checkpoint at step' in rest
  saved_at = int(rest.split('SIGTERM: saved a checkpoint at step ')[1].split()[0])
  interrupted = checkpoints.CheckpointManager(str(tmp_path / 'killed'))
  assert saved_at in interrupted.all_steps() and saved_at < steps
  interrupted.close()

  rerun = subprocess.run(command('killed'), env=env, capture_output=True, text=True, timeout=300)
  assert rerun.returncode == 0, rerun.stderr[-3000:]
  assert f'(step {saved_at})' in rerun.stdout
  straight, _, s1 = checkpoints.load_params(str(tmp_path / 'straight'))
  resumed, _, s2 = checkpoints.load_params(str(tmp_path / 'killed'))
  assert s1 == s2 == steps
  flat_a = {k: np.asarray(v) for k, v in _flatten(straight).items()}
  flat_b = {k: np.asarray(v) for k, v in _flatten(resumed).items()}
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(flat_a[key], flat_b[key], err_msg=key)


def test_chaos_ten_kills_and_a_ctrl_c_end_bitwise_equal_to_a_straight_run(data_dir, tmp_path):
  """SIGKILL at 10 random steps (saves in flight), then Ctrl-C, then finish: same parameters."""
  env = _subprocess_env(tmp_path, 1)
  steps = 14
  spec = {'steps': steps, 'kills': 10, 'seed': 13, 'straight': str(tmp_path / 'straight'),
          'chaos': str(tmp_path / 'chaos'),
          'flags': [f for f in train_testlib.train_flags(
              data_dir, 'unused', steps, period=1,
              extra=['--gin.padir.train.train.infer_eval_dataset_cfg=None',
                     '--gin.padir.train.train.train_eval_dataset_cfg=None',
                     '--gin.padir.train.train.tensorboard=False',
                     '--gin.padir.models.PadirModel.num_train_stages=1'])  # quicker traces
                    if not f.startswith(('--gin.MODEL_DIR', '--gin.TRAIN_STEPS'))]}
  runner = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'train_chaos.py')
  done = subprocess.run([sys.executable, runner, json.dumps(spec)], env=env, capture_output=True,
                        text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  summary = json.loads(done.stdout.strip().splitlines()[-1])
  assert summary['straight']['code'] == 0, summary['straight']['tail']
  for kill, target in zip(summary['kills'], summary['targets']):
    assert kill['code'] == -signal.SIGKILL and kill['stopped_at'] == target, kill['tail']
  ctrl_c = summary['ctrl_c']
  assert ctrl_c['code'] == 130, ctrl_c['tail']
  assert f'Ctrl-C: saved a checkpoint at step {ctrl_c["stopped_at"]}' in ctrl_c['tail']
  assert summary['final']['code'] == 0 and summary['final']['resumed'] == ctrl_c['stopped_at']
  straight, _, s1 = checkpoints.load_params(spec['straight'])
  resumed, _, s2 = checkpoints.load_params(spec['chaos'])
  assert s1 == s2 == steps
  flat_a, flat_b = _flatten(straight), _flatten(resumed)
  assert flat_a.keys() == flat_b.keys()
  for key in flat_a:
    np.testing.assert_array_equal(np.asarray(flat_a[key]), np.asarray(flat_b[key]), err_msg=key)
  # metrics.jsonl has each step once: the steps redone after a kill replaced their records.
  records = [json.loads(line) for line in open(os.path.join(spec['chaos'], 'metrics.jsonl'))]
  assert [r['step'] for r in records if r['split'] == 'train'] == list(range(1, steps + 1))


def _flatten(tree, prefix=''):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, f'{prefix}{k}/'))
    else:
      out[prefix + k] = v
  return out


def _free_port():
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_process_distributed_run_writes_one_checkpoint(data_dir, tmp_path):
  env = _subprocess_env(tmp_path, 4)
  port = _free_port()
  model_dir = str(tmp_path / 'multi')
  flags = train_testlib.train_flags(
      data_dir, model_dir, 3, period=3,
      extra=['--gin.padir.train.train.infer_eval_dataset_cfg=None',
             '--gin.padir.train.train.train_eval_dataset_cfg=None'])
  procs = [subprocess.Popen(
      [sys.executable, '-c', NO_TF_MAIN, *flags, f'--coordinator_address=127.0.0.1:{port}',
       '--num_processes=2', f'--process_id={i}'],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  outputs = []
  try:
    for p in procs:
      outputs.append(p.communicate(timeout=400)[0])
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  assert [p.returncode for p in procs] == [0, 0], '\n'.join(o[-3000:] for o in outputs)
  assert "mesh {'data': 8, 'fsdp': 1, 'tensor': 1}" in outputs[0]
  assert 'step 3/3' in outputs[0] and 'step 3/3' not in outputs[1]  # only process 0 logs
  mgr = checkpoints.CheckpointManager(model_dir)
  assert mgr.all_steps() == [3]
  mgr.close()
  params, meta, _ = checkpoints.load_params(model_dir)
  assert meta['step'] == 3 and np.isfinite(
      np.asarray(params['decoder']['decoder_norm']['scale'])).all()
