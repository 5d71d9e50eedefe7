"""Multi-host start-up: one call that every padir entry point makes before touching devices.

``initialize()`` decides how this process joins a multi-process JAX job:

* explicit arguments, or the environment variables ``PADIR_COORDINATOR_ADDRESS``,
  ``PADIR_NUM_PROCESSES`` and ``PADIR_PROCESS_ID`` (set by padir's local and SLURM launchers);
* otherwise JAX's own cluster detection when the process runs on a TPU VM pod worker or inside
  a multi-task SLURM step;
* otherwise nothing: a single process.

It is idempotent, so library code may call it more than once.
"""

from __future__ import annotations

import dataclasses
import os

import jax

ENV_COORDINATOR = 'PADIR_COORDINATOR_ADDRESS'
ENV_NUM_PROCESSES = 'PADIR_NUM_PROCESSES'
ENV_PROCESS_ID = 'PADIR_PROCESS_ID'
ENV_LOCAL_DEVICE_IDS = 'PADIR_LOCAL_DEVICE_IDS'

_initialized = False


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
  """How this process joins the job (None fields: single process or auto-detection)."""
  coordinator_address: str | None
  num_processes: int | None
  process_id: int | None
  local_device_ids: tuple[int, ...] | None = None

  @property
  def explicit(self) -> bool:
    return self.num_processes is not None and self.num_processes > 1


def _int_env(name: str, environ: dict[str, str]) -> int | None:
  value = environ.get(name)
  if value in (None, ''):
    return None
  try:
    return int(value)
  except ValueError:
    raise ValueError(f'{name}={value!r} must be an integer.') from None


def process_spec(coordinator_address: str | None = None,
                 num_processes: int | None = None,
                 process_id: int | None = None,
                 environ: dict[str, str] | None = None) -> ProcessSpec:
  """Resolves arguments and environment into a validated ProcessSpec."""
  environ = dict(os.environ if environ is None else environ)
  coordinator_address = coordinator_address or environ.get(ENV_COORDINATOR) or None
  num_processes = num_processes if num_processes is not None else _int_env(
      ENV_NUM_PROCESSES, environ)
  process_id = process_id if process_id is not None else _int_env(ENV_PROCESS_ID, environ)
  local = environ.get(ENV_LOCAL_DEVICE_IDS)
  local_ids = tuple(int(x) for x in local.split(',')) if local else None
  spec = ProcessSpec(coordinator_address, num_processes, process_id, local_ids)
  if spec.explicit:
    if not spec.coordinator_address or ':' not in spec.coordinator_address:
      raise ValueError(f'A {num_processes}-process job needs a coordinator address HOST:PORT '
                       f'(flag --coordinator_address or {ENV_COORDINATOR}), got '
                       f'{spec.coordinator_address!r}.')
    if spec.process_id is None or not 0 <= spec.process_id < spec.num_processes:
      raise ValueError(f'process_id={spec.process_id!r} must be in [0, {num_processes}) '
                       f'(flag --process_id or {ENV_PROCESS_ID}).')
  return spec


def _cluster_detected(environ: dict[str, str]) -> bool:
  """True on a multi-worker TPU VM or in a multi-task SLURM step (JAX auto-detects both)."""
  if int(environ.get('SLURM_NTASKS', '1') or 1) > 1 and 'SLURM_STEP_ID' in environ:
    return True
  hostnames = environ.get('TPU_WORKER_HOSTNAMES', '')
  return len([h for h in hostnames.split(',') if h]) > 1


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None) -> ProcessSpec:
  """Joins the multi-process job described by the arguments or environment (see module doc)."""
  global _initialized
  spec = process_spec(coordinator_address, num_processes, process_id)
  if _initialized:
    return spec
  if spec.explicit:
    jax.distributed.initialize(coordinator_address=spec.coordinator_address,
                               num_processes=spec.num_processes,
                               process_id=spec.process_id,
                               local_device_ids=spec.local_device_ids)
  elif _cluster_detected(dict(os.environ)):
    jax.distributed.initialize()
  _initialized = True
  return spec
