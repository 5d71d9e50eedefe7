r"""The quickstart report: speed-quality table, target checks, BLEU-latency plot.

``padir quickstart`` collects its measurements into one JSON-serialisable dict (the *results*)
and calls :func:`write_report`, which writes three files next to each other::

  report.json   the results, with the target checks added under "targets"
  report.md     the tables (test split quality and batch-1 latency, per-iteration error modes,
                small-config latency), the targets with their margins, and the set-up
  report.png    BLEU against batch-1 latency for AR and PaDIR at 1/2/4/8 iterations

Re-render the markdown and plot from a saved JSON (for example after editing a caption)::

  python -m padir.report path/to/report.json [--output_dir=DIR]

The results dict (every key except ``systems`` is optional):

* ``systems``: one dict per decoded system on the test split: ``name``, ``label``, ``model``
  ('teacher', 'student_distilled', 'student_raw', ...), ``kind`` ('ar' or 'padir'),
  ``iterations`` (PaDIR: the maximum number of passes), ``bleu``, ``chrf``,
  ``repetition_rate`` (and ``repetition_before_collapse`` for a decoding that merges adjacent
  repeats), ``mean_length_error``, ``mean_abs_length_error``, ``exact_length``,
  ``mean_iterations``, ``num_examples`` and ``latency_ms`` (``{'mean', 'median', 'p90'}``,
  batch 1) where measured.
* ``per_iteration``: model -> rows ``{'iteration', 'repetition_rate', 'bleu', ...}`` of the
  canvas after each pass of the longest PaDIR decode.
* ``latency_small``: ``{'config', 'output_length', 'length_beam', 'systems': [{'name',
  'label', 'iterations', 'latency_ms'}]}`` for randomly initialised networks of a larger
  preset decoding a fixed number of tokens.
* ``headline_iterations``: the PaDIR iteration count the targets are checked at (default 4;
  the quickstart sets the count of the setting chosen on validation).
* ``selection``: the validation choice of the PaDIR decoding (`padir.quickstart_select`):
  ``teacher`` (its validation row), ``candidates`` (rows with ``label``, ``bleu``,
  ``mean_length_error``, ``repetition_rate``, ``median_ms``, ``speedup``), ``chosen_name``,
  ``why``, ``margin``, ``validation_examples`` and ``ablations`` (rows with ``label``, ``bleu``,
  ``delta_bleu``, ``median_ms``, ``speedup``, ``mean_length_error``).
* ``main_student``: the model of the PaDIR student the targets are about (default
  'student_distilled'; the quickstart chooses it on validation).
* ``distillation``: ``candidates`` (teacher decodings with validation ``bleu`` and
  ``length_ratio``), ``chosen`` and the distilled-to-reference ``length_ratio`` of the data.
* ``setup``: free-form facts (hardware, data sizes, model sizes, steps, stage times,
  decoding settings), rendered as a list.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, Mapping, Sequence

FORMAT = 'padir-quickstart-report'
FORMAT_VERSION = 1
REPORT_NAME = 'report'
# Quality targets of the quickstart (issue: PaDIR within 1 BLEU of its AR teacher).
MAX_BLEU_GAP = 1.0
HEADLINE_ITERATIONS = 4
REPETITION_DECIMALS = 4

_QUALITY_COLUMNS = (
    ('bleu', 'BLEU', '{:.2f}'),
    ('chrf', 'chrF', '{:.1f}'),
    ('repetition_rate', 'repetition', '{:.4f}'),
    ('repetition_before_collapse', 'repetition before merging repeats', '{:.4f}'),
    ('mean_length_error', 'length err.', '{:+.2f}'),
    ('mean_abs_length_error', '\\|length err.\\|', '{:.2f}'),
    ('mean_iterations', 'passes used', '{:.2f}'),
)


def _system(results: Mapping[str, Any], model: str, kind: str,
            iterations: int | None = None, name_suffix: str = '') -> dict[str, Any] | None:
  """The first system of ``model`` / ``kind`` (PaDIR: with ``iterations``)."""
  for s in results.get('systems', []):
    if s.get('model') != model or s.get('kind') != kind:
      continue
    if kind == 'padir' and s.get('iterations') != iterations:
      continue
    if name_suffix and not str(s.get('name', '')).endswith(name_suffix):
      continue
    return s
  return None


def _latency(system: Mapping[str, Any] | None, key: str = 'median') -> float | None:
  if not system or not isinstance(system.get('latency_ms'), Mapping):
    return None
  value = system['latency_ms'].get(key)
  return None if value is None else float(value)


def _padir_by_iterations(results: Mapping[str, Any], model: str) -> list[dict[str, Any]]:
  rows = [s for s in results.get('systems', [])
          if s.get('model') == model and s.get('kind') == 'padir']
  return sorted(rows, key=lambda s: s['iterations'])


def _validation_gap(results: Mapping[str, Any]) -> float | None:
  """The teacher's greedy validation BLEU minus the chosen PaDIR setting's, from the
  quickstart's validation selection; None without one."""
  sel = results.get('selection') or {}
  chosen = [c for c in sel.get('candidates', []) if c.get('name') == sel.get('chosen_name')]
  teacher = (sel.get('teacher') or {}).get('bleu')
  if not chosen or teacher is None:
    return None
  return float(teacher) - float(chosen[0]['bleu'])


def check_targets(results: Mapping[str, Any],
                  headline_iterations: int | None = None,
                  max_gap: float = MAX_BLEU_GAP) -> dict[str, Any]:
  """Checks the quickstart's targets against the measured systems.

  The main student is ``results['main_student']`` (default the distilled one).

  1. ``padir_vs_teacher``: the main PaDIR student (``headline_iterations`` passes) is within
     ``max_gap`` BLEU of the AR teacher decoding greedily.
  2. ``padir_faster``: it is faster than AR greedy at batch 1 (median latency).
  2b. ``padir_vs_matched_ar`` (only when the results have an ``ar_matched`` system): the same
     gap against the AR model trained as many steps as the students.
  3. ``distillation_helps``: at ``headline_iterations`` passes the student trained on distilled
     data has a higher BLEU than the one trained on the raw references.
  4. ``repetition_falls``: the main student's repetition rate (before any merge of adjacent
     repeats; rounded to 4 decimals, as shown) does not rise from one iteration count to the
     next, and is lower at the most iterations than at the fewest.

  Args:
    results: the results dict (see the module docstring).
    headline_iterations: the PaDIR iteration count of targets 1 and 2 (default: the results'
      ``headline_iterations``, else 4).
    max_gap: the largest BLEU gap that passes target 1.

  Returns:
    ``{target: {'met': bool | None, 'detail': str, ...numbers}}``; ``met`` is None when a
    system the target needs was not measured.
  """
  if headline_iterations is None:
    headline_iterations = int(results.get('headline_iterations', HEADLINE_ITERATIONS))
  out: dict[str, Any] = {}
  main = results.get('main_student', 'student_distilled')
  name = _STUDENT_NAME.get(main, main)
  teacher = _system(results, 'teacher', 'ar', name_suffix='greedy')
  student = _system(results, main, 'padir', headline_iterations)
  distilled = _system(results, 'student_distilled', 'padir', headline_iterations)
  raw = _system(results, 'student_raw', 'padir', headline_iterations)
  matched = _system(results, 'ar_matched', 'ar', name_suffix='greedy')
  speedup = None
  if teacher and student and _latency(teacher) and _latency(student):
    speedup = _latency(teacher) / _latency(student)
    met = speedup > 1.0
    out['padir_faster'] = {
        'met': met, 'speedup': speedup,
        'detail': (f'PaDIR ({name}, {headline_iterations} iterations) at batch 1: median '
                   f'{_latency(student):.1f} ms vs AR greedy {_latency(teacher):.1f} ms: '
                   f'{speedup:.2f}x (target > 1.0x); ' +
                   ('met.' if met else f'missed by {1.0 - speedup:.2f}x.'))}
  else:
    out['padir_faster'] = {'met': None, 'detail': 'not measured (needs batch-1 latency of the '
                           'AR teacher and the main student).'}

  def gap_check(ar: Mapping[str, Any], ar_text: str) -> tuple[float, bool, str]:
    """(gap, met, detail) of the main student against an AR system."""
    gap = float(ar['bleu']) - float(student['bleu'])
    detail = (f'PaDIR ({name}, {headline_iterations} iterations) {student["bleu"]:.2f} BLEU vs '
              f'{ar_text} {ar["bleu"]:.2f}: gap {gap:+.2f} BLEU (target <= {max_gap:.1f}); ')
    met = gap <= max_gap
    return gap, met, detail + ('met.' if met else f'missed by {gap - max_gap:.2f} BLEU.')

  if teacher and student:
    gap, met, detail = gap_check(teacher, 'AR teacher (greedy)')
    if main != 'student_distilled' and distilled:
      detail += (f' The distilled student: {distilled["bleu"]:.2f} BLEU, gap '
                 f'{float(teacher["bleu"]) - float(distilled["bleu"]):+.2f}.')
    entry = {'met': met, 'gap_bleu': gap, 'teacher_bleu': float(teacher['bleu']),
             'student_bleu': float(student['bleu']), 'max_gap_bleu': max_gap, 'detail': detail}
    t_lat, s_lat = _latency(teacher), _latency(student)
    if t_lat and s_lat:
      entry['speedup'] = t_lat / s_lat
      entry['detail'] += (f' Batch-1 latency (median): PaDIR {s_lat:.1f} ms, AR greedy '
                          f'{t_lat:.1f} ms: speedup {t_lat / s_lat:.2f}x.')
    val = _validation_gap(results)
    if val is not None:
      entry['validation_gap_bleu'] = val
      entry['detail'] += (' On the validation split (where the setting was chosen) the gap '
                          f'is {val:+.2f} BLEU.')
    out['padir_vs_teacher'] = entry
  else:
    out['padir_vs_teacher'] = {'met': None, 'detail': 'not measured (needs the AR teacher '
                               'greedy and the main PaDIR student at '
                               f'{headline_iterations} iterations).'}

  if distilled and raw:
    margin = float(distilled['bleu']) - float(raw['bleu'])
    met = margin > 0
    detail = (f'PaDIR at {headline_iterations} iterations: distilled {distilled["bleu"]:.2f} BLEU '
              f'vs raw {raw["bleu"]:.2f}: {margin:+.2f} BLEU; ')
    detail += 'met.' if met else f'missed by {-margin:.2f} BLEU.'
    out['distillation_helps'] = {'met': met, 'margin_bleu': margin,
                                 'distilled_bleu': float(distilled['bleu']),
                                 'raw_bleu': float(raw['bleu']), 'detail': detail}
  else:
    out['distillation_helps'] = {'met': None, 'detail': 'not measured (needs both students).'}

  if matched and student:
    gap, met, detail = gap_check(matched, 'the AR model trained as many steps (greedy)')
    out['padir_vs_matched_ar'] = {'met': met, 'gap_bleu': gap, 'detail': detail,
                                  'ar_bleu': float(matched['bleu']),
                                  'student_bleu': float(student['bleu'])}

  # Compared at the 4 decimals the report shows: decodes that reach the same fixed point can
  # differ in the 6th decimal through a different length candidate winning on one sentence.
  series = [(s['iterations'], round(float(canvas_repetition(s)), REPETITION_DECIMALS))
            for s in _padir_by_iterations(results, main)
            if canvas_repetition(s) is not None]
  if len(series) >= 2:
    rises = [(a, b) for (a, ra), (b, rb) in zip(series, series[1:]) if rb > ra]
    first, last = series[0][1], series[-1][1]
    met = not rises and last < first
    shown = ', '.join(f'{t}: {r:.4f}' for t, r in series)
    detail = f'repetition rate by iterations (the {name} student) {shown}; '
    if met:
      detail += 'met.'
    elif rises:
      detail += ('missed: it rises from ' +
                 ', '.join(f'{a} to {b} iterations' for a, b in rises) + '.')
    else:
      detail += f'missed: {series[-1][0]} iterations do not lower it ({last:.4f} vs {first:.4f}).'
    out['repetition_falls'] = {'met': met, 'series': [[t, r] for t, r in series],
                               'detail': detail}
  else:
    out['repetition_falls'] = {'met': None, 'detail': 'not measured (needs the main '
                               'student at two or more iteration counts).'}
  return out


def canvas_repetition(row: Mapping[str, Any]) -> float | None:
  """The repetition rate of a decode before adjacent repeats were merged (if they were)."""
  before = row.get('repetition_before_collapse')
  return row.get('repetition_rate') if before is None else before


def _fmt(value: Any, pattern: str) -> str:
  if value is None or (isinstance(value, float) and math.isnan(value)):
    return '-'
  return pattern.format(value)


def _quality_table(results: Mapping[str, Any]) -> list[str]:
  teacher = _system(results, 'teacher', 'ar', name_suffix='greedy')
  base = _latency(teacher)
  head = ['system', 'iterations'] + [label for _, label, _ in _QUALITY_COLUMNS] + \
         ['latency ms (median)', 'speedup vs AR greedy']
  lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
  for s in results.get('systems', []):
    lat = _latency(s)
    cells = [s.get('label', s.get('name', '?')), _fmt(s.get('iterations'), '{}')]
    cells += [_fmt(s.get(key), pattern) for key, _, pattern in _QUALITY_COLUMNS]
    cells.append(_fmt(lat, '{:.1f}'))
    cells.append(_fmt(base / lat if (base and lat) else None, '{:.2f}x'))
    lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def _per_iteration_tables(results: Mapping[str, Any]) -> list[str]:
  lines: list[str] = []
  for model, rows in (results.get('per_iteration') or {}).items():
    if not rows:
      continue
    has_bleu = any('bleu' in r for r in rows)
    lines += ['', f'Canvas after each pass ({model}, one decode with {len(rows)} passes; rows '
              'that stopped early keep their final canvas):', '']
    head = ['pass', 'repetition'] + (['BLEU'] if has_bleu else []) + ['mean length']
    lines += ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
      cells = [str(r['iteration']), _fmt(r.get('repetition_rate'), '{:.4f}')]
      if has_bleu:
        cells.append(_fmt(r.get('bleu'), '{:.2f}'))
      cells.append(_fmt(r.get('mean_length'), '{:.2f}'))
      lines.append('| ' + ' | '.join(cells) + ' |')
  return lines


def _small_latency_table(results: Mapping[str, Any]) -> list[str]:
  small = results.get('latency_small')
  if not small or not small.get('systems'):
    return []
  systems = small['systems']
  base = next((_latency(s) for s in systems if s.get('name') == 'ar_greedy'), None)
  lines = ['', f'## Batch-1 latency at the {small.get("config", "?")} size', '',
           f'Randomly initialised networks of the `{small.get("config")}` preset (the quality '
           f'does not matter for speed), every output exactly {small.get("output_length")} tokens '
           '(EOS included): AR greedy runs that many steps, PaDIR runs every pass (no early '
           f'stop) with length beam {small.get("length_beam")}. Same sources, same process, '
           'systems interleaved sentence by sentence.', '',
           '| system | iterations | latency ms (median) | mean | p90 | speedup vs AR greedy |',
           '|---|---|---|---|---|---|']
  for s in systems:
    lat = _latency(s)
    lines.append('| ' + ' | '.join([
        s.get('label', s.get('name', '?')), _fmt(s.get('iterations'), '{}'),
        _fmt(lat, '{:.1f}'), _fmt(_latency(s, 'mean'), '{:.1f}'),
        _fmt(_latency(s, 'p90'), '{:.1f}'),
        _fmt(base / lat if (base and lat) else None, '{:.2f}x')]) + ' |')
  return lines


def _selection_tables(results: Mapping[str, Any]) -> list[str]:
  """The validation choice of the decoding setting and the ablation table."""
  sel = results.get('selection')
  if not sel or not sel.get('candidates'):
    return []
  teacher = sel.get('teacher', {})
  lines = ['', '## Validation: choosing the PaDIR decoding', '',
           f'Every setting decoded the {sel.get("validation_examples", "?")} validation '
           'sentences at batch 1, interleaved sentence by sentence with the AR teacher (greedy: '
           f'BLEU {_fmt(teacher.get("bleu"), "{:.2f}")}, median '
           f'{_fmt(teacher.get("median_ms"), "{:.1f}")} ms). Rule: the fastest setting within '
           f'{sel.get("margin", 1.0):g} BLEU of the teacher, else the best BLEU. Chosen: '
           f'**{sel.get("chosen_name")}**, {sel.get("why", "")}. The test split was not read.',
           '', '| setting | BLEU | length err. | repetition (before merging repeats) | latency '
           'ms (median) | speedup vs AR greedy |', '|---|---|---|---|---|---|']
  for row in sorted(sel['candidates'], key=lambda r: -r['bleu']):
    mark = ' **(chosen)**' if row.get('name') == sel.get('chosen_name') else ''
    lines.append('| ' + ' | '.join([
        f'{row.get("label", row.get("name"))}{mark}', _fmt(row.get('bleu'), '{:.2f}'),
        _fmt(row.get('mean_length_error'), '{:+.2f}'),
        _fmt(canvas_repetition(row), '{:.4f}'), _fmt(row.get('median_ms'), '{:.1f}'),
        _fmt(row.get('speedup'), '{:.2f}x')]) + ' |')
  ablations = sel.get('ablations') or []
  if ablations:
    lines += ['', '## Ablations (validation)', '',
              'The chosen setting with one choice switched off at a time; the students trained '
              'without it decode with the chosen setting. Batch-1 latency measured in one '
              'interleaved run with the AR teacher.', '',
              '| variant | BLEU | vs chosen | length err. | repetition (before merging repeats) '
              '| latency ms (median) | speedup vs AR greedy |', '|---|---|---|---|---|---|---|']
    for row in ablations:
      lines.append('| ' + ' | '.join([
          str(row.get('label')), _fmt(row.get('bleu'), '{:.2f}'),
          _fmt(row.get('delta_bleu'), '{:+.2f}'), _fmt(row.get('mean_length_error'), '{:+.2f}'),
          _fmt(canvas_repetition(row), '{:.4f}'), _fmt(row.get('median_ms'), '{:.1f}'),
          _fmt(row.get('speedup'), '{:.2f}x')]) + ' |')
  return lines


def _distillation_lines(results: Mapping[str, Any]) -> list[str]:
  dist = results.get('distillation')
  if not dist or not dist.get('candidates'):
    return []
  lines = ['', '## Distillation', '',
           'The teacher decoding that distills the students: of those within 1 BLEU of the '
           'best on validation, the one whose outputs are closest to the reference length, '
           'preferring those whose outputs loop at most a tenth of the time, then those at '
           'least 0.95x as long (the students learn loops and short outputs). '
           'Length ratio = mean output length / mean reference length. Loops = share of '
           'outputs holding some 4-gram of pieces twice; `_norep4`: decoded with no repeated '
           '4-gram (`ARConfig.no_repeat_ngram`).', '',
           '| teacher decoding | validation BLEU | length ratio | loops |', '|---|---|---|---|']
  for row in dist['candidates']:
    mark = ' **(chosen)**' if row.get('name') == dist.get('chosen') else ''
    lines.append(f'| {row["name"]}{mark} | {_fmt(row.get("bleu"), "{:.2f}")} | '
                 f'{_fmt(row.get("length_ratio"), "{:.3f}")} | '
                 f'{_fmt(row.get("looping_share"), "{:.3f}")} |')
  lines.append('')
  ratio = dist.get('length_ratio')
  if ratio is not None:
    lines += [f'- Distilled training targets / human references of the same rows: '
              f'{ratio:.3f}' + (' (**below 0.95: the students learn short outputs**).'
                                if ratio < 0.95 else '.')]
  looping = dist.get('looping_share')
  if looping:
    lines += [f'- Training targets with a repeated 4-gram: distilled {looping["distilled"]:.3f}, '
              f'human references {looping["references"]:.3f}.']
  if dist.get('rows') and dist.get('rows_kept') is not None:
    lines += [f'- Distilled rows kept: {dist["rows_kept"]} of {dist["rows"]} (the teacher\'s '
              'output of the others is longer than the target length).']
  return lines


_MODEL_TEXT = {
    'teacher': 'AR teacher (greedy)',
    'ar_matched': 'AR, trained as many steps as the students (greedy)',
    'student_distilled': 'PaDIR on distilled data',
    'student_raw': 'PaDIR on the human references',
    'student_scratch': 'PaDIR from random weights (ablation)',
}
# The main student's name in the targets.
_STUDENT_NAME = {'student_distilled': 'distilled', 'student_raw': 'reference-trained'}


def _translate_lines(results: Mapping[str, Any]) -> list[str]:
  """How to use each trained model: the ``padir translate`` command and ``padir.load``."""
  models = results.get('models') or {}
  if not models:
    return []
  main = results.get('main_student', 'student_distilled')
  models = dict(sorted(models.items(), key=lambda kv: kv[0] != main))
  width = max(len(path) for path in models.values())
  lines = ['', '## Translate with these models', '', '```']
  for stage, path in models.items():
    text = _MODEL_TEXT.get(stage, stage)
    if stage == main:
      text += ': the main student, chosen on validation (with its decoding, decoding.json)'
    lines.append(f'echo "En el principio creó Dios los cielos y la tierra." | padir translate '
                 f'--model_dir={path:<{width}}  # {text}')
  lines += ['```', '', 'From Python: `model = padir.load("' + next(iter(models.values())) +
            '"); model.translate([...])`; a PaDIR model also has `model.refine(sentence)` (every '
            'pass) and every model `model.score(sources, targets)`. `--iterations`, '
            '`--length_beam` and `--show_refinement` change or show the PaDIR decoding; see '
            'docs/translate.md.']
  return lines


def _setup_lines(setup: Any, indent: str = '') -> list[str]:
  lines = []
  if isinstance(setup, Mapping):
    for key, value in setup.items():
      if isinstance(value, Mapping) or (isinstance(value, list) and value and
                                        isinstance(value[0], Mapping)):
        lines.append(f'{indent}- {key}:')
        lines += _setup_lines(value, indent + '  ')
      else:
        lines.append(f'{indent}- {key}: {_value_text(value)}')
  elif isinstance(setup, list):
    for item in setup:
      lines += _setup_lines(item, indent)
  return lines


def _value_text(value: Any) -> str:
  if isinstance(value, float):
    return f'{value:.4g}'
  if isinstance(value, (list, tuple)):
    return ', '.join(_value_text(v) for v in value)
  return str(value)


def render_markdown(results: Mapping[str, Any], plot_name: str | None = None) -> str:
  """The markdown report of a results dict (targets are checked when absent)."""
  targets = results.get('targets') or check_targets(results)
  title = results.get('title', 'padir quickstart')
  lines = [f'# {title}', '']
  if results.get('summary'):
    lines += [str(results['summary']), '']
  lines += ['## Targets', '']
  names = {'padir_vs_teacher': 'PaDIR within 1 BLEU of its AR teacher',
           'padir_vs_matched_ar': 'PaDIR within 1 BLEU of an AR model trained as long',
           'padir_faster': 'PaDIR faster than AR greedy at batch 1',
           'distillation_helps': 'distillation helps',
           'repetition_falls': 'repetition falls with iterations'}
  for key, label in names.items():
    if key == 'padir_vs_matched_ar' and key not in targets:
      continue  # only runs that train the AR model as long as the students have it
    entry = targets.get(key, {})
    mark = {True: 'MET', False: 'MISSED', None: 'NOT MEASURED'}[entry.get('met')]
    lines.append(f'- **{label}: {mark}.** {entry.get("detail", "")}')
  lines += ['', '## Test split: quality and batch-1 latency', '']
  if results.get('test_description'):
    lines += [str(results['test_description']), '']
  lines += _quality_table(results)
  lines += _per_iteration_tables(results)
  if plot_name:
    lines += ['', f'![BLEU against batch-1 latency]({plot_name})']
  lines += _small_latency_table(results)
  lines += _selection_tables(results)
  lines += _distillation_lines(results)
  lines += _translate_lines(results)
  if results.get('setup'):
    lines += ['', '## Set-up', ''] + _setup_lines(results['setup'])
  if results.get('notes'):
    lines += ['', '## Notes', ''] + [f'- {n}' for n in results['notes']]
  return '\n'.join(lines) + '\n'


def plot(results: Mapping[str, Any], path: str) -> str | None:
  """BLEU (y) against median batch-1 latency (x) of every system with both; None if none."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg', force=True)
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  systems = [s for s in results.get('systems', [])
             if _latency(s) is not None and s.get('bleu') is not None]
  if not systems:
    return None
  fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
  styles = {'student_distilled': ('o-', 'PaDIR, distilled'),
            'student_raw': ('s--', 'PaDIR, raw data')}
  for model, (style, label) in styles.items():
    rows = [s for s in _padir_by_iterations(results, model) if s in systems]
    if not rows:
      continue
    xs, ys = [_latency(s) for s in rows], [float(s['bleu']) for s in rows]
    ax.plot(xs, ys, style, label=label)
    for i, (s, x, y) in enumerate(zip(rows, xs, ys)):
      ax.annotate(f'T={s["iterations"]}', (x, y), textcoords='offset points',
                  xytext=(4, 5 if i % 2 == 0 else -12), fontsize=8)
  markers = iter('^vD*')
  for s in systems:
    if s.get('kind') == 'ar':
      ax.plot([_latency(s)], [float(s['bleu'])], next(markers, 'x'), markersize=9,
              label=s.get('label', s.get('name')))
  ax.set_xlabel('batch-1 latency per sentence, median (ms)')
  ax.set_ylabel('test BLEU')
  ax.set_title(results.get('plot_title', 'BLEU vs latency'))
  ax.grid(True, alpha=0.3)
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path)
  plt.close(fig)
  return path


def write_report(results: Mapping[str, Any], output_dir: str,
                 name: str = REPORT_NAME) -> dict[str, str]:
  """Writes ``<name>.json``, ``<name>.md`` and ``<name>.png`` into ``output_dir``.

  Args:
    results: the results dict (see the module docstring); it is not modified.
    output_dir: the directory (created when missing).
    name: the file stem.

  Returns:
    ``{'json': path, 'markdown': path, 'plot': path}`` (no 'plot' when no system has both a
    BLEU and a latency).
  """
  if not results.get('systems'):
    raise ValueError('The results have no systems to report; run the evaluation first.')
  os.makedirs(output_dir, exist_ok=True)
  full = dict(results)
  full.setdefault('format', FORMAT)
  full.setdefault('format_version', FORMAT_VERSION)
  full['targets'] = check_targets(full)
  paths = {'json': os.path.join(output_dir, f'{name}.json'),
           'markdown': os.path.join(output_dir, f'{name}.md')}
  plot_path = plot(full, os.path.join(output_dir, f'{name}.png'))
  if plot_path:
    paths['plot'] = plot_path
  _write_atomic(paths['json'], json.dumps(full, indent=2, sort_keys=True) + '\n')
  _write_atomic(paths['markdown'],
                render_markdown(full, os.path.basename(plot_path) if plot_path else None))
  return paths


def _write_atomic(path: str, text: str) -> None:
  tmp = path + '.tmp'
  with open(tmp, 'w', encoding='utf-8') as f:
    f.write(text)
  os.replace(tmp, path)


def load_results(path: str) -> dict[str, Any]:
  """Reads a results JSON written by :func:`write_report`."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path} does not exist; padir quickstart writes it as '
                            f'<output_dir>/report/{REPORT_NAME}.json.')
  with open(path, encoding='utf-8') as f:
    results = json.load(f)
  if results.get('format') != FORMAT:
    raise ValueError(f'{path} is not a quickstart report (format {results.get("format")!r}, '
                     f'expected {FORMAT!r}).')
  return results


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m padir.report report.json [--output_dir=DIR]``: re-renders a report."""
  parser = argparse.ArgumentParser(prog='python -m padir.report',
                                   description='Re-renders a quickstart report from its JSON.')
  parser.add_argument('results', help='report.json written by padir quickstart')
  parser.add_argument('--output_dir', default=None,
                      help='where to write (default: the JSON file\'s directory)')
  args = parser.parse_args(argv)
  try:
    results = load_results(args.results)
    out = args.output_dir or os.path.dirname(os.path.abspath(args.results))
    paths = write_report(results, out,
                         name=os.path.splitext(os.path.basename(args.results))[0])
  except (FileNotFoundError, ValueError) as err:
    print(f'python -m padir.report: {err}', file=sys.stderr)
    return 2
  print('\n'.join(f'{k}: {v}' for k, v in paths.items()))
  return 0


if __name__ == '__main__':
  sys.exit(main())
