"""TPU VM pods: create, install padir on every worker, train on all workers, delete.

Each step is one ``gcloud compute tpus tpu-vm`` command; the training step runs the same
``python3 -m padir.train`` on every worker (``--worker=all``), and JAX's TPU cluster detection
(``padir.distributed.initialize``) joins the workers into one job. Logs stream to the console
because ``gcloud ... ssh`` runs in the foreground; ``--background`` runs training under nohup
into ``LOG_FILE`` on each worker instead and ``logs`` tails it.
"""

from __future__ import annotations

import argparse
import dataclasses
import os

from padir.launch import common

ACTIONS = ('create', 'install', 'train', 'logs', 'delete', 'all')


@dataclasses.dataclass(frozen=True)
class TpuSpec:
  """Where and what: the pod, and how padir gets onto it."""
  name: str
  zone: str
  accelerator_type: str = 'v4-8'
  version: str = 'tpu-ubuntu2204-base'
  project: str | None = None
  spot: bool = False
  preemptible: bool = False
  package: str = 'padir'  # pip requirement or a local wheel (copied to the workers)
  workdir: str = '~'
  log_file: str = 'padir_train.log'

  def __post_init__(self):
    if not self.name or not self.zone:
      raise ValueError('A TPU launch needs --name and --zone.')
    if self.spot and self.preemptible:
      raise ValueError('Choose one of --spot and --preemptible.')


def _gcloud(spec: TpuSpec, verb: str, *extra: str) -> list[str]:
  cmd = ['gcloud', 'compute', 'tpus', 'tpu-vm', verb, spec.name, f'--zone={spec.zone}']
  if spec.project:
    cmd.append(f'--project={spec.project}')
  return cmd + list(extra)


def _ssh_all(spec: TpuSpec, remote: str) -> list[str]:
  return _gcloud(spec, 'ssh', '--worker=all', f'--command={remote}')


def create_commands(spec: TpuSpec) -> list[list[str]]:
  extra = [f'--accelerator-type={spec.accelerator_type}', f'--version={spec.version}']
  if spec.spot:
    extra.append('--spot')
  if spec.preemptible:
    extra.append('--preemptible')
  return [_gcloud(spec, 'create', *extra)]


def install_commands(spec: TpuSpec) -> list[list[str]]:
  """Copies a local wheel if one is given, then pip-installs JAX for TPU and padir everywhere."""
  commands = []
  requirement = spec.package
  if spec.package.endswith('.whl'):  # a local wheel: copy it to every worker first
    wheel = os.path.basename(spec.package)
    commands.append(['gcloud', 'compute', 'tpus', 'tpu-vm', 'scp', spec.package,
                     f'{spec.name}:{wheel}', '--worker=all', f'--zone={spec.zone}'] +
                    ([f'--project={spec.project}'] if spec.project else []))
    requirement = f'./{wheel}'
  remote = (f"python3 -m pip install -U pip && python3 -m pip install -U 'jax[tpu]' "
            f'{common.quote([requirement])}')
  commands.append(_ssh_all(spec, remote))
  return commands


def train_commands(spec: TpuSpec, trainer_args: list[str], background: bool) -> list[list[str]]:
  run = common.quote(common.trainer_command(trainer_args))
  log = common.quote([spec.log_file])
  if background:
    remote = f'cd {spec.workdir} && nohup {run} > {log} 2>&1 &'
  else:
    remote = f'cd {spec.workdir} && {run} 2>&1 | tee {log}'
  return [_ssh_all(spec, remote)]


def logs_commands(spec: TpuSpec) -> list[list[str]]:
  return [_ssh_all(spec, f'tail -n 200 -f {spec.workdir}/{common.quote([spec.log_file])}')]


def delete_commands(spec: TpuSpec) -> list[list[str]]:
  return [_gcloud(spec, 'delete', '--quiet')]


def commands_for(action: str, spec: TpuSpec, trainer_args: list[str],
                 background: bool = False) -> list[list[str]]:
  """The gcloud commands of one action ('all' = create, install, train)."""
  if action not in ACTIONS:
    raise ValueError(f'Unknown TPU action {action!r}; choose from {ACTIONS}.')
  if action == 'create':
    return create_commands(spec)
  if action == 'install':
    return install_commands(spec)
  if action == 'train':
    return train_commands(spec, trainer_args, background)
  if action == 'logs':
    return logs_commands(spec)
  if action == 'delete':
    return delete_commands(spec)
  return (create_commands(spec) + install_commands(spec) +
          train_commands(spec, trainer_args, background))


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('action', choices=ACTIONS)
  parser.add_argument('--name', required=True, help='TPU VM name')
  parser.add_argument('--zone', required=True, help='e.g. us-central2-b')
  parser.add_argument('--accelerator_type', default='v4-8', help='e.g. v4-32, v5litepod-16')
  parser.add_argument('--version', default='tpu-ubuntu2204-base', help='TPU VM software')
  parser.add_argument('--project', default=None)
  parser.add_argument('--spot', action='store_true')
  parser.add_argument('--preemptible', action='store_true')
  parser.add_argument('--package', default='padir',
                      help='pip requirement, or a local wheel to copy to every worker')
  parser.add_argument('--workdir', default='~')
  parser.add_argument('--log_file', default='padir_train.log')
  parser.add_argument('--background', action='store_true',
                      help='train under nohup; follow with the "logs" action')


def run(args: argparse.Namespace, trainer_args: list[str]) -> int:
  spec = TpuSpec(args.name, args.zone, args.accelerator_type, args.version, args.project,
                 args.spot, args.preemptible, args.package, args.workdir, args.log_file)
  return common.run_or_print(commands_for(args.action, spec, trainer_args, args.background),
                             args.dry_run)
