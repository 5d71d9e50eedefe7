"""The quickstart report's results: what `padir.report` renders for a quickstart run.

:func:`collect_results` assembles the results dict of a `padir.quickstart.Quickstart` run from
its stage markers and the evaluation files of `padir.quickstart_eval`: the test-split systems,
the latency tables, the validation choice and its ablations, the distillation candidates, a
summary of what the report's PaDIR student is, and the set-up (command, hardware, data,
models, decoding, seconds per stage). :func:`environment` gives the hardware and software facts.
"""

from __future__ import annotations

import dataclasses
import os
import platform
from typing import Any, Mapping

import jax

from padir import summaries
from padir.bench.decode import cpu_model
from padir.quickstart_config import DATA_TEXT, TEACHER_START
from padir.quickstart_eval import chosen_setting, decoded_systems, read_json


def environment() -> dict[str, Any]:
  """Hardware and software facts for the report."""
  import flax  # pylint: disable=g-import-not-at-top
  device = jax.devices()[0]
  return {
      'cpu': cpu_model(),
      'cpu_count': os.cpu_count(),
      'jax_backend': jax.default_backend(),
      'devices': f'{jax.device_count()} x {getattr(device, "device_kind", device.platform)}',
      'platform': platform.platform(),
      'python': platform.python_version(),
      'jax': jax.__version__,
      'flax': flax.__version__,
  }


def collect_results(run: Any) -> dict[str, Any]:
  """The report's results dict of a run, from its stage markers and evaluation files."""
  data = (run.stage_result('data') or {}).get('result', {})
  bench = (run.stage_result('benchmark') or {}).get('result', {})
  latency = bench.get('latency_ms', {})
  systems = []
  per_iteration = {}
  for system in decoded_systems(run):
    path = run.path('eval', f'{system["name"]}.json')
    if not os.path.isfile(path):
      continue
    row = read_json(path)
    if system['name'] in latency:
      row['latency_ms'] = latency[system['name']]
    if 'per_iteration' in row:
      per_iteration[row['model']] = row.pop('per_iteration')
    systems.append(row)
  refine = run.cfg.refine
  chosen = chosen_setting(run)
  results: dict[str, Any] = {
      'title': f'padir quickstart: {run.cfg.task} (AR teacher -> distillation -> PaDIR)',
      'systems': systems,
      'headline_iterations': chosen.iterations,
      'per_iteration': per_iteration,
      'plot_title': f'{run.cfg.task} test, batch-1 latency on {jax.default_backend()}',
  }
  test = data.get('splits', {}).get('test', {})
  results['test_description'] = (
      f'Test split of `{run.cfg.task}`: {test.get("num_examples", "?")} sentences '
      f'({"filtered to" if run.cfg.overlong == "filter" else "truncated at"} '
      f'{run.lengths["inputs"]} source / {run.lengths["targets"]} target tokens), '
      'multi-reference BLEU and chrF (sacrebleu 13a, both English Bibles). Repetition = share '
      'of tokens equal to the previous one; length error = predicted minus reference '
      'length in tokens (first reference). Latency: batch 1, median over '
      f'{bench.get("bench_examples", 0)} test sentences, systems interleaved. PaDIR decodes '
      f'with the setting chosen on the validation split ({chosen.label}; the '
      'sweep over iterations keeps its other choices), '
      f'{refine.canvas_init} canvas. The students start from {_student_start(run)}.')
  small = bench.get('small')
  if small:
    results['latency_small'] = {
        'config': small['config'], 'output_length': small['output_length'],
        'length_beam': chosen.length_beam,
        'systems': [{'name': name, 'label': 'AR greedy' if name == 'ar_greedy' else
                     f'PaDIR {name.split("_t")[-1]} it.',
                     'iterations': None if name == 'ar_greedy' else int(name.split('_t')[-1]),
                     'latency_ms': value} for name, value in small['latency_ms'].items()]}
  select = (run.stage_result('select') or {}).get('result')
  if select:
    results['selection'] = dict(select, ablations=(run.stage_result('ablations') or {}).get(
        'result', select.get('ablations', [])))
  results['main_student'] = run.main_student()
  results['summary'] = _summary(run)
  distill = (run.stage_result('distill') or {}).get('result', {})
  if distill.get('choice'):
    results['distillation'] = {'candidates': distill['choice'].get('candidates', []),
                               'chosen': distill['choice'].get('chosen'),
                               'length_ratio': distill.get('length_ratio'),
                               'looping_share': distill.get('looping_share'),
                               'rows': distill.get('num_rows'),
                               'rows_kept': distill.get('exported', {}).get('train', {})
                                            .get('num_examples')}
  results['setup'] = _setup(run, data, bench)
  results['models'] = {stage: os.path.join(run.output_dir, stage)
                       for stage in ('teacher', 'ar_matched', 'student_distilled', 'student_raw',
                                     'student_scratch')
                       if run.stage_result(stage)}
  return results


def _summary(run: Any) -> str:
  """What the report's PaDIR is and how far its comparison with the teacher is fair."""
  main = run.main_student()
  setting = chosen_setting(run).label
  text = f'The PaDIR student of the targets was trained on the {DATA_TEXT[main]}: ' + (
      f'the validation split chose it over the other student, with its decoding ({setting}).'
      if run.selects_data else f'the validation split chose its decoding ({setting}).')
  cfg = run.cfg
  if cfg.student_init == 'teacher' and cfg.student_start_steps is not None:
    total = cfg.student_start_steps + cfg.student_steps
    text += (f' It continues from the AR teacher\'s weights at step {cfg.student_start_steps} '
             f'of {cfg.teacher_steps}, so it has trained {total} steps against the teacher\'s '
             f'{cfg.teacher_steps}' + (
                 ': the teacher (which distills and re-ranks) is the AR baseline at equal '
                 'training.' if total == cfg.teacher_steps else '.'))
  elif cfg.student_init == 'teacher':
    total = cfg.teacher_steps + cfg.student_steps
    text += (f' It continues from the AR teacher\'s weights, so it has trained {total} steps '
             f'against the teacher\'s {cfg.teacher_steps}: the comparison with the teacher '
             'favours PaDIR' + ('; the AR model trained as long (the same start, data, steps and '
                                'schedule) is the fair baseline.' if run.trains_matched_ar
                                else '.'))
  return text


def _student_start(run: Any) -> str:
  """Where the students' weights come from, in words."""
  if run.cfg.student_init != 'teacher':
    return 'random weights'
  if run.cfg.student_start_steps is None:
    return 'the AR teacher'
  return (f'the AR teacher at step {run.cfg.student_start_steps} of {run.cfg.teacher_steps} '
          '(the end of its first leg)')


def _steps_text(steps: int) -> str:
  return f'{steps} step{"" if steps == 1 else "s"}'


def _cooldown_text(steps: int, short: bool = False) -> str:
  if steps == 0:
    return 'none'
  return _steps_text(steps) if short else f'linear to 0 over the last {_steps_text(steps)}'


def _significant(value: float | None, digits: int = 3) -> float | None:
  return None if value is None else float(f'{value:.{digits}g}')


def _setup(run: Any, data: Mapping[str, Any], bench: Mapping[str, Any]) -> dict[str, Any]:
  flags = [f'--gin_file={f}' for f in run.gin_files[1:]]
  flags += [f'--gin_bindings="{b}"' for b in run.gin_bindings]
  setup: dict[str, Any] = {'command': ' '.join(['padir quickstart'] + flags),
                           'hardware': environment()}
  distill = (run.stage_result('distill') or {}).get('result', {})
  splits = data.get('splits', {})
  setup['data'] = {
      'task': f'{run.cfg.task} (registered as {data.get("task", run.task_name)})',
      'feature lengths': f'{run.lengths["inputs"]} / {run.lengths["targets"]} tokens, '
                         f'over-long sentences {run.cfg.overlong}ed',
      'train (teacher)': splits.get('train', {}).get('num_examples'),
      'train subset (students)': data.get('subset_train_examples'),
      'distilled rows': distill.get('num_rows'),
      'validation': splits.get('validation', {}).get('num_examples'),
      'test': splits.get('test', {}).get('num_examples'),
  }
  models = {}
  for stage in ('teacher', 'ar_matched', 'student_distilled', 'student_raw', 'student_scratch'):
    marker = run.stage_result(stage)
    if marker:
      r = marker['result']
      models[stage] = {'model': r.get('model'), 'parameters': r.get('params'),
                       'steps': r.get('step'), 'network': r.get('network'),
                       'initialised from': r.get('init_from') or 'random weights',
                       'peak learning rate': _significant(
                           summaries.peak_learning_rate(run.path(stage))),
                       'final train loss': r.get('train_metrics', {}).get('loss'),
                       'validation loss': r.get('eval_metrics', {}).get('loss')}
      cooldown = r.get('cooldown_steps')  # stages recorded before it was kept have none
      first_leg = r.get('legs', {}).get(TEACHER_START, {}).get('cooldown_steps')
      if cooldown is not None:
        models[stage]['learning-rate cooldown'] = (
            _cooldown_text(cooldown)
            + ('' if first_leg is None else f' (first leg: {_cooldown_text(first_leg, True)})'))
      if r.get('warmup_steps'):
        models[stage]['learning-rate warm-up'] = (
            f'linear from 0 over the first {_steps_text(r["warmup_steps"])}')
  setup['models'] = models
  choice = distill.get('choice', {})
  setup['distillation'] = (
      f'teacher decoding {choice.get("chosen", "?")} (best validation BLEU of '
      + ', '.join(f'{c["name"]} {c["bleu"]:.2f}' for c in choice.get('candidates', []))
      + f'); distilled / reference length {distill.get("length_ratio", float("nan")):.3f}; '
      f'{distill.get("num_empty", 0)} empty outputs dropped')
  setup['student initialisation'] = (f'{_student_start(run)} (length head new, decoder '
                                     'relative positions mirrored to the future)'
                                     if run.cfg.student_init == 'teacher' else 'random')
  chosen = chosen_setting(run)
  setup['PaDIR decoding (the validation choice applied to the gin RefineConfig)'] = dict(
      {k: v for k, v in dataclasses.asdict(chosen.refine_config(run.cfg.refine)).items()
       if k not in ('return_history', 'return_all_candidates')},
      teacher_reranks=chosen.rerank)
  if bench.get('small'):
    setup['small-size latency networks'] = bench['small'].get('params')
  markers = {name: marker for name in run.STAGES if (marker := run.stage_result(name))}
  seconds = {name: round(marker['seconds'], 1) for name, marker in markers.items()}
  setup['stage seconds'] = seconds
  alongside = {name: marker['concurrent_with'] for name, marker in markers.items()
               if marker.get('concurrent_with')}
  if alongside:
    setup['stages trained alongside another (each on half of the CPU cores; their seconds '
          'are inside that stage\'s)'] = alongside
  setup['total seconds (every stage but the report)'] = round(
      sum(s for name, s in seconds.items() if name not in alongside), 1)
  compiling = {name: marker['compile'] for name, marker in markers.items()
               if 'compile' in marker}  # stages finished before padir recorded it have none
  if compiling:
    setup['of which compiling (seconds; programs, persistent-cache loads among them)'] = {
        name: f'{c["seconds"]}; {c["programs"]}, {c["cache_hits"]}'
        for name, c in compiling.items()}
    setup['total compiling seconds'] = round(sum(c['seconds'] for c in compiling.values()), 1)
  speed = {name: marker['matmul_gflops'] for name, marker in markers.items()
           if marker.get('matmul_gflops')}
  if speed:
    setup['machine speed before each stage (2048 x 2048 float32 matmul, GFLOP/s)'] = speed
  if bench.get('load_average'):
    setup['load average (1 min) before / after the latency runs'] = bench['load_average']
  return setup
