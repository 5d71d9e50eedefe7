"""N processes on this machine joined into one JAX job through a 127.0.0.1 coordinator.

For trying multi-host code on a laptop and for tests: each process gets
``PADIR_COORDINATOR_ADDRESS``, ``PADIR_NUM_PROCESSES`` and ``PADIR_PROCESS_ID``; with
``--cpu_devices_per_process=K`` each also gets K virtual CPU devices. Output lines are prefixed
with the process id (stdout to stdout, stderr to stderr, each line whole); if one process fails,
the others are stopped. Every line a process printed is forwarded before :func:`launch`
returns: the readers drain the pipes to the end after the processes exit.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from padir import distributed
from padir.launch import common


def free_port() -> int:
  with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def process_envs(num_processes: int, port: int, cpu_devices_per_process: int | None,
                 base_env: dict[str, str] | None = None) -> list[dict[str, str]]:
  """The environment of each process."""
  if num_processes < 1:
    raise ValueError(f'num_processes={num_processes} must be >= 1.')
  envs = []
  for i in range(num_processes):
    env = dict(os.environ if base_env is None else base_env)
    env[distributed.ENV_COORDINATOR] = f'127.0.0.1:{port}'
    env[distributed.ENV_NUM_PROCESSES] = str(num_processes)
    env[distributed.ENV_PROCESS_ID] = str(i)
    env['PYTHONUNBUFFERED'] = '1'
    if cpu_devices_per_process:
      env['JAX_PLATFORMS'] = 'cpu'
      env['XLA_FLAGS'] = (env.get('XLA_FLAGS', '') + ' --xla_force_host_platform_device_count='
                          f'{cpu_devices_per_process}').strip()
    envs.append(env)
  return envs


# How long to wait, after every process exited, for their pipes to be drained (a grandchild
# that keeps a pipe open must not hang the launcher).
DRAIN_TIMEOUT_S = 30.0


def _pump(pipe: IO[str], prefix: str, to_stderr: bool) -> None:
  """Forwards one output stream of a process line by line until it closes (end of file)."""
  for line in pipe:
    out = sys.stderr if to_stderr else sys.stdout
    out.write(f'{prefix}{line}' if line.endswith('\n') else f'{prefix}{line}\n')
    out.flush()
  pipe.close()


def launch(command: list[str], num_processes: int, cpu_devices_per_process: int | None = None,
           port: int | None = None, timeout_s: float | None = None) -> int:
  """Runs ``command`` in ``num_processes`` processes; returns the first non-zero exit code."""
  port = port or free_port()
  procs, pumps = [], []
  for i, env in enumerate(process_envs(num_processes, port, cpu_devices_per_process)):
    # stdout and stderr in separate pipes: a library's stderr message (Gloo's, say) written
    # while Python prints a line in pieces cannot land in the middle of that line.
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, errors='replace')
    for pipe, to_stderr in ((proc.stdout, False), (proc.stderr, True)):
      pump = threading.Thread(target=_pump, args=(pipe, f'[{i}] ', to_stderr), daemon=True)
      pump.start()
      pumps.append(pump)
    procs.append(proc)
  deadline = None if timeout_s is None else time.monotonic() + timeout_s
  rc = 0
  try:
    while [p.poll() for p in procs].count(None):  # poll every process each round
      failed = [p.returncode for p in procs if p.returncode not in (None, 0)]
      if failed or (deadline is not None and time.monotonic() > deadline):
        rc = failed[0] if failed else 124
        break
      time.sleep(0.1)
  finally:
    for p in procs:
      if p.poll() is None:
        p.terminate()
    for p in procs:
      try:
        p.wait(timeout=10)
      except subprocess.TimeoutExpired:
        p.kill()
        p.wait()
    drain_deadline = time.monotonic() + DRAIN_TIMEOUT_S
    for pump in pumps:  # every line the processes wrote is forwarded before returning
      pump.join(timeout=max(0.0, drain_deadline - time.monotonic()))
  if rc == 0:
    rc = next((p.returncode for p in procs if p.returncode != 0), 0)
  return rc


def add_arguments(parser: argparse.ArgumentParser) -> None:
  parser.add_argument('--num_processes', type=int, default=2)
  parser.add_argument('--cpu_devices_per_process', type=int, default=None,
                      help='give each process K virtual CPU devices (testing on one machine)')
  parser.add_argument('--port', type=int, default=None, help='coordinator port (default: free)')
  parser.add_argument('--module', default=common.DEFAULT_MODULE, help='module to run')


def run(args: argparse.Namespace, trainer_args: list[str]) -> int:
  command = common.trainer_command(trainer_args, python=sys.executable, module=args.module)
  if args.dry_run:
    port = args.port or 12355
    for env in process_envs(args.num_processes, port, args.cpu_devices_per_process, {}):
      assignments = ' '.join(f'{k}={common.quote([v])}' for k, v in sorted(env.items()))
      print(f'{assignments} {common.quote(command)}')
    return 0
  return launch(command, args.num_processes, args.cpu_devices_per_process, args.port)
