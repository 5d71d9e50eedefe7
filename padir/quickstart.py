r"""``padir quickstart``: AR teacher -> distillation -> PaDIR student -> speed-quality report.

  padir quickstart [--output_dir=padir_quickstart] [--gin_file=F ...] [--gin.NAME=VALUE ...]

On the embedded Bible corpus (Spanish -> English), one command:

  1. data               filters the task to sentences that fit the feature lengths and exports
                        train / validation / test as arrays (with every reference), plus the
                        random training subset the students use
  2. teacher            trains the AR teacher (padir.train on the full filtered train split)
  3. distill            decodes the subset's sources with the teacher (beam search, batched)
                        into a distilled task (padir.distill) and exports it
  4. student_distilled  trains PaDIR on the distilled subset
  5. student_raw        trains PaDIR on the same sources with the human references (ablation)
  6. evaluate           test split: multi-reference BLEU / chrF, repetition rate, length error
                        of AR greedy and beam, and of both students at 1/2/4/8 iterations
  7. benchmark          batch-1 latency of AR greedy and PaDIR at 1/2/4/8 iterations on this
                        machine, interleaved, and the same at the T5.1.1 'small' size
  8. report             OUTPUT_DIR/report/report.{md,json,png} (padir.report)

Every stage shows a progress bar with an ETA and leaves a marker in ``OUTPUT_DIR/stages/``
when it finishes; rerunning the same command skips finished stages and resumes the current one
(training from its last checkpoint, distillation from its last saved chunk, evaluation from its
last finished system). A rerun with a different configuration in the same directory is refused.

Configuration is gin: ``padir/gin/runs/quickstart.gin`` (CPU-sized defaults, about 30 minutes
on two cores) is always read first; ``--gin_file`` files and ``--gin.NAME=VALUE`` bindings come
after it, e.g. ``--gin_file=padir/gin/experiments/quickstart_small.gin`` (T5.1.1 small, for a
GPU) or ``--gin.TEACHER_STEPS=3000``. Each training stage parses its experiment gin
(``QuickstartConfig.teacher_gin_files`` / ``student_gin_files``), then the quickstart files and
bindings, then its own MODEL_DIR, MIXTURE_OR_TASK_NAME and TRAIN_STEPS.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shutil
import sys
import time
from typing import Any, Callable, Mapping, Sequence

import gin
import jax
import numpy as np

from padir import gin_utils
from padir.ar_decoding import ARConfig
from padir.refine_decoding import RefineConfig

DEFAULT_OUTPUT_DIR = 'padir_quickstart'
DEFAULT_GIN_FILE = 'padir/gin/runs/quickstart.gin'
STAGES = ('data', 'teacher', 'distill', 'student_distilled', 'student_raw', 'evaluate',
          'benchmark', 'report')
_STEP_LINE = re.compile(r'^step (\d+)/(\d+) \| (.*)$')
SIGTERM_EXIT_CODE = 143


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
    distill_beam_size: beams of the teacher when distilling (1 = greedy).
    distill_length_penalty: its brevity-penalty exponent.
    distill_batch_size: sentences per distillation batch.
    eval_batch_size: sentences per evaluation batch.
    eval_examples: test sentences to decode (None: the whole filtered test split).
    eval_beam_size: also report the teacher with this beam (0: greedy only).
    iterations: PaDIR iteration counts to evaluate and time.
    refine: the students' decoding settings (canvas, length beam, remasking); its
      num_iterations is replaced by each of ``iterations``.
    raw_ablation: also train and evaluate the student on the raw references.
    bench_examples: test sentences timed at batch 1 (0: no latency measurement).
    small_preset: also time randomly initialised networks of this T5.1.1 preset with the same
      decoding settings ('' or None: skip).
    small_iterations: PaDIR iteration counts timed at the ``small_preset`` size.
    small_bench_examples: sentences timed at the ``small_preset`` size.
  """

  teacher_gin_files: tuple[str, ...] = ('padir/gin/experiments/bible_es_en_ar.gin',)
  student_gin_files: tuple[str, ...] = ('padir/gin/experiments/bible_es_en_padir.gin',)
  task: str = 'bible_es_en'
  vocabulary: str = 'bible'
  feature_lengths: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {'inputs': 40, 'targets': 40})
  overlong: str = 'filter'
  teacher_steps: int = 1000
  student_steps: int = 1000
  student_train_examples: int | None = None
  subset_seed: int = 0
  distill_beam_size: int = 4
  distill_length_penalty: float = 0.6
  distill_batch_size: int = 64
  eval_batch_size: int = 64
  eval_examples: int | None = None
  eval_beam_size: int = 4
  iterations: tuple[int, ...] = (1, 2, 4, 8)
  refine: RefineConfig = dataclasses.field(default_factory=RefineConfig)
  raw_ablation: bool = True
  bench_examples: int = 40
  small_preset: str | None = 'small'
  small_iterations: tuple[int, ...] = (1, 4)
  small_bench_examples: int = 10

  def __post_init__(self):
    for name in ('teacher_gin_files', 'student_gin_files', 'iterations', 'small_iterations'):
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
    for name in ('teacher_steps', 'student_steps', 'distill_batch_size', 'eval_batch_size',
                 'distill_beam_size'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'QuickstartConfig.{name}={value!r} must be an integer >= 1.')
    for name in ('eval_beam_size', 'bench_examples', 'small_bench_examples'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 0:
        raise ValueError(f'QuickstartConfig.{name}={value!r} must be an integer >= 0.')
    if self.student_train_examples is not None and self.student_train_examples < 1:
      raise ValueError(f'QuickstartConfig.student_train_examples={self.student_train_examples}'
                       ' must be >= 1 or None (the whole train split).')
    if not self.iterations or any(not isinstance(t, int) or t < 1 for t in self.iterations):
      raise ValueError(f'QuickstartConfig.iterations={self.iterations} must be integers >= 1.')
    if not isinstance(self.refine, RefineConfig):
      raise ValueError('QuickstartConfig.refine must be a padir.refine_decoding.RefineConfig '
                       '(@padir.refine_decoding.RefineConfig() in gin).')

  @property
  def max_iterations(self) -> int:
    return max(self.iterations)

  def to_json(self) -> dict[str, Any]:
    return json.loads(json.dumps(dataclasses.asdict(self), default=str))


QuickstartConfig = gin_utils.configurable(QuickstartConfig, module='padir.quickstart')


def stage_model(model: Any = gin.REQUIRED) -> Any:
  """The ``MODEL`` of the gin config parsed for a stage (bound in quickstart.gin)."""
  return model


stage_model = gin_utils.configurable(stage_model, module='padir.quickstart')


def _count_params(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


def _latest_step(model_dir: str) -> int:
  if not os.path.isdir(model_dir):
    return 0
  steps = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
  return max(steps, default=0)


def _write_json(path: str, value: Any) -> None:
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=2, sort_keys=True, default=str)
    f.write('\n')
  os.replace(path + '.tmp', path)


def _read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def environment() -> dict[str, Any]:
  """Hardware and software facts for the report."""
  cpu = platform.processor() or platform.machine()
  try:
    with open('/proc/cpuinfo', encoding='utf-8') as f:
      names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
    if names:
      cpu = names[0]
  except OSError:
    pass
  import flax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {
      'cpu': cpu,
      'cpu_count': os.cpu_count(),
      'jax_backend': jax.default_backend(),
      'devices': f'{jax.device_count()} x {getattr(device, "device_kind", device.platform)}',
      'platform': platform.platform(),
      'python': platform.python_version(),
      'jax': jax.__version__,
      'flax': flax.__version__,
  }


class Quickstart:
  """One quickstart run in ``output_dir`` (see the module docstring)."""

  def __init__(self, config: QuickstartConfig, output_dir: str, gin_files: Sequence[str],
               gin_bindings: Sequence[str], *, progress: bool = True,
               print_fn: Callable[[str], Any] = print):
    self.cfg = config
    self.out = os.path.abspath(os.path.expanduser(output_dir))
    self.gin_files = list(gin_files)
    self.gin_bindings = list(gin_bindings)
    self.progress = progress
    self.print = print_fn
    self.lengths = dict(config.feature_lengths)
    from padir.data import tasks  # pylint: disable=g-import-not-at-top
    self.filtered_task = config.task in tasks.BIBLE_TASKS
    self.task_name = f'quickstart_{config.task}' if self.filtered_task else config.task

  # ------------------------------------------------------------------ paths and plumbing

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

  def _bar(self, total: int | None, desc: str, unit: str, initial: int = 0):
    from tqdm.auto import tqdm  # pylint: disable=g-import-not-at-top
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not self.progress,
                dynamic_ncols=True)

  def _say(self, bar: Any, line: str) -> None:
    if self.progress and bar is not None:
      bar.write(line)
    else:
      self.print(line)

  def _register_task(self) -> None:
    from padir.data import tasks  # pylint: disable=g-import-not-at-top
    if self.filtered_task:
      src, tgt, refs = tasks.BIBLE_TASKS[self.cfg.task]
      tasks.register_bible_task(self.task_name, src, tgt, refs, vocabulary=self.cfg.vocabulary,
                                overlong=self.cfg.overlong)
    else:
      tasks.get_task(self.task_name)

  def _parse(self, base_files: Sequence[str], macros: Mapping[str, Any]) -> None:
    """Parses a stage's gin: its experiment, the quickstart files and bindings, its macros."""
    own = [f'{k} = {v!r}' for k, v in macros.items()]
    gin_utils.parse_gin(list(base_files) + self.gin_files, self.gin_bindings + own,
                        finalize=False)

  def _stage_macros(self, stage: str, data_dir: str, steps: int) -> dict[str, Any]:
    return {'MODEL_DIR': self.path(stage), 'MIXTURE_OR_TASK_NAME': data_dir,
            'TRAIN_STEPS': steps}

  def _teacher_model(self) -> Any:
    self._parse(self.cfg.teacher_gin_files,
                self._stage_macros('teacher', self.full_data, self.cfg.teacher_steps))
    return stage_model()

  def _student_model(self, stage: str = 'student_distilled') -> Any:
    data = self.distilled_data if stage == 'student_distilled' else self.subset_data
    self._parse(self.cfg.student_gin_files,
                self._stage_macros(stage, data, self.cfg.student_steps))
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
      saved = _read_json(path)
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
      _write_json(path, record)

  def run(self, stages: Sequence[str] = STAGES) -> dict[str, str]:
    """Runs (or resumes) the stages; returns the report's paths."""
    os.makedirs(self.out, exist_ok=True)
    self.check_config()
    start = time.time()
    for number, name in enumerate(STAGES, 1):
      if name not in stages:
        continue
      if name == 'student_raw' and not self.cfg.raw_ablation:
        continue
      marker = self.path('stages', f'{name}.json')
      if name != 'report' and os.path.isfile(marker):
        self.print(f'[{number}/{len(STAGES)}] {name}: done '
                   f'({_read_json(marker)["seconds"]:.0f}s), skipped.')
        continue
      self.print(f'[{number}/{len(STAGES)}] {name}: {_STAGE_TEXT[name]}')
      began = time.time()
      result = getattr(self, f'_stage_{name}')()
      seconds = time.time() - began
      if name == 'report':
        self.print(f'[{number}/{len(STAGES)}] report: ' +
                   ', '.join(f'{k} {v}' for k, v in result.items()))
        paths = result
      else:
        _write_json(marker, {'seconds': seconds, 'result': result,
                             'finished': datetime.datetime.now().isoformat(timespec='seconds')})
        self.print(f'[{number}/{len(STAGES)}] {name}: finished in {seconds:.0f}s.')
    self.print(f'quickstart: this invocation took {time.time() - start:.0f}s; report in '
               f'{self.path("report")}')
    return paths if 'report' in stages else {}

  def stage_result(self, name: str) -> dict[str, Any] | None:
    marker = self.path('stages', f'{name}.json')
    return _read_json(marker) if os.path.isfile(marker) else None

  # ------------------------------------------------------------------ 1. data

  def _stage_data(self) -> dict[str, Any]:
    from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
    from padir.data import export  # pylint: disable=g-import-not-at-top
    self._register_task()
    counts = {}
    with self._bar(3, 'export', 'split') as bar:
      for split in ('train', 'validation', 'test'):
        split_dir = os.path.join(self.full_data, split)
        meta_path = os.path.join(split_dir, arrays_lib.METADATA_FILE)
        if os.path.isfile(meta_path) and os.path.isfile(
            os.path.join(split_dir, arrays_lib.TEXT_FILE)):
          meta = _read_json(meta_path)
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
             steps: int) -> dict[str, Any]:
    from padir import train as train_lib  # pylint: disable=g-import-not-at-top
    self._parse(base_files, self._stage_macros(stage, data_dir, steps))
    model = stage_model()
    model_dir = self.path(stage)
    with self._bar(steps, stage, 'step', initial=min(_latest_step(model_dir), steps)) as bar:

      def printer(line: str) -> None:
        match = _STEP_LINE.match(line)
        if match is None:
          self._say(bar, line)
          return
        step = int(match.group(1))
        if self.progress:
          bar.update(step - bar.n)
          shown = [p for p in match.group(3).split(' | ')
                   if p.split(' ')[0] in ('loss', 'acc', 'len_acc')]
          bar.set_postfix_str(' | '.join(shown), refresh=True)
        else:
          self.print(line)

      result = train_lib.train(print_fn=printer)
    if result.stopped_by_signal:
      raise _Stopped(f'{stage} stopped by SIGTERM at step {result.step}; rerun to resume.')
    return {
        'step': result.step,
        'train_metrics': result.train_metrics,
        'eval_metrics': result.eval_metrics,
        'params': _count_params(result.state.params),
        'model': type(model).__name__,
        'network': {k: v for k, v in dataclasses.asdict(model.network_config).items()
                    if k in ('emb_dim', 'num_heads', 'head_dim', 'mlp_dim',
                             'num_encoder_layers', 'num_decoder_layers', 'dropout_rate',
                             'positional_attention', 'vocab_size', 'max_target_length')},
        'data': data_dir,
    }

  def _stage_teacher(self) -> dict[str, Any]:
    return self._train('teacher', self.cfg.teacher_gin_files, self.full_data,
                       self.cfg.teacher_steps)

  def _stage_student_distilled(self) -> dict[str, Any]:
    self._student_model('student_distilled')  # checks the canvas settings before training
    return self._train('student_distilled', self.cfg.student_gin_files, self.distilled_data,
                       self.cfg.student_steps)

  def _stage_student_raw(self) -> dict[str, Any]:
    self._student_model('student_raw')
    return self._train('student_raw', self.cfg.student_gin_files, self.subset_data,
                       self.cfg.student_steps)

  # ------------------------------------------------------------------ 3. distillation

  def _stage_distill(self) -> dict[str, Any]:
    from padir import datasets as datasets_lib  # pylint: disable=g-import-not-at-top
    from padir import distill as distill_lib  # pylint: disable=g-import-not-at-top
    from padir import partitioning  # pylint: disable=g-import-not-at-top
    teacher = self._teacher_model()
    self._register_task()
    decoding = ARConfig(method='beam' if self.cfg.distill_beam_size > 1 else 'greedy',
                        beam_size=self.cfg.distill_beam_size,
                        length_penalty=self.cfg.distill_length_penalty)
    dataset = datasets_lib.DatasetConfig(source=self.subset_data, split='train',
                                         batch_size=self.cfg.distill_batch_size,
                                         task_feature_lengths=self.lengths, shuffle=False)
    result = distill_lib.distill(
        model=teacher, checkpoint_path=self.path('teacher'),
        partitioner=partitioning.Partitioner(), dataset_cfg=dataset,
        output_dir=self.path('distill'), task_name=f'{self.task_name}_distilled',
        base_task=self.task_name, decode_kwargs={'decode_config': decoding},
        export_feature_lengths=self.lengths, overlong=self.cfg.overlong,
        progress=self.progress, print_fn=self.print)
    summary = dict(result.summary)
    summary['decode_seconds'] = result.seconds or summary.get('decode_seconds', 0.0)
    return summary

  # ------------------------------------------------------------------ 6. evaluation

  def _systems(self) -> list[dict[str, Any]]:
    """Every decoded system: name, label, model stage, kind, decode config."""
    out = [{'name': 'ar_greedy', 'label': 'AR teacher, greedy', 'model': 'teacher',
            'kind': 'ar', 'config': ARConfig(method='greedy')}]
    if self.cfg.eval_beam_size > 1:
      out.append({'name': f'ar_beam{self.cfg.eval_beam_size}',
                  'label': f'AR teacher, beam {self.cfg.eval_beam_size}', 'model': 'teacher',
                  'kind': 'ar', 'config': ARConfig(method='beam',
                                                   beam_size=self.cfg.eval_beam_size)})
    students = [('student_distilled', 'distilled')]
    if self.cfg.raw_ablation:
      students.append(('student_raw', 'raw'))
    for stage, short in students:
      for t in self.cfg.iterations:
        config = dataclasses.replace(self.cfg.refine, num_iterations=t,
                                     return_history=t == self.cfg.max_iterations)
        out.append({'name': f'padir_{short}_t{t}', 'label': f'PaDIR {short}, {t} it.',
                    'model': stage, 'kind': 'padir', 'iterations': t, 'config': config})
    return out

  def _load(self, model: Any, stage: str, tokenizer: Any, partitioner: Any):
    from padir import eval as eval_lib  # pylint: disable=g-import-not-at-top
    shapes = {'encoder_input_tokens': (self.cfg.eval_batch_size, self.lengths['inputs']),
              'decoder_target_tokens': (self.cfg.eval_batch_size, self.lengths['targets'])}
    params, shardings, step = eval_lib.load_for_inference(model, partitioner, self.path(stage),
                                                          tokenizer, shapes)
    return params, shardings, step

  def _stage_evaluate(self) -> dict[str, Any]:
    from padir import evaluation  # pylint: disable=g-import-not-at-top
    from padir import partitioning  # pylint: disable=g-import-not-at-top
    from padir import quickstart_eval  # pylint: disable=g-import-not-at-top
    from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
    from padir.data import vocab  # pylint: disable=g-import-not-at-top
    tokenizer = vocab.load_tokenizer(self.cfg.vocabulary)
    partitioner = partitioning.Partitioner()
    partitioner.check_batch_size(self.cfg.eval_batch_size, 'QuickstartConfig.eval_batch_size')
    systems = self._systems()
    test = arrays_lib.ArrayDataset.load(os.path.join(self.full_data, 'test'))
    rows = test.num_examples if self.cfg.eval_examples is None else min(
        test.num_examples, self.cfg.eval_examples)
    batches = -(-rows // self.cfg.eval_batch_size)
    todo = [s for s in systems if not os.path.isfile(self.path('eval', f'{s["name"]}.json'))]
    loaded: dict[str, Any] = {}
    predictors: dict[Any, Any] = {}
    with self._bar(len(todo) * batches, 'evaluate', 'batch') as bar:
      for system in todo:
        stage = system['model']
        if stage not in loaded:
          model = self._teacher_model() if stage == 'teacher' else self._student_model(stage)
          if system['kind'] == 'padir' and 'padir_model' in loaded:
            model = loaded['padir_model']  # the same network: reuse its compiled decoders
          params, shardings, step = self._load(model, stage, tokenizer, partitioner)
          loaded[stage] = (model, params, shardings, step)
          if system['kind'] == 'padir':
            loaded['padir_model'] = model
        model, params, shardings, step = loaded[stage]
        key = (id(model), system['config'])
        if key not in predictors:
          predictors[key] = evaluation.Predictor(model, partitioner, shardings,
                                                 {'decode_config': system['config']})
        result = quickstart_eval.decode_and_score(
            predictors[key], params, self.full_data, 'test', self.cfg.eval_batch_size,
            tokenizer, max_examples=self.cfg.eval_examples,
            save_prefix=self.path('eval', 'decodes', system['name']), progress=bar)
        result.update({k: v for k, v in system.items() if k != 'config'})
        result['checkpoint_step'] = step
        result['decode_config'] = dataclasses.asdict(system['config'])
        _write_json(self.path('eval', f'{system["name"]}.json'), result)
        self._say(bar, f'  {system["label"]}: BLEU {result["bleu"]:.2f}, repetition '
                  f'{result["repetition_rate"]:.4f}, length error '
                  f'{result["mean_length_error"]:+.2f}')
    return {'systems': [s['name'] for s in systems], 'test_examples': rows}

  # ------------------------------------------------------------------ 7. benchmark

  def _stage_benchmark(self) -> dict[str, Any]:
    from padir import partitioning  # pylint: disable=g-import-not-at-top
    from padir import quickstart_eval  # pylint: disable=g-import-not-at-top
    from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
    from padir.data import vocab  # pylint: disable=g-import-not-at-top
    if not self.cfg.bench_examples:
      return {'latency_ms': {}}
    tokenizer = vocab.load_tokenizer(self.cfg.vocabulary)
    partitioner = partitioning.Partitioner()
    test = arrays_lib.ArrayDataset.load(os.path.join(self.full_data, 'test'), mmap=False)
    sources = np.asarray(test.arrays['encoder_input_tokens'])[:self.cfg.bench_examples]
    length = self.lengths['targets']
    teacher = self._teacher_model()
    t_params, _, _ = self._load(teacher, 'teacher', tokenizer, partitioner)
    decoders = {'ar_greedy': quickstart_eval.batch1(
        quickstart_eval.ar_greedy_decoder(teacher, length), t_params)}
    students = [('student_distilled', 'distilled')]
    if self.cfg.raw_ablation:
      students.append(('student_raw', 'raw'))
    student = self._student_model()
    refiners = {t: quickstart_eval.refine_decoder(
        student, dataclasses.replace(self.cfg.refine, num_iterations=t, return_history=False),
        length) for t in self.cfg.iterations}  # one compilation serves both students
    for stage, short in students:
      s_params, _, _ = self._load(student, stage, tokenizer, partitioner)
      for t in self.cfg.iterations:
        decoders[f'padir_{short}_t{t}'] = quickstart_eval.batch1(refiners[t], s_params)
    with self._bar(len(sources), 'latency (batch 1)', 'sentence') as bar:
      latency = quickstart_eval.measure_latency(decoders, sources, progress=bar)
    result: dict[str, Any] = {'latency_ms': latency, 'bench_examples': int(len(sources))}
    if self.cfg.small_preset:
      targets = np.asarray(test.arrays['decoder_target_tokens'])
      n = int(np.median((targets > 0).sum(axis=1)))
      small, counts = quickstart_eval.fixed_length_decoders(
          teacher, student, self.cfg.small_preset, n, self.cfg.refine,
          self.cfg.small_iterations, self.lengths['inputs'])
      few = sources[:self.cfg.small_bench_examples]
      with self._bar(len(few), f'latency ({self.cfg.small_preset})', 'sentence') as bar:
        small_latency = quickstart_eval.measure_latency(small, few, progress=bar)
      result['small'] = {'config': self.cfg.small_preset, 'output_length': n,
                         'latency_ms': small_latency, 'params': counts,
                         'bench_examples': int(len(few))}
    return result

  # ------------------------------------------------------------------ 8. report

  def results(self) -> dict[str, Any]:
    """The report's results dict, from the stage markers and the evaluation files."""
    data = (self.stage_result('data') or {}).get('result', {})
    bench = (self.stage_result('benchmark') or {}).get('result', {})
    latency = bench.get('latency_ms', {})
    systems = []
    per_iteration = {}
    for system in self._systems():
      path = self.path('eval', f'{system["name"]}.json')
      if not os.path.isfile(path):
        continue
      row = _read_json(path)
      if system['name'] in latency:
        row['latency_ms'] = latency[system['name']]
      if 'per_iteration' in row:
        per_iteration[row['model']] = row.pop('per_iteration')
      systems.append(row)
    refine = self.cfg.refine
    results: dict[str, Any] = {
        'title': f'padir quickstart: {self.cfg.task} (AR teacher -> distillation -> PaDIR)',
        'systems': systems,
        'headline_iterations': 4 if 4 in self.cfg.iterations else self.cfg.max_iterations,
        'per_iteration': per_iteration,
        'plot_title': f'{self.cfg.task} test, batch-1 latency on {jax.default_backend()}',
    }
    test = data.get('splits', {}).get('test', {})
    results['test_description'] = (
        f'Test split of `{self.cfg.task}`: {test.get("num_examples", "?")} sentences '
        f'({"filtered to" if self.cfg.overlong == "filter" else "truncated at"} '
        f'{self.lengths["inputs"]} source / {self.lengths["targets"]} target tokens), '
        'multi-reference BLEU and chrF (sacrebleu 13a, both English Bibles). Repetition = share '
        'of tokens equal to the previous one; length error = predicted minus reference '
        'length in tokens (first reference). Latency: batch 1, median over '
        f'{bench.get("bench_examples", 0)} test sentences, systems interleaved; PaDIR length '
        f'beam {refine.length_beam} x top-{refine.top_k_lengths} lengths, '
        f'{refine.canvas_init} canvas, remasking rule {refine.remask.rule}.')
    small = bench.get('small')
    if small:
      results['latency_small'] = {
          'config': small['config'], 'output_length': small['output_length'],
          'length_beam': refine.length_beam,
          'systems': [{'name': name, 'label': 'AR greedy' if name == 'ar_greedy' else
                       f'PaDIR {name.split("_t")[-1]} it.',
                       'iterations': None if name == 'ar_greedy' else int(name.split('_t')[-1]),
                       'latency_ms': value} for name, value in small['latency_ms'].items()]}
    results['setup'] = self._setup(data, bench)
    return results

  def _setup(self, data: Mapping[str, Any], bench: Mapping[str, Any]) -> dict[str, Any]:
    setup: dict[str, Any] = {'hardware': environment()}
    distill = (self.stage_result('distill') or {}).get('result', {})
    splits = data.get('splits', {})
    setup['data'] = {
        'task': f'{self.cfg.task} (registered as {data.get("task", self.task_name)})',
        'feature lengths': f'{self.lengths["inputs"]} / {self.lengths["targets"]} tokens, '
                           f'over-long sentences {self.cfg.overlong}ed',
        'train (teacher)': splits.get('train', {}).get('num_examples'),
        'train subset (students)': data.get('subset_train_examples'),
        'distilled rows': distill.get('num_rows'),
        'validation': splits.get('validation', {}).get('num_examples'),
        'test': splits.get('test', {}).get('num_examples'),
    }
    models = {}
    for stage in ('teacher', 'student_distilled', 'student_raw'):
      marker = self.stage_result(stage)
      if marker:
        r = marker['result']
        models[stage] = {'model': r.get('model'), 'parameters': r.get('params'),
                         'steps': r.get('step'), 'network': r.get('network'),
                         'final train loss': r.get('train_metrics', {}).get('loss'),
                         'validation loss': r.get('eval_metrics', {}).get('loss')}
    setup['models'] = models
    setup['distillation'] = (f'beam {self.cfg.distill_beam_size}, length penalty '
                             f'{self.cfg.distill_length_penalty}; '
                             f'{distill.get("num_empty", 0)} empty outputs dropped')
    setup['PaDIR decoding'] = {k: v for k, v in dataclasses.asdict(self.cfg.refine).items()
                               if k not in ('return_history', 'return_all_candidates')}
    if bench.get('small'):
      setup['small-size latency networks'] = bench['small'].get('params')
    setup['stage seconds'] = {name: round(marker['seconds'], 1) for name in STAGES
                              if (marker := self.stage_result(name))}
    return setup

  def _stage_report(self) -> dict[str, str]:
    from padir import report  # pylint: disable=g-import-not-at-top
    return report.write_report(self.results(), self.path('report'))


_STAGE_TEXT = {
    'data': 'filtering and exporting the corpus',
    'teacher': 'training the AR teacher',
    'distill': 'distilling the student training subset with the teacher (beam search)',
    'student_distilled': 'training PaDIR on the distilled data',
    'student_raw': 'training PaDIR on the raw references (ablation)',
    'evaluate': 'decoding the test split with every system',
    'benchmark': 'timing batch-1 decoding',
    'report': 'writing the report',
}


class _Stopped(RuntimeError):
  """A stage stopped on SIGTERM after saving its state."""


def load_config(gin_files: Sequence[str], gin_bindings: Sequence[str]) -> QuickstartConfig:
  """Parses the quickstart gin files and bindings; returns the QuickstartConfig."""
  from padir import train  # pylint: disable=g-import-not-at-top,unused-import  (registrations)
  gin_utils.parse_gin(list(gin_files), list(gin_bindings), required=False, finalize=False)
  return QuickstartConfig()


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='padir quickstart', description=__doc__.split('\n\n')[0].split(': ', 1)[-1],
      formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog=f'Gin flags: --gin_file=F (repeatable, read after {DEFAULT_GIN_FILE}), '
      '--gin.NAME=VALUE, --gin_bindings="NAME = VALUE". See docs/quickstart.md.')
  parser.add_argument('--output_dir', default=DEFAULT_OUTPUT_DIR,
                      help='where everything goes (default: %(default)s); rerun to resume')
  parser.add_argument('--stages', default=','.join(STAGES),
                      help='comma-separated stages to run (default: all, in order)')
  parser.add_argument('--no_progress', action='store_true', help='plain log lines, no bars')
  return parser


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
    run = Quickstart(config, flags.output_dir, gin_files, gin_args.gin_bindings,
                     progress=not flags.no_progress)
    run.run(stages)
  except _Stopped as err:
    print(f'padir quickstart: {err}', file=sys.stderr)
    return SIGTERM_EXIT_CODE
  except KeyboardInterrupt:
    print('\npadir quickstart: interrupted; rerun the same command to resume.', file=sys.stderr)
    return 130
  except (gin_utils.GinFlagError, ValueError, FileNotFoundError) as err:
    print(f'padir quickstart: {err}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main())
