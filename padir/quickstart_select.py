"""The quickstart's choices on the validation split: distillation decoding and PaDIR decoding.

* :func:`distill` (the ``distill`` stage) and :func:`choose_distillation`: decodes the
  validation split with each candidate teacher decoding (greedy, beam with length penalties);
  of those within ``select_margin`` BLEU of the best, the one whose outputs are closest to the
  reference length distills (the students copy its lengths), preferring those that loop
  at most ``LOOPING_LIMIT`` of the time, then those at least
  ``SHORT_LENGTH_RATIO`` (0.95) times as long. Every candidate's BLEU and
  output-to-reference length ratio go into the record.
* :func:`select` (the ``select`` stage): decodes the validation split at batch 1 with the AR
  teacher and every candidate PaDIR setting (`padir.selection.grid`) of every student that
  differs only in its training data (distilled targets or human references), interleaved
  sentence by sentence, scores each, and picks the fastest (student, setting) within
  ``select_margin`` BLEU of the teacher, else the best (`padir.selection.choose`). The winner
  is the run's main student.
* :func:`ablations` (the ``ablations`` stage): the chosen student and setting with one choice
  switched off at a time: the decoding rule, re-ranking, the length beam, stutter removal, the
  other training data, the teacher's weights (the scratch student) and the extra ablations.

The test split is never read here.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence

import numpy as np

from padir import analysis
from padir import quickstart_eval as qs_eval
from padir import selection
from padir.ar_decoding import ARConfig
from padir.quickstart_config import DATA_TEXT

TEACHER = 'ar_greedy'


def _texts(run: Any, split: str) -> list[dict[str, Any]]:
  from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
  return arrays_lib.ArrayDataset.load(os.path.join(run.full_data, split), mmap=False).text()


def score_tokens(tokens: np.ndarray, references: Sequence[Sequence[str]], tokenizer: Any,
                 reference_tokens: np.ndarray | None = None,
                 removed: np.ndarray | None = None) -> dict[str, Any]:
  """BLEU / chrF, repetition, mean length and length error of output tokens [N, L].

  With ``removed`` ([N] repeats the decoder merged, `RefineConfig.collapse_repeats`),
  ``repetition_before_collapse`` is the repetition rate before the merge.
  """
  from padir.data import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  predictions = tokenizer.decode_batch(tokens)
  out: dict[str, Any] = dict(metrics_lib.translation_metrics(
      [list(r) for r in references], predictions, print_fn=None))
  out['repetition_rate'] = analysis.repetition_rate(tokens)
  if removed is not None:
    out['repetition_before_collapse'] = analysis.repetition_rate(tokens, removed=removed)
  out['mean_length'] = float(analysis.lengths(tokens).mean())
  if reference_tokens is not None:
    out.update(analysis.length_stats(tokens, reference_tokens))
    out['length_ratio'] = out['mean_length'] / max(
        float(analysis.lengths(reference_tokens).mean()), 1e-9)
  return out


# ----------------------------------------------------------------------------------------
# Distillation: the teacher's decoding, chosen on validation.


def distill_candidates(choices: Sequence[Sequence[float]]) -> list[tuple[str, ARConfig]]:
  """(name, ARConfig) per ``(beam_size, length_penalty[, no_repeat_ngram])``; beam 1 is
  greedy, and the name ends in ``_norep<n>`` when n-gram repeats are banned."""
  out = []
  for choice in choices:
    beam, penalty = int(choice[0]), float(choice[1])
    ngram = int(choice[2]) if len(choice) > 2 else 0
    suffix = f'_norep{ngram}' if ngram else ''
    if beam <= 1:
      out.append(('greedy' + suffix, ARConfig(method='greedy', no_repeat_ngram=ngram)))
    else:
      out.append((f'beam{beam}_lp{penalty:g}' + suffix,
                  ARConfig(method='beam', beam_size=beam, length_penalty=penalty,
                           no_repeat_ngram=ngram)))
  return out


def choose_distillation(run: Any, teacher: Any, params: Any, shardings: Any,
                        tokenizer: Any, partitioner: Any) -> dict[str, Any]:
  """Decodes validation with each candidate teacher decoding; returns the record and choice."""
  from padir import evaluation  # pylint: disable=g-import-not-at-top
  candidates = distill_candidates(run.cfg.distill_choices)
  rows = []
  with run.bar(len(candidates), 'distillation decoding (validation)', 'setting') as bar:
    for name, config in candidates:
      predictor = evaluation.Predictor(teacher, partitioner, shardings, {'decode_config': config})
      result = qs_eval.decode_and_score(predictor, params, run.full_data, 'validation',
                                        run.cfg.eval_batch_size, tokenizer)
      ref_len = result['mean_length'] - result['mean_length_error']
      rows.append({'name': name, 'config': dataclasses.asdict(config),
                   'bleu': result['bleu'], 'mean_length': result['mean_length'],
                   'length_ratio': result['mean_length'] / max(ref_len, 1e-9),
                   'looping_share': result['looping_share']})
      run.say(bar, f'  teacher {name} on validation: BLEU {result["bleu"]:.2f}, length ratio '
                   f'{rows[-1]["length_ratio"]:.3f}, outputs with a repeated 4-gram '
                   f'{result["looping_share"]:.3f}')
      bar.update(1)
  best, why = choose_distillation_row(rows, run.cfg.select_margin)
  return {'candidates': rows, 'chosen': rows[best]['name'], 'config': candidates[best][1],
          'why': why}


# Distilled targets shorter than this share of the references' length teach the students to
# write short outputs, which BLEU's brevity penalty punishes: the distill stage warns below
# it, and the choice avoids such decodings when it can.
SHORT_LENGTH_RATIO = 0.95
# The students also learn the teacher's loops (a 4-gram written twice): a decoding with more
# than this share of looping outputs on validation distils only when every near-best one does.
LOOPING_LIMIT = 0.1


def choose_distillation_row(rows: Sequence[Mapping[str, Any]],
                            margin: float = 1.0) -> tuple[int, str]:
  """Index of the teacher decoding that distills, and why.

  The students copy the distilled targets' loops and lengths, and BLEU's brevity penalty
  punishes short outputs only. So among the decodings within ``margin`` validation BLEU of the
  best, those whose outputs loop at most ``LOOPING_LIMIT`` of the time (``looping_share``,
  `padir.analysis.looping_share`; a row without it counts as loop-free) are preferred, then
  those at least ``SHORT_LENGTH_RATIO`` of the references' length, and of what is left the one
  whose outputs are closest to the references' length distills.
  """
  top = max(r['bleu'] for r in rows)
  close = [i for i, r in enumerate(rows) if r['bleu'] >= top - margin]
  loop_free = [i for i in close if rows[i].get('looping_share', 0.0) <= LOOPING_LIMIT]
  close_pool = loop_free or close
  long_enough = [i for i in close_pool if rows[i]['length_ratio'] >= SHORT_LENGTH_RATIO]
  pool = long_enough or close_pool
  best = min(pool, key=lambda i: (abs(1.0 - rows[i]['length_ratio']), -rows[i]['bleu']))
  why = (f'of the {len(close)} teacher decoding(s) within {margin:g} BLEU of the best '
         f'({top:.2f}), ')
  if loop_free and len(loop_free) < len(close):
    why += (f'the {len(loop_free)} whose outputs loop at most {LOOPING_LIMIT:g} of the '
            'time, and of those ')
  if long_enough and len(long_enough) < len(close_pool):
    why += (f'the {len(long_enough)} at least {SHORT_LENGTH_RATIO:g}x the reference length, '
            'the one closest to it')
  elif long_enough:
    why += 'the one whose length is closest to the references'
  else:
    why += (f'all shorter than {SHORT_LENGTH_RATIO:g}x the reference length, the one closest '
            'to it')
  return best, why


def distilled_stats(distilled_dir: str, subset_dir: str) -> tuple[float, dict[str, float]]:
  """The distilled training targets against the human ones of the same rows: (mean length
  ratio, share of targets with a repeated 4-gram ``{'distilled': .., 'references': ..}``,
  `padir.analysis.looping_share`). Each split is read once."""
  from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
  ours, human = (np.asarray(arrays_lib.ArrayDataset.load(os.path.join(d, 'train'), mmap=False)
                            .arrays['decoder_target_tokens']) for d in (distilled_dir, subset_dir))
  mean = lambda targets: float((targets > 0).sum(1).mean())
  looping = {'distilled': analysis.looping_share(ours),
             'references': analysis.looping_share(human)}
  return mean(ours) / max(mean(human), 1e-9), looping


def distill(run: Any) -> dict[str, Any]:
  """Body of the ``distill`` stage: the teacher decoding chosen on validation, then distilling."""
  from padir import datasets as datasets_lib  # pylint: disable=g-import-not-at-top
  from padir import distill as distill_lib  # pylint: disable=g-import-not-at-top
  from padir import partitioning  # pylint: disable=g-import-not-at-top
  from padir.data import vocab  # pylint: disable=g-import-not-at-top
  teacher = run.teacher_model()
  run.register_task()
  partitioner = partitioning.Partitioner()
  choice_path = run.path('distill', 'choice.json')
  if os.path.isfile(choice_path):
    record = qs_eval.read_json(choice_path)
  else:
    tokenizer = vocab.load_tokenizer(run.cfg.vocabulary)
    params, shardings, _ = qs_eval.load_params(run, teacher, 'teacher', tokenizer,
                                               partitioner)
    record = choose_distillation(run, teacher, params, shardings, tokenizer, partitioner)
    record['config'] = dataclasses.asdict(record['config'])
    qs_eval.write_json(choice_path, record)
    del params
  decoding = ARConfig(**record['config'])
  run.print(f'  distilling with the teacher\'s {record["chosen"]} decoding (validation: ' +
            ', '.join(f'{c["name"]} BLEU {c["bleu"]:.2f}, length ratio '
                      f'{c["length_ratio"]:.3f}' for c in record['candidates']) + ').')
  dataset = datasets_lib.DatasetConfig(source=run.subset_data, split='train',
                                       batch_size=run.cfg.distill_batch_size,
                                       task_feature_lengths=run.lengths, shuffle=False)
  result = distill_lib.distill(
      model=teacher, checkpoint_path=run.path('teacher'),
      partitioner=partitioner, dataset_cfg=dataset,
      output_dir=run.path('distill'), task_name=f'{run.task_name}_distilled',
      base_task=run.task_name, decode_kwargs={'decode_config': decoding},
      export_feature_lengths=run.lengths, overlong=run.cfg.overlong,
      progress=run.progress, print_fn=run.print)
  summary = dict(result.summary)
  summary['decode_seconds'] = result.seconds or summary.get('decode_seconds', 0.0)
  ratio, looping = distilled_stats(run.distilled_data, run.subset_data)
  summary.update(choice=record, length_ratio=ratio, looping_share=looping)
  summary_path = run.path('distill', distill_lib.SUMMARY_FILE)
  if os.path.isfile(summary_path):  # distill.json records the choice, ratio and loops too
    saved = qs_eval.read_json(summary_path)
    saved.update(choice=record, length_ratio=ratio, looping_share=looping)
    qs_eval.write_json(summary_path, saved)
  run.print(f'  distilled targets are {ratio:.3f}x the length of the human references; '
            f'{looping["distilled"]:.3f} of them hold a repeated 4-gram (references '
            f'{looping["references"]:.3f}).')
  if ratio < SHORT_LENGTH_RATIO:
    run.print(f'  WARNING: the distilled targets are {100 * (1 - ratio):.0f}% shorter than '
              'the references; the students will learn to write short outputs (try other '
              'QuickstartConfig.distill_choices).')
  return summary


# ----------------------------------------------------------------------------------------
# The select stage.


def _setting_rows(names: Sequence[str], tokens: Mapping[str, np.ndarray],
                  times: Mapping[str, Sequence[float]], references: Sequence[Sequence[str]],
                  reference_tokens: np.ndarray, tokenizer: Any,
                  removed: Mapping[str, np.ndarray]) -> dict[str, dict[str, Any]]:
  rows = {}
  for name in names:
    row = score_tokens(tokens[name], references, tokenizer, reference_tokens, removed.get(name))
    latency = qs_eval.latency_stats(times[name])
    row.update(latency=latency, median_ms=latency['median'])
    rows[name] = row
  return rows


class _Decoders:
  """Batch-1 decoders of one validation run: one compilation per distinct decoding, shared by
  every student of the same network (`qs_eval.batch1`)."""

  def __init__(self, run: Any, student: Any, teacher: Any, t_params: Any):
    self.run, self.student, self.teacher_model, self.t_params = run, student, teacher, t_params
    self.length = run.lengths['targets']
    self._compiled: dict[Any, Any] = {}

  def __call__(self, setting: selection.DecodeSetting, params: Any, allow: bool = False,
               model: Any = None):
    model = self.student if model is None else model
    config = setting.refine_config(self.run.cfg.refine)
    if allow:
      config = dataclasses.replace(config, allow_untrained_update=True)
    key = (id(model), config, setting.rerank)
    if key not in self._compiled:
      self._compiled[key] = selection.batch1_decoder(
          model, config, self.length, self.teacher_model if setting.rerank else None)
    return qs_eval.batch1(self._compiled[key], (params, self.t_params) if setting.rerank
                          else params)

  def teacher(self):
    """The AR teacher's greedy batch-1 decoder."""
    return qs_eval.batch1(qs_eval.ar_greedy_decoder(self.teacher_model, self.length),
                          self.t_params)


def _validation(run: Any):
  """(sources [N, S], reference tokens [N, L], references) of the validation rows used."""
  from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
  val = arrays_lib.ArrayDataset.load(os.path.join(run.full_data, 'validation'), mmap=False)
  n = val.num_examples if run.cfg.select_examples is None else min(val.num_examples,
                                                                     run.cfg.select_examples)
  return (np.asarray(val.arrays['encoder_input_tokens'])[:n],
          np.asarray(val.arrays['decoder_target_tokens'])[:n],
          [t['references'] for t in val.text()[:n]])


def validation_sources(run: Any) -> np.ndarray:
  """The [N, S] validation source rows the select stage decodes."""
  return _validation(run)[0]


def select(run: Any) -> dict[str, Any]:
  """Body of the ``select`` stage (see the module docstring)."""
  from padir import partitioning  # pylint: disable=g-import-not-at-top
  from padir.data import vocab  # pylint: disable=g-import-not-at-top
  cfg = run.cfg
  tokenizer = vocab.load_tokenizer(cfg.vocabulary)
  partitioner = partitioning.Partitioner()
  sources, reference_tokens, references = _validation(run)
  teacher = run.teacher_model()
  t_params, _, _ = qs_eval.load_params(run, teacher, 'teacher', tokenizer, partitioner)
  student = run.student_model('student_distilled')  # the students share one network
  students = run.data_students()
  s_params = {stage: qs_eval.load_params(run, student, stage, tokenizer, partitioner)[0]
              for stage in students}
  settings = selection.grid(cfg.select_rules, cfg.select_iterations, cfg.select_length_beams,
                            cfg.select_rerank, cfg.select_stutter, cfg.select_prune,
                            candidates_per_length=cfg.refine.top_k_lengths * cfg.refine.restarts,
                            collapse=cfg.select_collapse, avoid=cfg.select_avoid_repeats,
                            length_offsets=cfg.select_length_offsets,
                            teacher_fix=cfg.select_teacher_fix,
                            teacher_fix_rounds=cfg.select_teacher_fix_rounds)
  padir_decoder = _Decoders(run, student, teacher, t_params)
  decoders = {TEACHER: padir_decoder.teacher()}
  for stage in students:
    for setting in settings:
      decoders[f'{stage}/{setting.name}'] = padir_decoder(setting, s_params[stage])
  what = f'{len(settings)} PaDIR settings' + (f' x {len(students)} students'
                                               if len(students) > 1 else '')
  with run.bar(len(sources), f'select: {what} (validation, batch 1)', 'sentence') as bar:
    tokens, times, removed = selection.decode_interleaved(decoders, sources, progress=bar)
  rows = _setting_rows(list(decoders), tokens, times, references, reference_tokens, tokenizer,
                       removed)
  teacher_row = rows.pop(TEACHER)
  candidates = []
  for stage in students:
    for setting in settings:
      row = rows[f'{stage}/{setting.name}']
      label = setting.label if len(students) == 1 else f'{DATA_TEXT[stage]}; {setting.label}'
      row.update(setting=setting.to_json(), name=f'{stage}/{setting.name}', label=label,
                 student=stage, speedup=teacher_row['median_ms'] / max(row['median_ms'], 1e-9))
      candidates.append(row)
  chosen, why = selection.choose(candidates, teacher_row['bleu'], cfg.select_margin)
  best = selection.DecodeSetting.from_json(chosen['setting'])
  run.print(f'  chosen on validation: {chosen["label"]}: BLEU {chosen["bleu"]:.2f} (teacher '
            f'{teacher_row["bleu"]:.2f}), {chosen["speedup"]:.2f}x the teacher\'s speed; {why}.')
  for stage in students:  # either student dir then translates with the chosen decoding
    write_decoding_file(run.path(stage), best, 'teacher')
  return {'teacher': teacher_row, 'candidates': candidates, 'chosen': best.to_json(),
          'chosen_name': chosen['name'], 'student': chosen['student'], 'why': why,
          'margin': cfg.select_margin, 'validation_examples': int(len(sources))}


def write_decoding_file(model_dir: str, setting: selection.DecodeSetting,
                        teacher_dir_name: str) -> str:
  """Saves ``setting`` as the model dir's decoding defaults (`padir.interactive.DECODING_FILE`):
  ``padir translate`` and ``padir.load`` then decode as the validation split chose, the
  teacher (a sibling dir) re-ranking when the setting says so."""
  from padir import interactive  # pylint: disable=g-import-not-at-top
  value: dict[str, Any] = {'num_iterations': setting.iterations,
                           'length_beam': setting.length_beam, 'rule': setting.rule,
                           'stutter': setting.stutter}
  if setting.collapse_repeats:
    value['collapse_repeats'] = True
  if setting.avoid_repeats:
    value['avoid_repeats'] = True
  if setting.prune:
    value['prune_after'] = setting.prune
  if setting.length_offset:
    value['length_offset'] = setting.length_offset
  if setting.rerank:
    value['rerank_model_dir'] = os.path.join('..', teacher_dir_name)
  if setting.teacher_fix:
    value['teacher_fix_threshold'] = setting.teacher_fix
  if setting.teacher_fix_rounds > 1:
    value['teacher_fix_rounds'] = setting.teacher_fix_rounds
  path = os.path.join(model_dir, interactive.DECODING_FILE)
  qs_eval.write_json(path, value)
  return path


def ablations(run: Any) -> list[dict[str, Any]]:
  """Body of the ``ablations`` stage: the chosen student and setting with one choice switched
  off at a time, on validation (a decoding choice, the training data, the teacher's weights,
  the extra ablation students)."""
  from padir import partitioning  # pylint: disable=g-import-not-at-top
  from padir.data import vocab  # pylint: disable=g-import-not-at-top
  record = run.stage_result('select')
  if record is None:
    raise ValueError('The ablations stage compares against the setting the select stage chose; '
                     'run the select stage first (--stages=...,select,...).')
  record = record['result']
  chosen = next(r for r in record['candidates'] if r['name'] == record['chosen_name'])
  best = selection.DecodeSetting.from_json(record['chosen'])
  main = run.main_student()
  tokenizer = vocab.load_tokenizer(run.cfg.vocabulary)
  partitioner = partitioning.Partitioner()
  sources, reference_tokens, references = _validation(run)
  teacher = run.teacher_model()
  t_params, _, _ = qs_eval.load_params(run, teacher, 'teacher', tokenizer, partitioner)
  student = run.student_model(main)
  s_params, _, _ = qs_eval.load_params(run, student, main, tokenizer, partitioner)
  padir_decoder = _Decoders(run, student, teacher, t_params)

  variants: list[tuple[str, str, Any]] = []  # (label, what, decoder)
  if best.iterations > 1 and best.rule != 'keep_all':
    forced = 'all' not in student.trained_updates
    variants.append(('decoding rule: keep_all (every position re-predicted'
                     + ('; forced, the training does not support it)' if forced else ')'), 'rule',
                     padir_decoder(dataclasses.replace(best, rule='keep_all'), s_params,
                                   allow=True)))
  if best.refine_config(run.cfg.refine).num_candidates > 1:  # else re-ranking changes nothing
    # The re-ranker needs every candidate finished, so it replaces pruning.
    variants.append((f'teacher re-ranking {"off" if best.rerank else "on"}' +
                     (' (instead of length pruning)' if best.prune else '') +
                     (' (and with it the teacher\'s fixes)' if best.teacher_fix else ''),
                     'rerank',
                     padir_decoder(dataclasses.replace(best.without_teacher_fixes(),
                                                       rerank=not best.rerank, prune=0),
                                   s_params)))
  if best.teacher_fix:
    variants.append(('the teacher fixes no token (re-ranking only)', 'teacher_fix',
                     padir_decoder(best.without_teacher_fixes(), s_params)))
  if best.teacher_fix_rounds > 1:
    variants.append((f'the teacher fixes in one round (not {best.teacher_fix_rounds})',
                     'teacher_fix_rounds',
                     padir_decoder(dataclasses.replace(best, teacher_fix_rounds=1), s_params)))
  if best.prune:
    variants.append(('no length pruning (every candidate runs every pass)', 'prune',
                     padir_decoder(dataclasses.replace(best, prune=0), s_params)))
  if best.length_beam > 1:
    variants.append(('length beam 1', 'length_beam',
                     padir_decoder(dataclasses.replace(best, length_beam=1), s_params)))
  if best.iterations > 1:
    variants.append((f'stutter removal {"off" if best.stutter else "on"}', 'stutter',
                     padir_decoder(dataclasses.replace(best, stutter=not best.stutter),
                                   s_params)))
  variants.append((f'repeats {"not " if best.avoid_repeats else ""}avoided in each pass',
                   'avoid_repeats', padir_decoder(
                       dataclasses.replace(best, avoid_repeats=not best.avoid_repeats),
                       s_params)))
  if best.length_offset:
    variants.append(('no length offset (the predicted lengths as they are)', 'length_offset',
                     padir_decoder(dataclasses.replace(best, length_offset=0), s_params)))
  variants.append((f'adjacent repeats {"kept" if best.collapse_repeats else "merged"}',
                   'collapse', padir_decoder(
                       dataclasses.replace(best, collapse_repeats=not best.collapse_repeats),
                       s_params)))
  other = {'student_distilled': ('student_raw', 'no distillation: trained on the human '
                                                'references'),
           'student_raw': ('student_distilled', 'distillation: trained on the teacher\'s outputs '
                                                'instead of the references')}[main]
  trained = [other + ('distillation',),
             ('student_scratch', 'no teacher initialisation (random weights)', 'init')]
  for name, bindings in run.cfg.extra_ablations.items():
    trained.append((f'student_{name}', f'{name}: ' + '; '.join(bindings), name))
  for stage, label, what in trained:
    if not os.path.isdir(run.path(stage)) or (
        stage in (*DATA_TEXT, 'student_scratch') and run.stage_result(stage) is None):
      continue
    model = run.student_model(stage) if run.stage_bindings(stage) else student
    params, _, _ = qs_eval.load_params(run, model, stage, tokenizer, partitioner)
    try:
      variants.append((label, what, padir_decoder(best, params, model=model)))
    except ValueError as err:  # e.g. a corruption whose training refuses the chosen rule
      run.print(f'  ablation {stage}: {err} Decoding it with allow_untrained_update.')
      variants.append((label + ' (decoded with an update its training does not support)',
                       what, padir_decoder(best, params, allow=True, model=model)))
  if not variants:
    return []
  # The chosen setting decodes again in the same interleaved run, so every latency of the
  # table comes from one run on one machine state.
  decoders = {TEACHER: padir_decoder.teacher(), 'chosen': padir_decoder(best, s_params)}
  decoders.update({f'ablation_{i}': d for i, (_, _, d) in enumerate(variants)})
  with run.bar(len(sources), f'ablations: {len(variants)} variants (validation, batch 1)',
               'sentence') as bar:
    tokens, times, removed = selection.decode_interleaved(decoders, sources, progress=bar)
  rows = _setting_rows(list(decoders), tokens, times, references, reference_tokens, tokenizer,
                       removed)
  kept = ('bleu', 'mean_length_error', 'repetition_rate', 'repetition_before_collapse')

  def summary(label: str, what: str, row: Mapping[str, Any], median_ms: float) -> dict:
    return dict({k: row.get(k) for k in kept}, label=label, what=what, median_ms=median_ms)

  out = [summary(f'chosen: {chosen["label"]}', 'chosen', rows['chosen'],
                 rows['chosen']['median_ms'])]
  for i, (label, what, _) in enumerate(variants):
    row = rows[f'ablation_{i}']
    out.append(summary(label, what, row, row['median_ms']))
  for row in out:
    row['delta_bleu'] = row['bleu'] - out[0]['bleu']
    row['speedup'] = rows[TEACHER]['median_ms'] / max(row['median_ms'], 1e-9)
  return out
