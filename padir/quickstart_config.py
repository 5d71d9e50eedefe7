"""The configuration of ``padir quickstart``: its stages and `QuickstartConfig` (gin:
``padir.quickstart.QuickstartConfig``), with the checks that refuse a bad setting before any
stage runs. The driver is `padir.quickstart`."""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Mapping

from padir import gin_utils
from padir.refine_decoding import RefineConfig

STAGES = ('data', 'teacher', 'distill', 'student_distilled', 'student_raw', 'select',
          'student_scratch', 'student_ablations', 'ar_matched', 'ablations', 'evaluate',
          'benchmark', 'report')
# The teacher's first leg, where the students start (QuickstartConfig.student_start_steps).
TEACHER_START = 'teacher_start'
# The stages that train a model (QuickstartConfig.stage_bindings).
TRAINING_STAGES = ('teacher', 'student_distilled', 'student_raw', 'student_scratch',
                   'ar_matched')
# The student stages that differ only in their training data; the select stage picks one.
DATA_STUDENTS = ('student_distilled', 'student_raw')
# The QuickstartConfig fields that make up the select stage's grid (`padir.selection.grid`).
SELECT_GRID_FIELDS = ('select_rules', 'select_iterations', 'select_length_beams',
                      'select_rerank', 'select_stutter', 'select_prune', 'select_collapse',
                      'select_avoid_repeats', 'select_length_offsets', 'select_teacher_fix',
                      'select_teacher_fix_rounds')
DATA_TEXT = {'student_distilled': 'distilled targets', 'student_raw': 'human references'}

def _bindings_by_name(value: Mapping[str, Any]) -> dict[str, tuple[str, ...]]:
  """``{name: bindings}`` with string keys and tuple values (one binding may be a string)."""
  return {str(k): tuple([v] if isinstance(v, str) else v) for k, v in dict(value).items()}


@dataclasses.dataclass(frozen=True)
class QuickstartConfig:
  """What the quickstart runs (gin: ``padir.quickstart.QuickstartConfig``).

  Attributes:
    teacher_gin_files: experiment gin of the AR teacher (read before the quickstart files).
    student_gin_files: experiment gin of the PaDIR students.
    task: a Bible direction of `padir.data.tasks.BIBLE_TASKS` (re-registered with
      ``overlong``) or any registered padir task (used as it is).
    vocabulary: the run's vocabulary (``VOCABULARY``).
    feature_lengths: ``{'inputs': L_in, 'targets': L}`` (``TASK_FEATURE_LENGTHS``).
    overlong: 'filter' (drop sentences longer than the lengths) or 'truncate'.
    teacher_steps: training steps of the teacher (``TEACHER_STEPS``).
    student_steps: training steps of each student (``STUDENT_STEPS``).
    student_train_examples: size of the random training subset that is distilled and that
      both students train on (None: the whole filtered train split).
    subset_seed: seed of that subset.
    distill_choices: the teacher decodings tried for distillation, as ``(beam_size,
      length_penalty)`` or ``(beam_size, length_penalty, no_repeat_ngram)`` (beam 1 =
      greedy; `padir.ar_decoding.ARConfig.no_repeat_ngram`, 0 = off); of those within ``select_margin`` validation BLEU
      of the best, the one whose outputs are closest to the reference length distills,
      preferring those that loop at most a tenth of the time, then those at least 0.95x as long
      (`padir.quickstart_select.choose_distillation_row`).
    student_init: 'teacher' (the students start from the AR teacher's weights; only the
      length head starts fresh, `padir.init_from`) or 'scratch'.
    student_start_steps: with ``student_init='teacher'``, the teacher trains in two legs: the
      first ``student_start_steps`` steps (a run of its own, with its cooldown, kept in
      ``OUTPUT_DIR/teacher_start``), from which the students start, then ``teacher_steps -
      student_start_steps`` more from there. With ``student_start_steps + student_steps ==
      teacher_steps`` the students and the teacher that distills and re-ranks have trained
      as many steps, on the same start, and the teacher is the AR baseline at equal training
      (``matched_ar`` is then not needed and is ignored). None: the students start from the
      finished teacher.
    distill_batch_size: sentences per distillation batch.
    eval_batch_size: sentences per evaluation batch.
    eval_examples: test sentences to decode (None: the whole filtered test split).
    eval_beam_size: also report the teacher with this beam (0: greedy only).
    iterations: PaDIR iteration counts to evaluate and time.
    refine: the students' base decoding settings (canvas, buckets, scoring); the rule, passes,
      length beam, re-ranking and stutter removal come from the validation choice, and the
      passes of the iteration sweep from ``iterations``.
    raw_ablation: also train and evaluate the student on the raw references.
    choose_data: the select stage chooses the students' training data on validation: the
      distilled and the raw student both decode every candidate setting, and the rule picks a
      (student, setting) pair; the winner is the *main* student (the sweep over iterations,
      the targets, the ablations). False (or ``raw_ablation=False``): the distilled student is
      the main one, as in the paper's recipe.
    scratch_ablation: also train the main student's recipe from random weights (ablation of
      ``student_init='teacher'``).
    matched_ar: with ``student_init='teacher'`` and no ``student_start_steps``, also continue
      the AR teacher for ``student_steps`` on the main student's data (``ar_matched``): the
      students have trained ``teacher_steps + student_steps`` steps, and this AR model as many.
    select_rules, select_iterations, select_length_beams, select_rerank, select_stutter,
      select_prune, select_collapse, select_avoid_repeats, select_length_offsets,
      select_teacher_fix, select_teacher_fix_rounds: the grid of PaDIR decoding settings
      tried on the validation split (`padir.selection.grid`; ``select_prune``: passes after
      which only the best length candidate goes on, 0 = none; ``select_collapse``: merge
      adjacent repeated tokens of the output, `RefineConfig.collapse_repeats`;
      ``select_avoid_repeats``: a proposal equal to its neighbour's takes its runner-up,
      `RefineConfig.avoid_repeats`; ``select_length_offsets``: tokens added to each predicted
      length, `RefineConfig.length_offset`; ``select_teacher_fix``: with re-ranking, the
      teacher replaces output tokens it proposes otherwise above this probability, 0 = off,
      `RefineConfig.teacher_fix_threshold`; ``select_teacher_fix_rounds``: rounds of those
      fixes, each after the first one more teacher pass, `RefineConfig.teacher_fix_rounds`).
    select_margin: the chosen setting is the fastest within this many BLEU of the teacher on
      validation, else the best.
    select_examples: validation sentences used for the choice (None: all).
    extra_ablations: more students for the ablation table, each trained on the main student's
      data like the main one plus its gin bindings: ``{name: (binding, ...)}`` trains
      ``student_<name>`` (e.g. ``{'slot_length_head':
      ("padir.builders.network_config.length_head = 'slot'",)}``). Off by default: each costs
      one more student training.
    stage_bindings: gin bindings for some training stages only, added after the quickstart's
      files and flags: ``{stage: (binding, ...)}`` with a stage among ``TRAINING_STAGES``,
      ``'student_<name>'`` of ``extra_ablations``, ``'students'`` (every student stage; a
      stage's own bindings come after these) or ``'teacher_start'`` (the teacher's first leg,
      with ``student_start_steps``; after the teacher's). E.g. ``{'students':
      ('padir.optimizers.rsqrt_schedule.base_learning_rate = 2.0',)}`` trains the students at
      another rate than the teacher and ``ar_matched``. The two data students must keep one
      network (the select stage decodes both with the distilled student's).
    bench_examples: test sentences timed at batch 1 (0: no latency measurement).
    small_preset: also time randomly initialised networks of this T5.1.1 preset with the same
      decoding settings ('' or None: skip).
    small_iterations: PaDIR iteration counts timed at the ``small_preset`` size.
    small_bench_examples: sentences timed at the ``small_preset`` size.
    compilation_cache: keep the compiled programs in ``<output_dir>/jax_cache`` (JAX's
      persistent compilation cache) while the run lasts, so that stages compiling the same
      programs (the students, the teacher and the AR model trained as long, the decoders) and a
      resumed run load them instead of compiling again. Ignored when JAX already has a cache
      directory (``JAX_COMPILATION_CACHE_DIR``); False: no cache.
    decoder_optimization_level: LLVM optimisation level (XLA's
      ``xla_backend_optimization_level``, 0-3) of the decoders the run compiles (distillation,
      validation choices, evaluation, latency); None: XLA's default. Training is not affected.
      The AR and PaDIR decoders that are timed against each other compile alike.
    concurrent_training: on a CPU backend (Linux, at least 2 cores), train two stages that do
      not wait for each other at once, each in a process pinned to half of the cores
      (`padir.workers`): the teacher's second leg with ``student_raw``, ``student_distilled``
      with ``student_scratch`` (on the distilled data; if the select stage then chooses the
      human references, it is set aside and retrained). Small models keep the cores busier
      that way. False, or on an accelerator: one stage at a time. Latency is never measured
      while another job runs.
  """

  teacher_gin_files: tuple[str, ...] = ('gin/experiments/bible_es_en_ar.gin',)
  student_gin_files: tuple[str, ...] = ('gin/experiments/bible_es_en_padir.gin',)
  task: str = 'bible_es_en'
  vocabulary: str = 'bible'
  feature_lengths: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {'inputs': 40, 'targets': 40})
  overlong: str = 'filter'
  teacher_steps: int = 750
  student_steps: int = 750
  student_train_examples: int | None = None
  subset_seed: int = 0
  distill_choices: tuple[tuple[float, ...], ...] = ((1, 0.0), (1, 0.0, 4), (4, 1.0), (4, 1.0, 4),
                                                  (4, 1.5), (4, 1.5, 4), (4, 2.0, 4))
  student_init: str = 'teacher'
  student_start_steps: int | None = None
  distill_batch_size: int = 64
  eval_batch_size: int = 64
  eval_examples: int | None = None
  eval_beam_size: int = 4
  iterations: tuple[int, ...] = (1, 2, 4, 8)
  refine: RefineConfig = dataclasses.field(default_factory=RefineConfig)
  raw_ablation: bool = True
  choose_data: bool = True
  scratch_ablation: bool = True
  matched_ar: bool = True
  select_rules: tuple[str, ...] = ('mask_predict',)
  select_iterations: tuple[int, ...] = (1, 2, 3, 4)
  select_length_beams: tuple[int, ...] = (1, 3, 5)
  select_rerank: tuple[bool, ...] = (False, True)
  select_stutter: tuple[bool, ...] = (False,)
  select_prune: tuple[int, ...] = (0,)
  select_collapse: tuple[bool, ...] = (False,)
  select_avoid_repeats: tuple[bool, ...] = (False,)
  select_length_offsets: tuple[int, ...] = (0,)
  select_teacher_fix: tuple[float, ...] = (0.0,)
  select_teacher_fix_rounds: tuple[int, ...] = (1,)
  select_margin: float = 1.0
  select_examples: int | None = None
  extra_ablations: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  stage_bindings: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
  bench_examples: int = 40
  small_preset: str | None = 'small'
  small_iterations: tuple[int, ...] = (1, 4)
  small_bench_examples: int = 10
  compilation_cache: bool = True
  decoder_optimization_level: int | None = None
  concurrent_training: bool = True

  def __post_init__(self):
    for name in ('teacher_gin_files', 'student_gin_files', 'iterations', 'small_iterations',
                 *SELECT_GRID_FIELDS):
      value = getattr(self, name)
      if isinstance(value, (list, str)):
        object.__setattr__(self, name, tuple([value] if isinstance(value, str) else value))
    object.__setattr__(self, 'feature_lengths', dict(self.feature_lengths))
    if set(self.feature_lengths) != {'inputs', 'targets'} or \
        min(self.feature_lengths.values()) < 2:
      raise ValueError(f'QuickstartConfig.feature_lengths={self.feature_lengths} needs inputs '
                       'and targets >= 2 (set TASK_FEATURE_LENGTHS).')
    if self.overlong not in ('filter', 'truncate'):
      raise ValueError(f"QuickstartConfig.overlong={self.overlong!r} must be 'filter' or "
                       "'truncate'.")
    object.__setattr__(self, 'extra_ablations', _bindings_by_name(self.extra_ablations))
    for name in self.extra_ablations:
      if not re.fullmatch(r'[a-z0-9_]+', name) or f'student_{name}' in STAGES:
        raise ValueError(f'QuickstartConfig.extra_ablations: {name!r} must be a new name of '
                         'lowercase letters, digits and underscores.')
    object.__setattr__(self, 'stage_bindings', _bindings_by_name(self.stage_bindings))
    known = (*TRAINING_STAGES, 'students', TEACHER_START,
             *(f'student_{name}' for name in self.extra_ablations))
    for stage, bindings in self.stage_bindings.items():
      if stage not in known:
        raise ValueError(f'QuickstartConfig.stage_bindings: {stage!r} is not a training stage; '
                         f'use one of {", ".join(known)}.')
      if not all(isinstance(b, str) for b in bindings):
        raise ValueError(f'QuickstartConfig.stage_bindings[{stage!r}]={bindings!r} must be gin '
                         "binding strings, e.g. ('padir.optimizers.rsqrt_schedule."
                         "base_learning_rate = 2.0',).")
    object.__setattr__(self, 'distill_choices',
                       tuple(tuple(c) for c in self.distill_choices))
    if not self.distill_choices or any(
        len(c) not in (2, 3) or c[0] < 1 or (len(c) == 3 and (int(c[2]) != c[2] or c[2] < 0))
        for c in self.distill_choices):
      raise ValueError(f'QuickstartConfig.distill_choices={self.distill_choices} must be '
                       '(beam_size >= 1, length_penalty) pairs or (beam_size, length_penalty, '
                       'no_repeat_ngram >= 0) triples.')
    if self.student_init not in ('teacher', 'scratch'):
      raise ValueError(f"QuickstartConfig.student_init={self.student_init!r} must be 'teacher' "
                       "or 'scratch'.")
    for name in SELECT_GRID_FIELDS:
      if not getattr(self, name):
        raise ValueError(f'QuickstartConfig.{name} is empty; give at least one value.')
    if any(not isinstance(t, int) or not 1 <= t for t in self.select_iterations):
      raise ValueError(f'QuickstartConfig.select_iterations={self.select_iterations} must be '
                       'integers >= 1.')
    if any(not isinstance(o, int) or isinstance(o, bool) for o in self.select_length_offsets):
      raise ValueError(f'QuickstartConfig.select_length_offsets={self.select_length_offsets} '
                       'must be integers (tokens added to each predicted length).')
    if any(isinstance(f, bool) or not isinstance(f, (int, float)) or not 0 <= f < 1
           for f in self.select_teacher_fix):
      raise ValueError(f'QuickstartConfig.select_teacher_fix={self.select_teacher_fix} must be '
                       'probabilities in [0, 1) (0 = the teacher fixes no token).')
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1
           for n in self.select_teacher_fix_rounds):
      raise ValueError(f'QuickstartConfig.select_teacher_fix_rounds='
                       f'{self.select_teacher_fix_rounds} must be integers >= 1 (rounds of the '
                       'teacher\'s fixes).')
    if any(not isinstance(p, int) or p < 0 for p in self.select_prune):
      raise ValueError(f'QuickstartConfig.select_prune={self.select_prune} must be integers '
                       '>= 0 (0 = no pruning).')
    if any(not isinstance(b, int) or b < 1 or b % 2 == 0 for b in self.select_length_beams):
      raise ValueError(f'QuickstartConfig.select_length_beams={self.select_length_beams} must '
                       'be odd integers >= 1.')
    for name in ('teacher_steps', 'student_steps', 'distill_batch_size', 'eval_batch_size'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'QuickstartConfig.{name}={value!r} must be an integer >= 1.')
    start = self.student_start_steps
    if start is not None:
      if not isinstance(start, int) or not 1 <= start < self.teacher_steps:
        raise ValueError(f'QuickstartConfig.student_start_steps={start!r} must be an integer '
                         f'between 1 and teacher_steps - 1 ({self.teacher_steps - 1}), or None '
                         '(the students start from the finished teacher).')
      if self.student_init != 'teacher':
        raise ValueError(f'QuickstartConfig.student_start_steps={start} is the teacher\'s step '
                         f"the students start from, but student_init={self.student_init!r}: "
                         "set student_init='teacher' or student_start_steps=None.")
    for name in ('eval_beam_size', 'bench_examples', 'small_bench_examples'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 0:
        raise ValueError(f'QuickstartConfig.{name}={value!r} must be an integer >= 0.')
    if self.student_train_examples is not None and self.student_train_examples < 1:
      raise ValueError(f'QuickstartConfig.student_train_examples={self.student_train_examples}'
                       ' must be >= 1 or None (the whole train split).')
    if not self.iterations or any(not isinstance(t, int) or t < 1 for t in self.iterations):
      raise ValueError(f'QuickstartConfig.iterations={self.iterations} must be integers >= 1.')
    level = self.decoder_optimization_level
    if level is not None and (not isinstance(level, int) or not 0 <= level <= 3):
      raise ValueError(f'QuickstartConfig.decoder_optimization_level={level!r} must be 0, 1, 2, '
                       "3 or None (XLA's default).")
    if not isinstance(self.concurrent_training, bool):
      raise ValueError(f'QuickstartConfig.concurrent_training={self.concurrent_training!r} '
                       'must be True or False.')
    if not isinstance(self.refine, RefineConfig):
      raise ValueError('QuickstartConfig.refine must be a padir.refine_decoding.RefineConfig '
                       '(@padir.refine_decoding.RefineConfig() in gin).')

  @property
  def max_iterations(self) -> int:
    return max(self.iterations)

  def to_json(self) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(self), default=str))


QuickstartConfig = gin_utils.configurable(QuickstartConfig, module='padir.quickstart')
