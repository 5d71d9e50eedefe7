"""The quickstart's training stages that run side by side on a CPU (``concurrent_training``).

Two pairs of training stages do not wait for each other: the teacher's second leg and
``student_raw`` (both start from ``teacher_start``), ``student_distilled`` and
``student_scratch`` (both learn from the distilled data). On a CPU that
`padir.workers.cpu_shares` can split, each of a pair trains in a worker process pinned to half
of the cores (docs/quickstart.md, "Two trainings at once"):

* `trains_alongside`: whether a stage trains with its partner now;
* `train_alongside`: runs both, drives their progress display, returns the stage's result
  (the partner writes its own marker, saying whom it trained alongside);
* `set_aside_stale_scratch`: a scratch student trained alongside on the distilled data, when
  the select stage then chose the human references, is moved aside and trained again.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from typing import Any, Mapping, Sequence

from padir import compile_time
from padir import gin_utils
from padir import quickstart_train as qs_train
from padir import workers

# The training stage each stage may train alongside.
PARTNERS = {'teacher': 'student_raw', 'student_distilled': 'student_scratch'}
ASIDE = 'student_scratch_on_distilled'


def trains_alongside(run: Any, stage: str) -> bool:
  """Whether ``stage`` of the `padir.quickstart.Quickstart` ``run`` trains with its partner now.

  Only with ``concurrent_training``, on CPU cores that `padir.workers.cpu_shares` can split,
  when this invocation runs the partner's stage and it has not finished.
  """
  cfg = run.cfg
  partner = PARTNERS.get(stage)
  if (partner is None or not cfg.concurrent_training or partner not in run.requested_stages
      or run.stage_result(partner) is not None):
    return False
  if stage == 'teacher' and (cfg.student_start_steps is None or not cfg.raw_ablation):
    return False
  if stage == 'student_distilled' and not (cfg.scratch_ablation and
                                           cfg.student_init == 'teacher'):
    return False
  return workers.cpu_shares(2) is not None


def train_alongside(run: Any, method: str, stage: str, partner: str) -> dict[str, Any]:
  """``run.<method>()`` (training ``stage``) and the ``partner`` stage at once.

  Each runs in a worker process on half of the cores (`padir.workers.run_pinned`); the partner
  writes its own marker. Returns the method's result; its compilation counts in the running
  stage's.
  """
  cfg = run.cfg
  spec = {'config': cfg.to_json(), 'output_dir': run.out, 'gin_files': run.gin_files,
          'gin_bindings': run.gin_bindings, 'gin_search_paths': run.gin_search_paths}
  first = cfg.teacher_steps - (cfg.student_start_steps or 0)
  totals = {stage: first if stage == 'teacher' else cfg.student_steps,
            partner: cfg.student_steps}
  with contextlib.ExitStack() as stack:
    displays = {}
    for name, total in totals.items():
      bar = stack.enter_context(run.bar(total, name, 'step', initial=min(
          qs_train.latest_step(run.path(name)), total)))
      displays[name] = qs_train.TrainDisplay(
          bar, run.progress, lambda line, bar=bar, name=name: run.say(bar, f'  [{name}] {line}'))

    def on_message(name: str, kind: str, payload: Any) -> None:
      if kind == 'line':
        displays[name].print(payload)
      elif kind == 'step':
        displays[name].on_step(*payload)

    try:
      main, other = workers.run_pinned(
          [workers.Job(stage, _worker_job, (spec, method, ())),
           workers.Job(partner, _worker_job, (spec, 'run_stage', (partner, stage)))],
          on_message)
    except workers.JobStopped as err:
      raise qs_train.Stopped(stopped_message(err, (stage, partner)), 128 + err.signum) from err
  for outcome in (main, other):
    if 'stopped' in outcome:
      raise qs_train.Stopped(outcome['stopped'], outcome['code'])
  if run.compiling is not None:
    run.compiling.absorb(main['compile'])
  return main['result']


def stopped_message(err: workers.JobStopped, stages: Sequence[str]) -> str:
  """What a signal during a pair of ``stages`` stopped, naming only the unfinished ones.

  A stage whose worker returned a result without ``'stopped'`` had finished training (its
  final checkpoint is saved; a rerun finds it done).
  """
  how = 'Ctrl-C' if err.signum == signal.SIGINT else 'SIGTERM'
  done = [s for s in stages if s in err.finished and 'stopped' not in err.finished[s]]
  cut = [s for s in stages if s not in done]
  if not cut:
    return f'{" and ".join(stages)} finished, then {how} arrived; rerun to go on.'
  text = f'{" and ".join(cut)} stopped by {how}'
  if done:
    text += f' ({" and ".join(done)} had finished)'
  return text + '; rerun to resume.'


def set_aside_stale_scratch(run: Any) -> None:
  """Sets aside a ``student_scratch`` trained on other data than the main student's.

  Trained alongside ``student_distilled``, the scratch student learns from the distilled data
  before the select stage has chosen; when it chose the human references, the scratch student
  is moved to ``student_scratch_on_distilled`` (nothing is deleted) and retrained.
  """
  marker = run.stage_result('student_scratch')
  if marker is None or not run.selects_data or run.stage_result('select') is None:
    return
  wanted = os.path.relpath(run.student_data('student_scratch'), run.out)
  if os.path.normpath(marker['result'].get('data', '')).endswith(wanted):
    return
  aside, suffix = run.path(ASIDE), 1
  while os.path.exists(aside) or os.path.exists(aside + '.json'):
    aside, suffix = run.path(f'{ASIDE}.{suffix}'), suffix + 1
  shutil.move(run.path('student_scratch'), aside)
  shutil.move(run.path('stages', 'student_scratch.json'), aside + '.json')
  run.print(f'  student_scratch learnt from the distilled data, but the select stage chose '
            f'the human references: moved to {os.path.basename(aside)}, trained again.')


def _worker_job(spec: Mapping[str, Any], method: str, args: Sequence[Any],
                emit: workers.Emit) -> dict[str, Any]:
  """A worker process of `train_alongside`: ``Quickstart.<method>(*args)`` there.

  Returns ``{'result': ..., 'compile': summary}``, or ``{'stopped': message, 'code': n}`` when
  a signal stopped the training (its checkpoint is saved).
  """
  from padir import quickstart  # pylint: disable=g-import-not-at-top
  gin_utils._register_search_paths(spec['gin_search_paths'])  # pylint: disable=protected-access
  config = quickstart.load_config(spec['gin_files'], spec['gin_bindings'])
  if config.to_json() != spec['config']:
    raise ValueError('The worker process parsed another QuickstartConfig than its parent '
                     f'from the same gin: {config.to_json()} vs {spec["config"]}.')
  run = quickstart.Quickstart(config, spec['output_dir'], spec['gin_files'],
                              spec['gin_bindings'], progress=False,
                              print_fn=lambda line: emit('line', line),
                              gin_search_paths=spec['gin_search_paths'])
  run.on_step = lambda stage, step, metrics: emit('step', (step, dict(metrics or {})))
  try:
    with run.compiling_setup(), compile_time.CompileTimer() as compiling:
      result = getattr(run, method)(*args)
  except qs_train.Stopped as err:
    return {'stopped': str(err), 'code': err.code}
  return {'result': result, 'compile': compiling.summary()}
