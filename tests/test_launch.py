"""Tests for padir.launch (rendered commands, the SLURM script, a real 2-process local job)."""

import os
import shlex
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from padir import distributed
from padir.launch import __main__ as launch_main
from padir.launch import local, slurm, tpu

TRAIN_ARGS = ['--gin_file=gin/experiments/bible_es_en_padir.gin',
              "--gin.MODEL_DIR='/runs/my run'", '--gin.TRAIN_STEPS=100']


def _remote_command(cmd):
  flag = [c for c in cmd if c.startswith('--command=')]
  assert len(flag) == 1
  return flag[0][len('--command='):]


def test_tpu_commands_quote_the_trainer_flags():
  spec = tpu.TpuSpec('pod', 'us-central2-b', 'v4-32', spot=True, project='proj')
  cmds = tpu.commands_for('all', spec, TRAIN_ARGS)
  create, install, train = cmds
  assert create[:6] == ['gcloud', 'compute', 'tpus', 'tpu-vm', 'create', 'pod']
  assert '--accelerator-type=v4-32' in create and '--spot' in create
  assert '--project=proj' in create and '--zone=us-central2-b' in create
  assert '--worker=all' in install and "'jax[tpu]'" in _remote_command(install)
  remote = shlex.split(_remote_command(train))
  assert remote[:3] == ['cd', '~', '&&']
  start = remote.index('-m')
  assert remote[start + 1] == 'padir.train'
  assert remote[start + 2:start + 2 + len(TRAIN_ARGS)] == TRAIN_ARGS
  assert tpu.commands_for('delete', spec, [])[0][4] == 'delete'
  wheel = tpu.install_commands(tpu.TpuSpec('pod', 'z', package='dist/padir-0.1.0-py3-none-any.whl'))
  assert wheel[0][4] == 'scp' and './padir-0.1.0-py3-none-any.whl' in _remote_command(wheel[1])
  with pytest.raises(ValueError, match='spot'):
    tpu.TpuSpec('pod', 'z', spot=True, preemptible=True)


def test_slurm_script_runs_the_trainer_on_every_node(tmp_path):
  script = slurm.render_sbatch(slurm.SlurmSpec(nodes=2, gpus_per_node=8, partition='gpu'),
                               TRAIN_ARGS)
  assert '#SBATCH --nodes=2' in script and '#SBATCH --gpus-per-node=8' in script
  assert '#SBATCH --partition=gpu' in script
  path = tmp_path / 'job.sbatch'
  path.write_text(script)
  assert subprocess.run(['bash', '-n', str(path)]).returncode == 0
  # Execute the script with stand-ins for scontrol, srun and python3 that record what ran.
  bin_dir = tmp_path / 'bin'
  bin_dir.mkdir()
  fakes = {
      'scontrol': 'printf "node-a\\nnode-b\\n"',
      'srun': 'shift; for i in 0 1; do SLURM_PROCID=$i "$@"; done',
      'python3': ('echo "$PADIR_COORDINATOR_ADDRESS $PADIR_NUM_PROCESSES $PADIR_PROCESS_ID"; '
                  'printf "%s\\n" "$@"'),
  }
  for name, body in fakes.items():
    f = bin_dir / name
    f.write_text(f'#!/usr/bin/env bash\n{body}\n')
    f.chmod(f.stat().st_mode | stat.S_IEXEC)
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', SLURM_JOB_NODELIST='node-[a-b]',
             SLURM_NNODES='2')
  out = subprocess.run(['bash', str(path)], env=env, capture_output=True, text=True, check=True)
  lines = out.stdout.splitlines()
  assert lines[0] == 'node-a:12355 2 0'
  assert lines[1:3] == ['-m', 'padir.train'] and lines[3:6] == TRAIN_ARGS
  assert lines[6] == 'node-a:12355 2 1'


def test_dry_run_prints_and_bad_flags_are_reported(capsys):
  assert launch_main.main(['local', '--num_processes=2', '--dry_run', '--', *TRAIN_ARGS]) == 0
  out = capsys.readouterr().out.splitlines()
  assert len(out) == 2 and 'PADIR_PROCESS_ID=1' in out[1]
  assert shlex.split(out[0])[-len(TRAIN_ARGS):] == TRAIN_ARGS
  assert launch_main.main(['slurm', '--dry_run', '--port=80', '--', *TRAIN_ARGS]) == 2
  assert 'port=80' in capsys.readouterr().err
  assert launch_main.main(['local', '--dry_run']) == 2
  assert 'No trainer flags' in capsys.readouterr().err


def test_process_spec_validation():
  spec = distributed.process_spec(environ={distributed.ENV_COORDINATOR: '127.0.0.1:1234',
                                           distributed.ENV_NUM_PROCESSES: '2',
                                           distributed.ENV_PROCESS_ID: '1'})
  assert spec.explicit and spec.process_id == 1
  assert not distributed.process_spec(environ={}).explicit
  with pytest.raises(ValueError, match='coordinator'):
    distributed.process_spec(num_processes=2, process_id=0, environ={})
  with pytest.raises(ValueError, match='process_id'):
    distributed.process_spec('127.0.0.1:1', 2, 5, environ={})
  with pytest.raises(ValueError, match='integer'):
    distributed.process_spec(environ={distributed.ENV_NUM_PROCESSES: 'two'})


def test_local_launcher_runs_a_real_two_process_job(tmp_path):
  # Each process writes its view of the job to its own file: Gloo prints to the same stdout from
  # its own threads, in pieces, so a line on stdout can be split by one of its messages.
  # Forwarding stdout is tested on its own below.
  program = textwrap.dedent('''
      import pathlib, sys
      from padir import distributed
      distributed.initialize()
      import jax, jax.numpy as jnp, numpy as np
      from jax.experimental import multihost_utils
      total = multihost_utils.process_allgather(np.array([jax.process_index() + 1]))
      pathlib.Path(sys.argv[1], f'proc{jax.process_index()}').write_text(
          f'{jax.process_count()} {jax.device_count()} {jax.local_device_count()} '
          f'{int(np.sum(total))}')
  ''')
  rc = local.launch([sys.executable, '-c', program, str(tmp_path)], num_processes=2,
                    cpu_devices_per_process=4, timeout_s=240)
  assert rc == 0
  assert sorted(p.name for p in tmp_path.iterdir()) == ['proc0', 'proc1']
  for i in range(2):
    assert (tmp_path / f'proc{i}').read_text() == '2 8 4 3'


class _SlowStdout:
  """A console that takes 2 ms per line: the launcher's readers lag behind the processes."""

  def __init__(self):
    self.lines = []

  def write(self, text):
    time.sleep(0.002)
    self.lines.append(text)

  def flush(self):
    pass


def test_local_launcher_forwards_every_line_before_returning(monkeypatch):
  out = _SlowStdout()
  monkeypatch.setattr(sys, 'stdout', out)
  program = ('import os\n'
             'for i in range(200): print(os.environ["PADIR_PROCESS_ID"], i)\n'
             'print("last line, no newline", end="")\n')
  assert local.launch([sys.executable, '-c', program], num_processes=2, timeout_s=60) == 0
  for rank in ('0', '1'):
    lines = [line for line in out.lines if line.startswith(f'[{rank}] ')]
    assert len(lines) == 201, (rank, len(lines))
    assert lines[-1] == f'[{rank}] last line, no newline\n'


def test_local_launcher_stops_the_others_when_one_fails():
  program = ('import os, sys, time\n'
             'if os.environ["PADIR_PROCESS_ID"] == "1": sys.exit(3)\n'
             'time.sleep(60)\n')
  assert local.launch([sys.executable, '-c', program], num_processes=2, timeout_s=50) == 3
