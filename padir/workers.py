"""Independent jobs at once, each in its own process pinned to a share of the CPU cores.

On a CPU backend XLA runs one small model's training step on every core, with gaps between its
many small kernels in which the cores wait. Two such steps in two processes, each pinned to half
of the cores, keep them busier. On the 2-core VM of the quickstart's committed run, the two
PaDIR students trained their 750 steps each in 479 s side by side (one core each), against
302 + 281 s one after the other on both cores (docs/quickstart.md, "Two trainings at once").

`run_pinned` starts one spawned process per job (a fresh interpreter: nothing of the parent's
JAX state is shared), pins it with ``os.sched_setaffinity`` before JAX starts (so XLA sizes its
thread pool to the share), calls the job's function there and returns what each returned.
While they run, the jobs' messages (``emit(kind, payload)``) reach ``on_message`` in the
parent. Ctrl-C or SIGTERM in the parent reaches every job as SIGTERM (training saves a
checkpoint and stops); a job that fails raises `JobError` in the parent once every job ended.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import queue as queue_lib
import signal
import traceback
from typing import Any, Callable, Mapping, Sequence

import jax

Emit = Callable[[str, Any], None]


@dataclasses.dataclass(frozen=True)
class Job:
  """One job: ``fn(*args, emit=emit)`` in a process of its own.

  Attributes:
    name: what messages and errors call it.
    fn: a module-level function (it is pickled by reference into the new process).
    args: its arguments (picklable).
  """
  name: str
  fn: Callable[..., Any]
  args: tuple[Any, ...] = ()


class JobError(RuntimeError):
  """A job raised: the message holds its name and the traceback from its process."""


class JobStopped(RuntimeError):
  """Ctrl-C or SIGTERM stopped the jobs (each saved what it saves on SIGTERM).

  Attributes:
    signum: the signal the parent received.
    finished: job name -> return value, for the jobs that returned (before or after the
      signal reached them; a job that handles SIGTERM by saving and returning is one).
  """

  def __init__(self, message: str, signum: int, finished: Mapping[str, Any] | None = None):
    super().__init__(message)
    self.signum = signum
    self.finished = dict(finished or {})


def cpu_shares(num_jobs: int) -> list[set[int]] | None:
  """The cores of this process split into ``num_jobs`` disjoint shares, or None.

  None when the jobs cannot each get a share of their own: not Linux (no
  ``os.sched_setaffinity``), a JAX backend other than the CPU, several JAX processes, or fewer
  cores than jobs.
  """
  if not hasattr(os, 'sched_setaffinity') or num_jobs < 1:
    return None
  if jax.default_backend() != 'cpu' or jax.process_count() > 1:
    return None
  cores = sorted(os.sched_getaffinity(0))
  if len(cores) < num_jobs:
    return None
  size = len(cores) // num_jobs
  shares = [set(cores[i * size:(i + 1) * size]) for i in range(num_jobs)]
  shares[-1] |= set(cores[num_jobs * size:])  # an odd core goes to the last job
  return shares


def _work(job: Job, cores: set[int], messages: Any) -> None:
  """The new process: pin, run the job, report its result or its error."""
  os.sched_setaffinity(0, cores)

  def emit(kind: str, payload: Any) -> None:
    messages.put((job.name, kind, payload))
  try:
    result = job.fn(*job.args, emit=emit)
  except BaseException:  # pylint: disable=broad-except  (reported to the parent)
    messages.put((job.name, '_error', traceback.format_exc()))
    return
  messages.put((job.name, '_result', result))


def run_pinned(jobs: Sequence[Job], on_message: Callable[[str, str, Any], None],
               cores: Sequence[set[int]] | None = None, poll_seconds: float = 0.5) -> list[Any]:
  """Runs ``jobs`` at once, each pinned to its share of the cores; returns their results.

  Args:
    jobs: the jobs (distinct names).
    on_message: ``on_message(job_name, kind, payload)`` for each ``emit`` of a job, in the
      parent, in the order the messages arrive.
    cores: one set of core ids per job (default: `cpu_shares`).
    poll_seconds: how often the parent checks that the processes are alive.

  Returns:
    Each job's return value, in the order of ``jobs``.

  Raises:
    ValueError: the cores cannot be split among the jobs.
    JobStopped: the parent got Ctrl-C or SIGTERM (after every job stopped).
    JobError: a job raised or its process died (after every job ended).
  """
  names = [job.name for job in jobs]
  if len(set(names)) != len(names):
    raise ValueError(f'run_pinned: job names must differ, got {names}.')
  shares = list(cores) if cores is not None else cpu_shares(len(jobs))
  if shares is None or len(shares) != len(jobs):
    raise ValueError(f'run_pinned: cannot give each of {len(jobs)} jobs cores of its own here '
                     '(Linux, a CPU backend and at least one core per job are needed).')
  context = multiprocessing.get_context('spawn')
  messages = context.Queue()
  processes = {job.name: context.Process(target=_work, args=(job, set(share), messages),
                                         name=f'padir-{job.name}', daemon=True)
               for job, share in zip(jobs, shares)}
  results: dict[str, Any] = {}
  errors: dict[str, str] = {}
  stopped: list[int] = []

  def forward(signum, frame):  # pylint: disable=unused-argument
    if stopped:  # a second Ctrl-C / SIGTERM: stop at once
      for process in processes.values():
        if process.is_alive():
          process.kill()
      raise KeyboardInterrupt
    stopped.append(signum)
    for process in processes.values():
      if process.is_alive() and process.pid:
        os.kill(process.pid, signal.SIGTERM)

  previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
  try:
    for process in processes.values():
      process.start()
    while len(results) + len(errors) < len(jobs):
      try:
        name, kind, payload = messages.get(timeout=poll_seconds)
      except queue_lib.Empty:
        for name, process in processes.items():
          if (not process.is_alive() and name not in results and name not in errors and
              messages.empty()):
            errors[name] = f'its process ended with exit code {process.exitcode}'
        continue
      if kind == '_result':
        results[name] = payload
      elif kind == '_error':
        errors[name] = payload
      else:
        on_message(name, kind, payload)
    for process in processes.values():
      process.join()
  finally:
    for signum, handler in previous.items():
      signal.signal(signum, handler)
    for process in processes.values():
      if process.is_alive():
        process.kill()
        process.join()
    messages.close()
  if stopped:  # a job that a signal interrupted outside its own handling may have raised
    raise JobStopped(f'stopped by signal {stopped[0]}', stopped[0], results)
  if errors:
    raise JobError('\n'.join(f'{name} failed in its worker process: '
                              f'{text.strip().splitlines()[-1]}\n{text.strip()}'
                              for name, text in errors.items()))
  return [results[name] for name in names]
