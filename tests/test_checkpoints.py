"""Tests of padir.checkpoints: round trip, corrupt fallback, refusals, params-only, averaging."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from padir import checkpoints
from padir import partitioning
from padir import average_checkpoints
from padir.data import vocab as vocab_lib


def _params(value):
  return {'dense': {'kernel': jnp.full((4, 8), value, jnp.float32)},
          'scale': jnp.full((8,), value, jnp.float32)}


def _abstract(tree, partitioner):
  sharding = partitioner.replicated()
  return jax.tree_util.tree_map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding), tree)


def _save_steps(directory, steps, vocabulary='byte:8', keep=None):
  mgr = checkpoints.CheckpointManager(directory, keep=keep)
  tx = optax.adamw(1e-3)
  fingerprint = vocab_lib.load_tokenizer(vocabulary).fingerprint()
  for step in steps:
    params = _params(float(step))
    mgr.save(step, params, tx.init(params), {'epoch': 0, 'step': step},
             checkpoints.make_metadata(step, fingerprint, params))
  mgr.close()
  return tx


def test_round_trip_with_data_state_and_keep(tmp_path):
  tx = _save_steps(tmp_path, [1, 2, 3], keep=2)
  mgr = checkpoints.CheckpointManager(tmp_path)
  assert mgr.all_steps() == [2, 3]
  part = partitioning.Partitioner((-1, 1, 1))
  params = _params(0.0)
  restored = mgr.restore_latest(_abstract(params, part), _abstract(tx.init(params), part),
                                vocabulary='byte:8')
  mgr.close()
  assert restored.step == 3
  assert restored.data_state == {'epoch': 0, 'step': 3}
  np.testing.assert_array_equal(np.asarray(restored.params['scale']), np.full(8, 3.0))
  assert restored.metadata['vocabulary']['kind'] == 'byte'
  assert restored.metadata['param_shapes']['dense/kernel'] == [4, 8]


def _corrupt(step_dir):
  """Truncates every array data file of a checkpoint's params."""
  count = 0
  for root, _, files in os.walk(os.path.join(step_dir, 'params')):
    for name in files:
      path = os.path.join(root, name)
      if '/d' in root.replace(str(step_dir), '') and os.path.getsize(path) > 8:
        with open(path, 'r+b') as f:
          f.truncate(os.path.getsize(path) // 2)
        count += 1
  assert count, 'no data file found to corrupt'


def test_corrupt_latest_is_reported_and_the_previous_used(tmp_path):
  tx = _save_steps(tmp_path, [1, 2])
  _corrupt(tmp_path / '2')
  part = partitioning.Partitioner((-1, 1, 1))
  params = _params(0.0)
  lines = []
  mgr = checkpoints.CheckpointManager(tmp_path)
  restored = mgr.restore_latest(_abstract(params, part), _abstract(tx.init(params), part),
                                report=lines.append)
  assert restored.step == 1
  assert len(lines) == 1 and 'unreadable' in lines[0] and '/2' in lines[0]
  assert mgr.all_steps() == [1]
  assert (tmp_path / checkpoints.CORRUPT_DIR / '2').is_dir()
  # Step 2 can be written again.
  mgr.save(2, params, tx.init(params), {}, checkpoints.make_metadata(2, None, params))
  mgr.close()


def test_vocabulary_and_shape_mismatches_are_refused(tmp_path):
  tx = _save_steps(tmp_path, [1])
  part = partitioning.Partitioner((-1, 1, 1))
  params = _params(0.0)
  mgr = checkpoints.CheckpointManager(tmp_path)
  with pytest.raises(ValueError, match='vocabulary differs.*extra_ids: 8 there, 9 here'):
    mgr.restore_latest(_abstract(params, part), _abstract(tx.init(params), part),
                       vocabulary='byte:9')
  other = {'dense': {'kernel': jnp.zeros((4, 16))}, 'scale': jnp.zeros((8,))}
  with pytest.raises(ValueError, match=r'other parameter shapes \(dense/kernel'):
    mgr.restore_latest(_abstract(other, part), _abstract(tx.init(other), part))
  mgr.close()
  assert (tmp_path / '1').is_dir()  # a refusal never moves the checkpoint


def test_load_params_from_model_dir_or_step_dir(tmp_path):
  _save_steps(tmp_path, [1, 2])
  part = partitioning.Partitioner((2, 1, 4))
  params = _params(0.0)
  target = _abstract(params, part)
  latest, meta, step = checkpoints.load_params(str(tmp_path), target, vocabulary='byte:8')
  assert step == 2 and meta['step'] == 2
  one, _, step = checkpoints.load_params(str(tmp_path / '1'), target)
  assert step == 1
  np.testing.assert_array_equal(np.asarray(one['scale']), np.full(8, 1.0))
  assert latest['scale'].sharding == part.replicated()
  (tmp_path / 'empty').mkdir()
  with pytest.raises(ValueError, match='holds no checkpoint'):
    checkpoints.load_params(str(tmp_path / 'empty'))
  with pytest.raises(ValueError, match='does not exist'):
    checkpoints.load_params(str(tmp_path / 'missing'))


def test_average_checkpoints_command(tmp_path, capsys):
  _save_steps(tmp_path / 'run', [1, 2, 3, 4])
  out = tmp_path / 'avg'
  code = average_checkpoints.main([f'--model_dir={tmp_path / "run"}', f'--output_dir={out}',
                                   '--num_checkpoints=3'])
  assert code == 0
  assert 'steps [2, 3, 4]' in capsys.readouterr().out
  params, meta, step = checkpoints.load_params(str(out))
  assert step == 4 and meta['averaged_steps'] == [2, 3, 4]
  np.testing.assert_allclose(np.asarray(params['dense']['kernel']), np.full((4, 8), 3.0))
  assert average_checkpoints.main([f'--model_dir={tmp_path / "run"}', f'--output_dir={out}',
                                   '--num_checkpoints=9']) == 1
  assert 'cannot average the last 9' in capsys.readouterr().err


def _restore(directory, tx, **kwargs):
  part = partitioning.Partitioner((-1, 1, 1))
  params = _params(0.0)
  mgr = checkpoints.CheckpointManager(directory)
  try:
    return mgr.restore_latest(_abstract(params, part), _abstract(tx.init(params), part), **kwargs)
  finally:
    mgr.close()


def _save_with_opt_shapes(directory, steps, tx):
  mgr = checkpoints.CheckpointManager(directory, keep=None)
  for step in steps:
    params = _params(float(step))
    state = tx.init(params)
    mgr.save(step, params, state, {}, checkpoints.make_metadata(
        step, None, params, abstract_opt_state=state,
        extra={'gin_config': 'OPTIMIZER = @padir.optimizers.adamw()\n'}))
  mgr.close()


@pytest.mark.parametrize('recorded', [True, False], ids=['new_metadata', 'old_metadata'])
def test_another_optimizer_is_refused_and_nothing_moves(tmp_path, recorded):
  if recorded:
    _save_with_opt_shapes(tmp_path, [1, 2], optax.adamw(1e-3))
  else:
    _save_steps(tmp_path, [1, 2])  # adamw, metadata without optimizer-state shapes
  before = sorted(os.listdir(tmp_path))
  with pytest.raises(checkpoints.IncompatibleCheckpointError) as err:
    _restore(tmp_path, optax.adafactor(1e-3),
             gin_config='OPTIMIZER = @padir.optimizers.adafactor()\n')
  message = str(err.value)
  assert 'another optimizer' in message and 'Nothing was moved' in message
  assert 'init_from' in message and len(message.splitlines()) == 2
  if recorded:
    assert 'adamw() there, @padir.optimizers.adafactor() here' in message
  assert sorted(os.listdir(tmp_path)) == before  # nothing moved, nothing deleted
  assert not (tmp_path / checkpoints.CORRUPT_DIR).exists()
  assert _restore(tmp_path, optax.adamw(1e-3)).step == 2  # the right optimizer still resumes


def test_no_readable_checkpoint_stops_unless_told_to_start_over(tmp_path):
  tx = _save_steps(tmp_path, [1, 2])
  _corrupt(tmp_path / '1')
  _corrupt(tmp_path / '2')
  with pytest.raises(checkpoints.NoReadableCheckpointError,
                     match=r'No checkpoint .* can be read \(steps \[1, 2\]'):
    _restore(tmp_path, tx)
  assert (tmp_path / '1').is_dir() and (tmp_path / '2').is_dir()  # nothing moved
  lines = []
  assert _restore(tmp_path, tx, start_over_if_unreadable=True, report=lines.append) is None
  assert len(lines) == 2 and all('starting over from step 0' in line for line in lines)
  assert sorted(os.listdir(tmp_path / checkpoints.CORRUPT_DIR)) == ['1', '2']


def test_quarantine_never_overwrites_an_earlier_one(tmp_path):
  tx = _save_steps(tmp_path, [1, 2])
  earlier = tmp_path / checkpoints.CORRUPT_DIR / '2'
  earlier.mkdir(parents=True)
  (earlier / 'keep.txt').write_text('an earlier quarantined copy')
  _corrupt(tmp_path / '2')
  lines = []
  assert _restore(tmp_path, tx, report=lines.append).step == 1
  assert (earlier / 'keep.txt').read_text() == 'an earlier quarantined copy'
  assert (tmp_path / checkpoints.CORRUPT_DIR / '2.1' / 'params').is_dir()
  assert lines[0].endswith(f'moved to {tmp_path}/{checkpoints.CORRUPT_DIR}/2.1, resuming from '
                           'step 1.')


def test_unreadable_checkpoint_is_quiet_and_names_the_previous_step(tmp_path, capfd):
  _save_steps(tmp_path, [1, 2, 3])
  _corrupt(tmp_path / '3')
  _corrupt(tmp_path / '2')
  with pytest.raises(checkpoints.UnreadableCheckpointError) as err:
    checkpoints.load_params(str(tmp_path))
  message = str(err.value)
  assert len(message.splitlines()) == 2 and len(message) < 600, message
  assert message.startswith(f'Checkpoint {tmp_path}/3 cannot be read (')
  assert 'tensorstore_spec' not in message
  assert f'previous readable checkpoint is step 1: {tmp_path}/1' in message
  captured = capfd.readouterr()
  assert 'Event loop is closed' not in captured.err and 'absl' not in captured.err
  assert (tmp_path / '3').is_dir()  # eval and infer never move anything
