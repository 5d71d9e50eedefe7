"""SLURM GPU clusters: render (and optionally submit) an sbatch script.

One task per node owns all of that node's GPUs; the first node of the allocation is the JAX
coordinator. Each task exports ``PADIR_COORDINATOR_ADDRESS``, ``PADIR_NUM_PROCESSES`` and
``PADIR_PROCESS_ID`` (from ``SLURM_PROCID``), which ``padir.distributed.initialize`` reads.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess

from padir.launch import common


@dataclasses.dataclass(frozen=True)
class SlurmSpec:
  """Resources of the job."""
  nodes: int = 1
  gpus_per_node: int = 8
  job_name: str = 'padir'
  time: str = '24:00:00'
  partition: str | None = None
  account: str | None = None
  cpus_per_task: int | None = None
  port: int = 12355
  output: str = 'padir-%j.out'
  setup: str = ''  # shell lines run before srun (module load, venv activation, ...)

  def __post_init__(self):
    if self.nodes < 1 or self.gpus_per_node < 1:
      raise ValueError(f'nodes={self.nodes} and gpus_per_node={self.gpus_per_node} must be >= 1.')
    if not 1024 <= self.port < 65536:
      raise ValueError(f'port={self.port} must be in [1024, 65536).')


def render_sbatch(spec: SlurmSpec, trainer_args: list[str]) -> str:
  """The sbatch script text."""
  lines = ['#!/bin/bash',
           f'#SBATCH --job-name={spec.job_name}',
           f'#SBATCH --nodes={spec.nodes}',
           '#SBATCH --ntasks-per-node=1',
           f'#SBATCH --gpus-per-node={spec.gpus_per_node}',
           f'#SBATCH --time={spec.time}',
           f'#SBATCH --output={spec.output}']
  if spec.partition:
    lines.append(f'#SBATCH --partition={spec.partition}')
  if spec.account:
    lines.append(f'#SBATCH --account={spec.account}')
  if spec.cpus_per_task:
    lines.append(f'#SBATCH --cpus-per-task={spec.cpus_per_task}')
  lines += ['', 'set -euo pipefail']
  if spec.setup:
    lines += [spec.setup]
  train = common.quote(common.trainer_command(trainer_args))
  lines += [
      'head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | sed -n 1p)',  # sed reads all: no SIGPIPE under pipefail
      f'export PADIR_COORDINATOR_ADDRESS="${{head_node}}:{spec.port}"',
      'export PADIR_NUM_PROCESSES="$SLURM_NNODES"',
      '',
      "srun --kill-on-bad-exit=1 bash -c 'export PADIR_PROCESS_ID=$SLURM_PROCID; exec \"$0\" "
      "\"$@\"' " + train,
      '',
  ]
  return '\n'.join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--nodes', type=int, default=1)
  parser.add_argument('--gpus_per_node', type=int, default=8)
  parser.add_argument('--job_name', default='padir')
  parser.add_argument('--time', default='24:00:00')
  parser.add_argument('--partition', default=None)
  parser.add_argument('--account', default=None)
  parser.add_argument('--cpus_per_task', type=int, default=None)
  parser.add_argument('--port', type=int, default=12355)
  parser.add_argument('--output', default='padir-%j.out', help='SLURM log file pattern')
  parser.add_argument('--setup', default='', help='shell lines to run before srun')
  parser.add_argument('--output_script', default='padir_job.sbatch',
                      help='where to write the rendered script')
  parser.add_argument('--submit', action='store_true', help='sbatch the script')


def run(args: argparse.Namespace, trainer_args: list[str]) -> int:
  spec = SlurmSpec(args.nodes, args.gpus_per_node, args.job_name, args.time, args.partition,
                   args.account, args.cpus_per_task, args.port, args.output, args.setup)
  script = render_sbatch(spec, trainer_args)
  if args.dry_run:
    print(script)
    return 0
  with open(args.output_script, 'w', encoding='utf-8') as f:
    f.write(script)
  os.chmod(args.output_script, 0o755)
  print(f'wrote {args.output_script}')
  if args.submit:
    return subprocess.call(['sbatch', args.output_script])
  return 0
