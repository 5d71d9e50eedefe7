r"""``padir quickstart``: AR teacher -> distillation -> PaDIR student -> speed-quality report.

  padir quickstart [--output_dir=padir_quickstart] [--gin_file=F ...] [--gin.NAME=VALUE ...]

On the embedded Bible corpus (Spanish -> English), one command:

  1. data               filters the task to sentences that fit the feature lengths and exports
                        train / validation / test as arrays (with every reference), plus the
                        random training subset the students use
  2. teacher            trains the AR teacher (padir.train on the full filtered train split);
                        with QuickstartConfig.student_start_steps in two legs, the first kept
                        in OUTPUT_DIR/teacher_start, where the students start
  3. distill            picks the teacher decoding on validation (closest to the reference
                        length among those within 1 BLEU of the best, preferring those at
                        least 0.95x as long), then decodes the
                        subset's sources into a distilled task (padir.distill)
  4. student_distilled  trains PaDIR on the distilled subset, from the teacher's weights (its
                        first leg's, with student_start_steps)
  5. student_raw        the same on the human references
  6. select             validation, batch 1: the students' training data (distilled or human
                        references) and the PaDIR decoding setting, jointly (the fastest within
                        1 BLEU of the teacher, else the best); the winner is the main student
  7. student_scratch    the main student's recipe from random weights (ablation)
  8. student_ablations  more ablation students (QuickstartConfig.extra_ablations; off by default)
  9. ar_matched         without student_start_steps: the AR teacher trained on for as many
                        steps as the students, on the main student's data: the AR baseline at
                        equal training (with it, the teacher itself is that baseline)
  10. ablations         validation, batch 1: the chosen student and setting with one choice
                        switched off at a time
  11. evaluate          test split: multi-reference BLEU / chrF, repetition rate, length error
                        of AR greedy and beam, and of the students with the chosen setting
  12. benchmark         batch-1 latency of the same systems on this machine, interleaved, and
                        of random networks at the T5.1.1 'small' size
  13. report            OUTPUT_DIR/report/report.{md,json,png} (padir.report)

On a CPU with two cores or more (``QuickstartConfig.concurrent_training``), student_raw trains
alongside the teacher's second leg and student_scratch alongside student_distilled, each in a
process pinned to half of the cores (`padir.quickstart_pairs`, `padir.workers`): small models
keep the cores busier so.

Every stage shows a progress bar with an ETA and leaves a marker in ``OUTPUT_DIR/stages/``
when it finishes; rerunning the same command skips finished stages and resumes the current one
(training from its last checkpoint, distillation from its last saved chunk, evaluation from its
last finished system). A rerun with a different configuration in the same directory is refused.

Configuration is gin: ``gin/runs/quickstart.gin`` (CPU-sized defaults, about 32 minutes
measured on two cores) is always read first; ``--gin_file`` files and ``--gin.NAME=VALUE``
bindings come after it, e.g. ``--gin_file=gin/experiments/quickstart_small.gin`` (T5.1.1
small, for a GPU) or ``--gin.TEACHER_STEPS=3000``. Each training stage parses its experiment gin
(``QuickstartConfig.teacher_gin_files`` / ``student_gin_files``), then the quickstart files and
bindings, then its own MODEL_DIR, MIXTURE_OR_TASK_NAME and TRAIN_STEPS.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import os
import shutil
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import gin
import jax
import numpy as np

from padir import compile_time
from padir import decoding
from padir import errors
from padir import gin_utils
from padir import quickstart_eval as qs_eval
from padir import quickstart_pairs
from padir import quickstart_results
from padir import quickstart_train as qs_train
from padir import workers
from padir.quickstart_config import DATA_STUDENTS, STAGES, TEACHER_START, QuickstartConfig
from padir.quickstart_train import Stopped

DEFAULT_OUTPUT_DIR = 'padir_quickstart'
DEFAULT_GIN_FILE = 'gin/runs/quickstart.gin'
CACHE_DIR = 'jax_cache'  # under the output dir (QuickstartConfig.compilation_cache)


def stage_model(model: Any = gin.REQUIRED) -> Any:
  """The ``MODEL`` of the gin config parsed for a stage (bound in quickstart.gin)."""
  return model


stage_model = gin_utils.configurable(stage_model, module='padir.quickstart')


def machine_speed(size: int = 2048) -> float:
  """GFLOP/s of a jitted [size, size] float32 matmul on this machine now (best of 3, ~1 s).

  Recorded before every stage, so that a run's times can be compared with another machine's
  or another day's: shared VMs of the same kind differ by up to 2x.
  """
  from padir.bench import train as bench_train  # pylint: disable=g-import-not-at-top
  return round(bench_train.measure_matmul_peak(size, repeats=3).flops_per_sec / 1e9, 1)


class Quickstart:
  """One quickstart run in ``output_dir`` (see the module docstring)."""

  STAGES = STAGES

  def __init__(self, config: QuickstartConfig, output_dir: str, gin_files: Sequence[str],
               gin_bindings: Sequence[str], *, progress: bool = True,
               print_fn: Callable[[str], Any] = print, gin_search_paths: Sequence[str] = ()):
    self.cfg = config
    self.out = os.path.abspath(os.path.expanduser(output_dir))
    self.output_dir = output_dir  # as the user gave it: the report's commands use it
    self.gin_files = list(gin_files)
    self.gin_bindings = list(gin_bindings)
    self.gin_search_paths = list(gin_search_paths)
    self.progress = progress
    # on_step(stage, step, metrics) after every training step (a worker process reports it).
    self.on_step: Callable[[str, int, Mapping[str, float] | None], Any] | None = None
    self.compiling: compile_time.CompileTimer | None = None  # the running stage's
    self._concurrent_with: str | None = None  # run_stage's argument while the stage runs
    self.requested_stages: set[str] = set(STAGES)  # the stages this invocation runs
    self.print = print_fn
    self.lengths = dict(config.feature_lengths)

  # ------------------------------------------------------------------ paths and plumbing

  @functools.cached_property
  def filtered_task(self) -> bool:
    """Whether the task is a Bible direction the quickstart re-registers with ``overlong``."""
    # Imported here: padir.data.tasks loads TensorFlow, which a training worker never needs.
    from padir.data import tasks  # pylint: disable=g-import-not-at-top
    return self.cfg.task in tasks.BIBLE_TASKS

  @functools.cached_property
  def task_name(self) -> str:
    return f'quickstart_{self.cfg.task}' if self.filtered_task else self.cfg.task

  def path(self, *parts: str) -> str:
    return os.path.join(self.out, *parts)

  @property
  def full_data(self) -> str:
    return self.path('data', 'full')

  @property
  def subset_data(self) -> str:
    return self.path('data', 'subset')

  @property
  def distilled_data(self) -> str:
    return self.path('distill', 'arrays')

  def bar(self, total: int | None, desc: str, unit: str, initial: int = 0):
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not self.progress,
                dynamic_ncols=True)

  def say(self, bar: Any, line: str) -> None:
    if self.progress and bar is not None:
      bar.write(line)
    else:
      self.print(line)

  def register_task(self) -> None:
    from padir.data import tasks  # pylint: disable=g-import-not-at-top
    if self.filtered_task:
      src, tgt, refs = tasks.BIBLE_TASKS[self.cfg.task]
      tasks.register_bible_task(self.task_name, src, tgt, refs, vocabulary=self.cfg.vocabulary,
                                overlong=self.cfg.overlong)
    else:
      tasks.get_task(self.task_name)

  def _parse(self, base_files: Sequence[str], macros: Mapping[str, Any],
             extra: Sequence[str] = ()) -> None:
    """Parses a stage's gin: its experiment, the quickstart files and bindings, its macros."""
    own = [f'{k} = {v!r}' for k, v in macros.items()]
    gin_utils.parse_gin(list(base_files) + self.gin_files,
                        self.gin_bindings + list(extra) + own, finalize=False)

  def ablation_bindings(self, stage: str) -> tuple[str, ...]:
    """The extra gin bindings of a ``student_<name>`` ablation stage (empty for the others)."""
    name = stage[len('student_'):] if stage.startswith('student_') else ''
    return tuple(self.cfg.extra_ablations.get(name, ()))

  def stage_bindings(self, stage: str) -> tuple[str, ...]:
    """Every gin binding a training stage adds to the quickstart's files and flags, in order.

    ``QuickstartConfig.stage_bindings['students']`` (student stages) or ``['teacher']`` (the
    teacher's first leg, ``teacher_start``), then those of the stage itself, then an ablation
    stage's own (``extra_ablations``).
    """
    per_stage = self.cfg.stage_bindings
    shared = per_stage.get('students', ()) if stage.startswith('student_') else ()
    if stage == TEACHER_START:
      shared = per_stage.get('teacher', ())
    return (*shared, *per_stage.get(stage, ()), *self.ablation_bindings(stage))

  def _stage_macros(self, stage: str, data_dir: str, steps: int) -> dict[str, Any]:
    macros = {'MODEL_DIR': self.path(stage), 'MIXTURE_OR_TASK_NAME': data_dir,
              'TRAIN_STEPS': steps}
    if stage.startswith('student') or stage in ('ar_matched', 'teacher'):
      init = self.init_dir(stage)
      macros['padir.checkpoints.CheckpointConfig.init_from'] = (
          None if init is None else self.path(init))
    return macros

  def student_starts_from_teacher(self, stage: str) -> bool:
    """Whether a student stage (or ``ar_matched``) starts from the teacher's weights."""
    return self.cfg.student_init == 'teacher' and stage != 'student_scratch'

  def init_dir(self, stage: str) -> str | None:
    """The output subdir whose weights a training stage starts from (None: random weights).

    The students start from the teacher, or from its first leg (``teacher_start``) with
    ``student_start_steps``; the teacher's second leg continues its first; ``ar_matched``
    continues the teacher.
    """
    split = self.cfg.student_start_steps is not None
    if stage == 'teacher':
      return TEACHER_START if split else None
    if stage == 'ar_matched':
      return 'teacher'
    if stage.startswith('student') and self.student_starts_from_teacher(stage):
      return TEACHER_START if split else 'teacher'
    return None

  def teacher_model(self) -> Any:
    self._parse(self.cfg.teacher_gin_files,
                self._stage_macros('teacher', self.full_data, self.cfg.teacher_steps),
                self.stage_bindings('teacher'))
    return stage_model()

  @property
  def trains_matched_ar(self) -> bool:
    """Whether the ``ar_matched`` stage runs (the AR model trained as long as the students)."""
    return (self.cfg.matched_ar and self.cfg.student_init == 'teacher' and
            self.cfg.student_start_steps is None)

  @property
  def selects_data(self) -> bool:
    """Whether the select stage chooses between the distilled and the raw student."""
    return self.cfg.choose_data and self.cfg.raw_ablation

  def data_students(self) -> list[str]:
    """The student stages the select stage chooses among (trained ones only)."""
    if not self.selects_data:
      return ['student_distilled']
    return [s for s in DATA_STUDENTS if s == 'student_distilled' or self.stage_result(s)]

  def main_student(self) -> str:
    """The student stage chosen on validation (``student_distilled`` before the select stage
    or when the data is not chosen)."""
    marker = self.stage_result('select')
    if marker and self.selects_data:
      return marker['result'].get('student', 'student_distilled')
    return 'student_distilled'

  def student_data(self, stage: str) -> str:
    """The training data of a student stage: the ablation students use the main student's."""
    if stage == 'student_raw':
      return self.subset_data
    if stage == 'student_distilled' or self.main_student() == 'student_distilled':
      return self.distilled_data
    return self.subset_data

  def _check_data_chosen(self, stage: str) -> None:
    if self.selects_data and self.stage_result('select') is None:
      raise ValueError(f'{stage} trains on the data the select stage chooses on validation; run '
                       'the select stage first (--stages=...,select,...), or set '
                       'padir.quickstart.QuickstartConfig.choose_data = False.')

  def student_model(self, stage: str = 'student_distilled') -> Any:
    data = self.student_data(stage)
    self._parse(self.cfg.student_gin_files,
                self._stage_macros(stage, data, self.cfg.student_steps),
                self.stage_bindings(stage))
    model = stage_model()
    scheme = getattr(getattr(model, 'corruption', None), 'decoder_input_scheme', None)
    if scheme is not None and scheme != self.cfg.refine.canvas_init:
      raise ValueError(
          f'The student is trained on {scheme!r} canvases (padir.objectives.CorruptionConfig.'
          f'decoder_input_scheme) but decodes from {self.cfg.refine.canvas_init!r} canvases '
          '(padir.refine_decoding.RefineConfig.canvas_init); set both to the same scheme.')
    return model

  # ------------------------------------------------------------------ stage driver

  def check_config(self) -> None:
    """Refuses to resume a directory that holds a run with another configuration."""
    record = {'config': self.cfg.to_json(), 'gin_files': self.gin_files,
              'gin_bindings': self.gin_bindings}
    path = self.path('quickstart.json')
    if os.path.isfile(path):
      saved = qs_eval.read_json(path)
      if saved != record:
        keys = sorted(k for k in set(saved.get('config', {})) | set(record['config'])
                      if saved.get('config', {}).get(k) != record['config'].get(k))
        if saved.get('gin_files') != record['gin_files']:
          keys.append('--gin_file')
        if saved.get('gin_bindings') != record['gin_bindings']:
          keys.append('--gin bindings')
        raise ValueError(
            f'{self.out} holds a quickstart run with another configuration (differs in: '
            f'{", ".join(keys)}). Rerun with the same flags to resume it, or pick another '
            '--output_dir.')
    else:
      qs_eval.write_json(path, record)

  @contextlib.contextmanager
  def compilation_cache(self):
    """JAX's persistent compilation cache in ``<output_dir>/jax_cache`` for the duration
    (`QuickstartConfig.compilation_cache`); the process's previous setting is restored."""
    # pylint: disable-next=g-import-not-at-top
    from jax.experimental.compilation_cache import compilation_cache as cc
    if not self.cfg.compilation_cache or jax.config.jax_compilation_cache_dir:
      yield None
      return
    path = self.path(CACHE_DIR)
    jax.config.update('jax_compilation_cache_dir', path)
    cc.reset_cache()  # the cache is set up once per process: make it read the new directory
    try:
      yield path
    finally:
      jax.config.update('jax_compilation_cache_dir', None)
      cc.reset_cache()

  @contextlib.contextmanager
  def compiling_setup(self):
    """The run's persistent compilation cache and its decoders' XLA options (`run` and its
    worker processes)."""
    with self.compilation_cache(), decoding.compiler_options(
        xla_backend_optimization_level=self.cfg.decoder_optimization_level):
      yield

  def run(self, stages: Sequence[str] = STAGES) -> dict[str, str]:
    """Runs (or resumes) the stages; returns the report's paths."""
    os.makedirs(self.out, exist_ok=True)
    self.check_config()
    with self.compiling_setup():
      return self._run(stages)

  def _run(self, stages: Sequence[str]) -> dict[str, str]:
    start = time.time()
    self.requested_stages = set(stages)
    for number, name in enumerate(STAGES, 1):
      if name not in stages:
        continue
      if name == 'student_raw' and not self.cfg.raw_ablation:
        continue
      if name == 'student_scratch' and not (self.cfg.scratch_ablation and
                                            self.cfg.student_init == 'teacher'):
        continue
      if name == 'student_ablations' and not self.cfg.extra_ablations:
        continue
      if name == 'ar_matched' and not self.trains_matched_ar:
        continue
      if name == 'student_scratch':
        self._set_aside_stale_scratch()
      marker = self.stage_result(name)
      if name != 'report' and marker is not None:
        alongside = (f', alongside {marker["concurrent_with"]}'
                     if marker.get('concurrent_with') else '')
        self.print(f'[{number}/{len(STAGES)}] {name}: done ({marker["seconds"]:.0f}s'
                   f'{alongside}), skipped.')
        continue
      result = self.run_stage(name)
      if name == 'report':
        paths = result
    self.print(f'quickstart: this invocation took {time.time() - start:.0f}s; report in '
               f'{self.path("report")}')
    return paths if 'report' in stages else {}

  def run_stage(self, name: str, concurrent_with: str | None = None) -> Any:
    """Runs one stage and writes its marker (the report stage: returns its paths).

    ``concurrent_with``: the stage it runs alongside, in a worker process (the marker says so:
    the report counts its seconds once, inside that stage's).
    """
    number = STAGES.index(name) + 1
    self.print(f'[{number}/{len(STAGES)}] {name}: {_STAGE_TEXT[name]}')
    speed = machine_speed() if name != 'report' else None  # outside the stage's seconds
    began = time.time()
    self._concurrent_with = concurrent_with
    try:
      with compile_time.CompileTimer() as compiling:
        self.compiling = compiling
        result = getattr(self, f'_stage_{name}')()
    finally:
      self.compiling = None
      self._concurrent_with = None
    seconds = time.time() - began
    if name == 'report':
      self.print(f'[{number}/{len(STAGES)}] report: ' +
                 ', '.join(f'{k} {v}' for k, v in result.items()))
      return result
    marker = {'seconds': seconds, 'result': result, 'compile': compiling.summary(),
              'matmul_gflops': speed,
              'finished': datetime.datetime.now().isoformat(timespec='seconds')}
    if concurrent_with:
      marker['concurrent_with'] = concurrent_with
    qs_eval.write_json(self.path('stages', f'{name}.json'), marker)
    self.print(f'[{number}/{len(STAGES)}] {name}: finished in {seconds:.0f}s '
               f'({compiling.total:.0f}s of it compiling {compiling.programs} programs).')
    return result

  def stage_result(self, name: str) -> dict[str, Any] | None:
    marker = self.path('stages', f'{name}.json')
    return qs_eval.read_json(marker) if os.path.isfile(marker) else None

  # ------------------------------------------------------------------ 1. data

  def _stage_data(self) -> dict[str, Any]:
    from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
    from padir.data import export  # pylint: disable=g-import-not-at-top
    self.register_task()
    counts = {}
    with self.bar(3, 'export', 'split') as bar:
      for split in ('train', 'validation', 'test'):
        split_dir = os.path.join(self.full_data, split)
        meta_path = os.path.join(split_dir, arrays_lib.METADATA_FILE)
        if os.path.isfile(meta_path) and os.path.isfile(
            os.path.join(split_dir, arrays_lib.TEXT_FILE)):
          meta = qs_eval.read_json(meta_path)
        else:
          meta = export.export_split(self.task_name, split, self.lengths, split_dir,
                                     write_text=True)
        counts[split] = {'num_examples': meta['num_examples'], 'overlong': meta['overlong']}
        bar.update(1)
    train = arrays_lib.ArrayDataset.load(os.path.join(self.full_data, 'train'), mmap=False)
    n = train.num_examples
    wanted = self.cfg.student_train_examples
    if wanted is None or wanted >= n:
      rows = np.arange(n)
    else:
      rows = np.sort(np.random.default_rng(self.cfg.subset_seed).choice(n, wanted,
                                                                         replace=False))
    texts = train.text()
    meta = dict(train.metadata)
    for key in ('format', 'format_version', 'num_examples', 'features'):
      meta.pop(key, None)
    meta.update(subset_of=os.path.join('data', 'full', 'train'), subset_seed=self.cfg.subset_seed)
    subset_train = os.path.join(self.subset_data, 'train')
    arrays_lib.write_split(subset_train, {k: np.asarray(v)[rows] for k, v in train.arrays.items()},
                           meta)
    arrays_lib.write_text(subset_train, [texts[i]['inputs'] for i in rows],
                          [texts[i]['references'] for i in rows])
    for split in ('validation', 'test'):
      target = os.path.join(self.subset_data, split)
      if os.path.isdir(target):
        shutil.rmtree(target)
      shutil.copytree(os.path.join(self.full_data, split), target)
    return {'task': self.task_name, 'splits': counts, 'subset_train_examples': int(len(rows)),
            'feature_lengths': self.lengths}

  # ------------------------------------------------------------------ 2, 4, 5. training

  def _train(self, stage: str, base_files: Sequence[str], data_dir: str,
             steps: int, bindings: Sequence[str] | None = None) -> dict[str, Any]:
    """Trains ``stage`` (its dir, data and steps); ``bindings`` replace the stage's own
    (`stage_bindings`) when given."""
    self._parse(base_files, self._stage_macros(stage, data_dir, steps),
                self.stage_bindings(stage) if bindings is None else bindings)
    return qs_train.train_stage(self, stage, stage_model(), data_dir, steps)

  def trains_alongside(self, stage: str) -> bool:
    """Whether ``stage`` trains alongside its partner now (`padir.quickstart_pairs`)."""
    return quickstart_pairs.trains_alongside(self, stage)

  def _set_aside_stale_scratch(self) -> None:
    quickstart_pairs.set_aside_stale_scratch(self)

  def _stage_teacher(self) -> dict[str, Any]:
    start = self.cfg.student_start_steps
    if start is None:
      return self._train('teacher', self.cfg.teacher_gin_files, self.full_data,
                         self.cfg.teacher_steps)
    # Two legs: the first (with its cooldown) is where the students start; the second
    # continues it to teacher_steps. Both take the teacher's stage bindings, the first then
    # its own (stage_bindings['teacher_start']).
    first = self._train(TEACHER_START, self.cfg.teacher_gin_files, self.full_data, start)
    self.print(f'  {TEACHER_START}: step {first["step"]}, where the students start; the '
               f'teacher trains on for {self.cfg.teacher_steps - start} steps.')
    if self.trains_alongside('teacher'):
      self.print('  student_raw starts from there too: it trains alongside the teacher, each '
                 'in a process on half of the CPU cores (QuickstartConfig.concurrent_training).')
      result = quickstart_pairs.train_alongside(self, '_train_teacher_leg', 'teacher',
                                                 'student_raw')
    else:
      result = self._train_teacher_leg()
    # The teacher's step counter restarted with its second leg: count both legs.
    result['legs'] = {TEACHER_START: {k: first[k] for k in ('step', 'cooldown_steps',
                                                             'train_metrics', 'eval_metrics')},
                      'teacher': {'step': result['step']}}
    result['step'] += first['step']
    result['init_from'] = None  # the first leg started from random weights
    return result

  def _train_teacher_leg(self) -> dict[str, Any]:
    """The teacher's second leg (from its first, ``teacher_start``)."""
    return self._train('teacher', self.cfg.teacher_gin_files, self.full_data,
                       self.cfg.teacher_steps - self.cfg.student_start_steps)

  def _stage_student_distilled(self) -> dict[str, Any]:
    self.student_model('student_distilled')  # checks the canvas settings before training
    if self.trains_alongside('student_distilled'):
      self.print('  student_scratch trains alongside, on the distilled data, each in a process '
                 'on half of the CPU cores (QuickstartConfig.concurrent_training).')
      return quickstart_pairs.train_alongside(self, '_train_student_distilled',
                                              'student_distilled', 'student_scratch')
    return self._train_student_distilled()

  def _train_student_distilled(self) -> dict[str, Any]:
    return self._train('student_distilled', self.cfg.student_gin_files, self.distilled_data,
                       self.cfg.student_steps)

  def _stage_student_raw(self) -> dict[str, Any]:
    self.student_model('student_raw')
    return self._train('student_raw', self.cfg.student_gin_files, self.subset_data,
                       self.cfg.student_steps)

  def _stage_student_scratch(self) -> dict[str, Any]:
    if self._concurrent_with == 'student_distilled':
      data = self.distilled_data  # before the select stage: see _set_aside_stale_scratch
    else:
      self._check_data_chosen('student_scratch')
      data = self.student_data('student_scratch')
    self.student_model('student_scratch')
    return self._train('student_scratch', self.cfg.student_gin_files, data,
                       self.cfg.student_steps)

  def _stage_student_ablations(self) -> dict[str, Any]:
    self._check_data_chosen('student_ablations')
    results = {}
    for name in self.cfg.extra_ablations:
      stage = f'student_{name}'
      marker = self.path('stages', 'ablations', f'{stage}.json')
      if os.path.isfile(marker):
        results[stage] = qs_eval.read_json(marker)
        continue
      self.student_model(stage)
      self.print(f'  ablation {stage}: ' + '; '.join(self.ablation_bindings(stage)))
      results[stage] = self._train(stage, self.cfg.student_gin_files, self.student_data(stage),
                                   self.cfg.student_steps)
      qs_eval.write_json(marker, results[stage])
    return results

  def _stage_ar_matched(self) -> dict[str, Any]:
    self._check_data_chosen('ar_matched')
    return self._train('ar_matched', self.cfg.teacher_gin_files, self.student_data('ar_matched'),
                       self.cfg.student_steps)

  def _stage_select(self) -> dict[str, Any]:
    from padir import quickstart_select  # pylint: disable=g-import-not-at-top
    return quickstart_select.select(self)

  def _stage_ablations(self) -> dict[str, Any]:
    from padir import quickstart_select  # pylint: disable=g-import-not-at-top
    return quickstart_select.ablations(self)

  # ------------------------------------------------------------------ 3. distillation

  def _stage_distill(self) -> dict[str, Any]:
    from padir import quickstart_select  # pylint: disable=g-import-not-at-top
    return quickstart_select.distill(self)

  def _stage_evaluate(self) -> dict[str, Any]:
    return qs_eval.evaluate(self)

  def _stage_benchmark(self) -> dict[str, Any]:
    return qs_eval.benchmark(self)

  def results(self) -> dict[str, Any]:
    """The report's results dict (`padir.report`), from the stage markers and eval files."""
    return quickstart_results.collect_results(self)

  def _stage_report(self) -> dict[str, str]:
    from padir import report  # pylint: disable=g-import-not-at-top
    return report.write_report(self.results(), self.path('report'))


_STAGE_TEXT = {
    'data': 'filtering and exporting the corpus',
    'teacher': 'training the AR teacher',
    'distill': 'choosing the teacher decoding on validation, then distilling the student subset',
    'student_distilled': 'training PaDIR on the distilled data',
    'student_raw': 'training PaDIR on the raw references',
    'select': 'choosing the training data and the PaDIR decoding setting on the validation split',
    'student_scratch': 'training the main student\'s recipe from random weights (ablation)',
    'student_ablations': 'training the extra ablation students on the main student\'s data',
    'ar_matched': 'training the AR teacher on for as many steps as the students',
    'ablations': 'the ablation table on the validation split',
    'evaluate': 'decoding the test split with every system',
    'benchmark': 'timing batch-1 decoding',
    'report': 'writing the report',
}


def load_config(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> QuickstartConfig:
  """Parses the quickstart gin files and bindings; returns the QuickstartConfig."""
  from padir import train  # pylint: disable=g-import-not-at-top,unused-import  (registrations)
  gin_utils.parse_gin(list(gin_files), list(gin_bindings), required=False, finalize=False)
  return QuickstartConfig()


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='padir quickstart', description=__doc__,
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=f'Gin flags: --gin_file=F (repeatable, read after {DEFAULT_GIN_FILE}), '
      '--gin.NAME=VALUE, --gin_bindings="NAME = VALUE". See docs/quickstart.md.')
  parser.add_argument('--output_dir', default=DEFAULT_OUTPUT_DIR,
                      help='where everything goes (default: %(default)s); rerun to resume')
  parser.add_argument('--stages', default=','.join(STAGES),
                      help='comma-separated stages to run (default: all, in order)')
  parser.add_argument('--no_progress', action='store_true', help='plain log lines, no bars')
  return parser


@errors.command('padir quickstart')
def main(argv: Sequence[str] | None = None) -> int:
  """``padir quickstart`` / ``python -m padir.quickstart``."""
  argv = list(sys.argv[1:] if argv is None else argv)
  parser = _parser()
  if any(a in ('-h', '--help') for a in argv):
    parser.print_help()
    return 0
  try:
    gin_args = gin_utils.split_gin_args(argv)
  except gin_utils.GinFlagError as err:
    print(f'padir quickstart: {err}', file=sys.stderr)
    return 2
  flags = parser.parse_args(gin_args.rest)
  stages = [s.strip() for s in flags.stages.split(',') if s.strip()]
  unknown = sorted(set(stages) - set(STAGES))
  if unknown:
    print(f'padir quickstart: unknown stage(s) {unknown}; the stages are {", ".join(STAGES)}.',
          file=sys.stderr)
    return 2
  gin_files = [DEFAULT_GIN_FILE] + gin_args.gin_files
  try:
    gin_utils._register_search_paths(gin_args.gin_search_paths)  # pylint: disable=protected-access
    config = load_config(gin_files, gin_args.gin_bindings)
    gin_utils.check_command_line_bindings(gin_args.gin_bindings)  # typos before any stage runs
    run = Quickstart(config, flags.output_dir, gin_files, gin_args.gin_bindings,
                     progress=not flags.no_progress, gin_search_paths=gin_args.gin_search_paths)
    run.run(stages)
  except Stopped as err:
    print(f'padir quickstart: {err}', file=sys.stderr)
    return err.code
  except KeyboardInterrupt:
    print('\npadir quickstart: interrupted; rerun the same command to resume.', file=sys.stderr)
    return 130
  except (gin_utils.GinFlagError, ValueError, FileNotFoundError, workers.JobError) as err:
    print(f'padir quickstart: {err}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
