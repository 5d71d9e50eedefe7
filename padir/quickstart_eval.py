"""Measurements of the quickstart: test-split quality of a decoder, and batch-1 latency.

* :func:`decode_and_score`: decodes an exported split with a model's ``predict_batch_with_aux``
  (jitted on the mesh by `padir.evaluation.Predictor`) and returns multi-reference BLEU / chrF
  (`padir.data.metrics`), the repetition rate and length error (`padir.analysis`), the passes
  used and, for a refinement decode with ``return_history``, the statistics of the canvas after
  every pass. The decodes are saved for ``padir analyze`` and as a TSV.
* :func:`measure_latency`: per-sentence wall time of several decoders at batch 1, interleaved
  sentence by sentence (in a new order for each sentence, `padir.selection.decode_interleaved`)
  so that load changes on a shared machine hit every system alike.
* :func:`fixed_length_decoders`: AR greedy and PaDIR decoders of randomly initialised networks
  of a larger preset that always produce exactly ``n`` tokens (speed does not depend on what
  the weights say, only on how many steps and passes run).

It also holds the bodies of the quickstart's evaluate and benchmark stages (:func:`evaluate`,
:func:`benchmark`); they take the `padir.quickstart.Quickstart` run as their argument. The
report's results dict is assembled from their files by `padir.quickstart_results`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from padir import analysis
from padir import datasets as datasets_lib
from padir import decoding
from padir import eval as eval_lib
from padir import evaluation
from padir.ar_decoding import ARConfig
from padir.network import T5Config
from padir.refine_decoding import RefineConfig

SIZE_FIELDS = ('emb_dim', 'num_heads', 'head_dim', 'mlp_dim', 'num_encoder_layers',
               'num_decoder_layers')


def reference_streams(references: Sequence[Sequence[str]]) -> list[list[str | None]]:
  """Per-example reference lists -> sacrebleu's per-reference streams (None pads)."""
  width = max(len(r) for r in references)
  return [[r[k] if k < len(r) else None for r in references] for k in range(width)]


def _best_history(aux: Mapping[str, np.ndarray]) -> np.ndarray | None:
  """[B, N, T, L] candidate histories -> [B, T, L] of the chosen candidate."""
  hist = aux.get('history_tokens')
  if hist is None:
    return None
  best = np.asarray(aux['best_candidate'])
  return np.take_along_axis(np.asarray(hist), best[:, None, None, None], axis=1)[:, 0]


def decode_and_score(predictor: evaluation.Predictor, params: Any, data_dir: str, split: str,
                     batch_size: int, tokenizer: Any, *, max_examples: int | None = None,
                     save_prefix: str | None = None, progress: Any = None) -> dict[str, Any]:
  """Decodes ``data_dir/split`` and scores it against every reference of each row.

  Args:
    predictor: the jitted decoder of one system.
    params: its parameters.
    data_dir: an export directory with ``split`` (and its ``text.jsonl``).
    split: 'test' or 'validation'.
    batch_size: global decoding batch size.
    tokenizer: the run's `padir.data.vocab.Tokenizer`.
    max_examples: decode at most this many rows (None: all).
    save_prefix: write ``<prefix>.npz`` (`padir.analysis.save_decodes`) and ``<prefix>.tsv``.
    progress: a tqdm bar advanced once per batch (or None).

  Returns:
    ``bleu``, ``chrf``, ``repetition_rate`` (and ``repetition_before_collapse`` when the
    decoder merges repeats), ``reference_repetition_rate``, ``looping_share`` (outputs with a
    repeated 4-gram, `padir.analysis.looping_share`), the
    `padir.analysis.length_stats` keys, ``mean_iterations`` (refinement), ``num_examples``,
    ``decode_seconds`` and, with a history, ``per_iteration`` (a list of rows).
  """
  cfg = datasets_lib.DatasetConfig(source=data_dir, split=split, batch_size=batch_size,
                                   shuffle=False)
  it = datasets_lib.make_iterator(cfg, vocabulary=tokenizer, shuffle=False, num_epochs=1,
                                  drop_remainder=False)
  texts = datasets_lib.export_texts(cfg)
  if texts is None:
    raise ValueError(f'{data_dir}/{split} has no text.jsonl; export it with --text=yes so that '
                     'every reference is scored.')
  tokens, targets, iterations, histories, rows, removed = [], [], [], [], [], []
  seconds = 0.0
  for index, batch in enumerate(it):
    row_ids = np.array(it.last_rows)
    start = time.perf_counter()
    out, aux = predictor(params, batch, index)
    seconds += time.perf_counter() - start
    keep = row_ids >= 0
    if max_examples is not None:
      room = max_examples - sum(len(t) for t in tokens)
      keep &= np.cumsum(keep) <= room
    tokens.append(out[keep])
    targets.append(np.asarray(batch['decoder_target_tokens'])[keep])
    if 'iterations' in aux:
      iterations.append(np.asarray(aux['iterations'])[keep])
    if 'repeats_removed' in aux:
      removed.append(np.asarray(aux['repeats_removed'])[keep])
    hist = _best_history(aux)
    if hist is not None:
      histories.append(hist[keep])
    rows.extend(int(r) for r in row_ids[keep])
    if progress is not None:
      progress.update(1)
    if max_examples is not None and len(rows) >= max_examples:
      break
  tokens_np = np.concatenate(tokens)
  targets_np = np.concatenate(targets)
  predictions = tokenizer.decode_batch(tokens_np)
  references = [list(texts[r]['references']) for r in rows]
  from padir.data import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  result: dict[str, Any] = dict(metrics_lib.translation_metrics(references, predictions,
                                                                print_fn=None))
  result['repetition_rate'] = analysis.repetition_rate(tokens_np)
  if removed:
    result['repetition_before_collapse'] = analysis.repetition_rate(
        tokens_np, removed=np.concatenate(removed))
  result['reference_repetition_rate'] = analysis.repetition_rate(targets_np)
  result['looping_share'] = analysis.looping_share(tokens_np)
  result.update(analysis.length_stats(tokens_np, targets_np))
  result['mean_length'] = float(analysis.lengths(tokens_np).mean())
  result['num_examples'] = int(len(rows))
  result['decode_seconds'] = seconds
  iterations_np = np.concatenate(iterations) if iterations else None
  if iterations_np is not None:
    result['mean_iterations'] = float(iterations_np.mean())
  history_np = None
  if histories:
    history_np = np.transpose(np.concatenate(histories), (1, 0, 2))  # [T, N, L]
    result['per_iteration'] = analysis.per_iteration(
        history_np, tokenizer.decode_batch, reference_streams(references))
  if save_prefix:
    os.makedirs(os.path.dirname(save_prefix) or '.', exist_ok=True)
    analysis.save_decodes(save_prefix + '.npz', tokens_np, history=history_np,
                          iterations=iterations_np, reference_tokens=targets_np,
                          metadata={'data_dir': data_dir, 'split': split})
    eval_lib.write_rows_tsv(save_prefix + '.tsv', [
        evaluation.DecodedRow(source=texts[r]['inputs'], references=references[i],
                              prediction=predictions[i], tokens=tokens_np[i].tolist())
        for i, r in enumerate(rows)])
  return result


def latency_stats(seconds: Sequence[float]) -> dict[str, float]:
  """Milliseconds: mean, median, p90, min over the timed calls."""
  ms = np.asarray(seconds, np.float64) * 1000.0
  return {'mean': float(ms.mean()), 'median': float(np.median(ms)),
          'p90': float(np.percentile(ms, 90)), 'min': float(ms.min()), 'count': int(ms.size)}


def measure_latency(decoders: Mapping[str, Callable[[np.ndarray], Any]],
                    sources: np.ndarray, *, warmup: int = 2,
                    progress: Any = None) -> dict[str, dict[str, float]]:
  """Batch-1 wall time of each decoder on each source row, interleaved.

  Args:
    decoders: name -> ``fn(tokens [1, S]) -> outputs`` (jitted; compiled by the warm-up).
    sources: [N, S] int32 source rows.
    warmup: untimed calls per decoder first (compilation, caches).
    progress: a tqdm bar advanced once per source row (or None).

  Returns:
    name -> `latency_stats` (milliseconds).
  """
  if len(sources) == 0:
    raise ValueError('measure_latency needs at least one source row.')
  from padir import selection  # pylint: disable=g-import-not-at-top
  _, times, _ = selection.decode_interleaved(decoders, sources, warmup=warmup,
                                             progress=progress)
  return {name: latency_stats(t) for name, t in times.items()}


def batch1(decoder: decoding.ShardedDecoder, params: Any,
           lengths: np.ndarray | None = None) -> Callable[[np.ndarray], Any]:
  """``tokens [1, S] -> outputs`` of a jitted decoder with ``params`` on one device.

  One decoder (one compilation) serves several parameter sets of the same network.
  """
  params = jax.device_put(params, jax.devices()[0])
  if lengths is None:
    return lambda tokens: decoder(params, tokens)
  return lambda tokens: decoder(params, tokens, lengths=lengths)


def ar_greedy_decoder(model: Any, max_length: int,
                      min_length: int = 0) -> decoding.ShardedDecoder:
  """The jitted AR greedy decoder of an `EncoderDecoderModel` (no mesh: batch-1 timing).

  It computes no sequence score (``ARConfig.score=False``): translating needs none, and the
  per-step log-softmax would slow the AR baseline down by about a tenth.
  """
  config = ARConfig(method='greedy', eos_id=model.special_ids.eos, min_length=min_length,
                    score=False)
  return decoding.ar_decoder(model.module, config, max_length)


def refine_decoder(model: Any, config: RefineConfig, max_length: int) -> decoding.ShardedDecoder:
  """The jitted refinement decoder of a `PadirModel` (no mesh: batch-1 timing).

  The config is checked against the model's training (`PadirModel.decoding_config`).
  """
  config = model.decoding_config(config)
  return decoding.refine_decoder(model.module, config, model.special_ids, max_length)


def preset_config(config: T5Config, preset: str) -> T5Config:
  """``config`` with the widths and depths of a T5.1.1 preset (everything else kept)."""
  sizes = T5Config.preset(preset)
  return config.replace(**{f: getattr(sizes, f) for f in SIZE_FIELDS}, dropout_rate=0.0)


def fixed_length_decoders(ar_model: Any, padir_model: Any, preset: str, output_length: int,
                          refine: RefineConfig, iterations: Sequence[int],
                          input_length: int, seed: int = 0
                          ) -> tuple[dict[str, Callable[[np.ndarray], Any]], dict[str, int]]:
  """Batch-1 decoders of random ``preset``-size networks that emit exactly ``output_length``.

  The AR decoder runs ``output_length`` greedy steps (EOS forbidden before, cache of that
  width); the PaDIR decoders run every one of their passes (no early stop) over canvases of
  that length. Both keep the trained models' other settings (vocabulary, special ids,
  positional attention, length beam, remasking); there is no teacher at that size, so the
  PaDIR decoders neither re-rank nor take the teacher's fixes.

  Returns:
    (name -> decoder, name -> number of parameters).
  """
  from padir import models as models_lib  # pylint: disable=g-import-not-at-top
  ar = models_lib.EncoderDecoderModel(preset_config(ar_model.network_config, preset),
                                      special_ids=ar_model.special_ids)
  nar = models_lib.PadirModel(preset_config(padir_model.network_config, preset),
                              special_ids=padir_model.special_ids,
                              corruption=padir_model.corruption)
  shapes = {'encoder_input_tokens': (1, input_length),
            'decoder_target_tokens': (1, output_length)}
  key_ar, key_nar = jax.random.split(jax.random.key(seed))
  ar_params = ar.get_initial_variables(key_ar, shapes).params
  nar_params = nar.get_initial_variables(key_nar, shapes).params
  count = lambda p: int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(p)))
  decoders = {'ar_greedy': batch1(ar_greedy_decoder(ar, output_length, output_length),
                                  ar_params)}
  for t in iterations:
    config = dataclasses.replace(refine.without_teacher_fixes(), num_iterations=t,
                                 early_stop=False, return_history=False, canvas_buckets=())
    lengths = np.full((1, config.top_k_lengths), output_length, np.int32)
    decoders[f'padir_t{t}'] = batch1(refine_decoder(nar, config, output_length), nar_params,
                                     lengths)
  return decoders, {'ar': count(ar_params), 'padir': count(nar_params)}


def write_json(path: str, value: Any) -> None:
  """Writes ``value`` as JSON atomically (a temporary file, then a rename)."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(value, f, indent=2, sort_keys=True, default=str)
    f.write('\n')
  os.replace(path + '.tmp', path)


def read_json(path: str) -> Any:
  """Reads a JSON file."""
  with open(path, encoding='utf-8') as f:
    return json.load(f)


# ----------------------------------------------------------------------------------------
# Stage 6 of a quickstart run (`padir.quickstart.Quickstart`): evaluation.


MATCHED_AR = 'ar_matched_greedy'
STUDENT_SHORT = {'student_distilled': 'distilled', 'student_raw': 'raw',
                 'student_scratch': 'scratch'}


def chosen_setting(run: Any) -> Any:
  """The PaDIR setting chosen on validation (`padir.quickstart_select`), or the base config's."""
  from padir import selection  # pylint: disable=g-import-not-at-top
  marker = run.stage_result('select')
  if marker:
    return selection.DecodeSetting.from_json(marker['result']['chosen'])
  refine = run.cfg.refine
  return selection.DecodeSetting(rule=refine.remask.rule, iterations=refine.num_iterations,
                                 length_beam=refine.length_beam, stutter=refine.remask.stutter)


def trained_students(run: Any) -> list[str]:
  """The student stages this run trains, the main one (chosen on validation) first."""
  out = ['student_distilled']
  if run.cfg.raw_ablation:
    out.append('student_raw')
  if run.cfg.scratch_ablation and run.cfg.student_init == 'teacher':
    out.append('student_scratch')
  main = run.main_student()
  return [main] + [s for s in out if s != main]


def teacher_beam(run: Any) -> tuple[ARConfig, bool]:
  """(ARConfig, chosen) of the teacher's beam row: of the distillation candidates with a beam
  of ``eval_beam_size`` (the distill stage decodes them on validation), the one with the best
  validation BLEU (its length penalty and n-gram ban), else ARConfig's defaults (chosen
  False)."""
  result = (run.stage_result('distill') or {}).get('result', {})
  rows = [r for r in result.get('choice', {}).get('candidates', [])
          if r['config'].get('method') == 'beam'
          and r['config'].get('beam_size') == run.cfg.eval_beam_size]
  if not rows:
    return ARConfig(method='beam', beam_size=run.cfg.eval_beam_size), False
  best = max(rows, key=lambda r: r['bleu'])['config']
  return ARConfig(method='beam', beam_size=run.cfg.eval_beam_size,
                  length_penalty=float(best['length_penalty']),
                  no_repeat_ngram=int(best.get('no_repeat_ngram', 0))), True


def decoded_systems(run: Any) -> list[dict[str, Any]]:
  """Every decoded system of a quickstart run: name, label, model stage, kind, config.

  The main student (`Quickstart.main_student`) runs the chosen setting at every pass count of
  ``iterations`` (and at the chosen count); the other students run the chosen setting.
  """
  out = [{'name': 'ar_greedy', 'label': 'AR teacher, greedy', 'model': 'teacher',
          'kind': 'ar', 'config': ARConfig(method='greedy')}]
  if run.cfg.eval_beam_size > 1:
    config, chosen = teacher_beam(run)
    ban = (f', no repeated {config.no_repeat_ngram}-gram' if config.no_repeat_ngram else '')
    out.append({'name': f'ar_beam{run.cfg.eval_beam_size}',
                'label': f'AR teacher, beam {run.cfg.eval_beam_size}, length penalty '
                         f'{config.length_penalty:g}{ban}'
                         + (' (best on validation)' if chosen else ''),
                'model': 'teacher', 'kind': 'ar', 'config': config})
  if run.trains_matched_ar:
    steps = run.cfg.teacher_steps + run.cfg.student_steps
    out.append({'name': MATCHED_AR, 'model': 'ar_matched', 'kind': 'ar',
                'label': f'AR trained as long as the students ({steps} steps), greedy',
                'config': ARConfig(method='greedy')})
  best = chosen_setting(run)
  sweep = sorted(set(run.cfg.iterations) | {best.iterations})
  main = run.main_student()
  for stage in trained_students(run):
    short = STUDENT_SHORT[stage]
    for t in (sweep if stage == main else [best.iterations]):
      setting = dataclasses.replace(best, iterations=t)
      config = dataclasses.replace(setting.refine_config(run.cfg.refine),
                                   return_history=t == max(sweep))
      out.append({'name': f'padir_{short}_t{t}', 'label': f'PaDIR {short}, {t} it.',
                  'model': stage, 'kind': 'padir', 'iterations': t, 'config': config,
                  'rerank': setting.rerank, 'chosen': t == best.iterations,
                  'setting': setting.to_json()})
  return out

def load_params(run: Any, model: Any, stage: str, tokenizer: Any, partitioner: Any):
  """Params-only restore of a stage's newest checkpoint: (params, shardings, step)."""
  from padir import eval as eval_lib  # pylint: disable=g-import-not-at-top
  shapes = {'encoder_input_tokens': (run.cfg.eval_batch_size, run.lengths['inputs']),
            'decoder_target_tokens': (run.cfg.eval_batch_size, run.lengths['targets'])}
  params, shardings, step = eval_lib.load_for_inference(model, partitioner, run.path(stage),
                                                        tokenizer, shapes)
  return params, shardings, step

def evaluate(run: Any) -> dict[str, Any]:
  from padir import evaluation  # pylint: disable=g-import-not-at-top
  from padir import partitioning  # pylint: disable=g-import-not-at-top
  from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
  from padir.data import vocab  # pylint: disable=g-import-not-at-top
  tokenizer = vocab.load_tokenizer(run.cfg.vocabulary)
  partitioner = partitioning.Partitioner()
  partitioner.check_batch_size(run.cfg.eval_batch_size, 'QuickstartConfig.eval_batch_size')
  systems = decoded_systems(run)
  test = arrays_lib.ArrayDataset.load(os.path.join(run.full_data, 'test'))
  rows = test.num_examples if run.cfg.eval_examples is None else min(
      test.num_examples, run.cfg.eval_examples)
  batches = -(-rows // run.cfg.eval_batch_size)
  todo = [s for s in systems if not os.path.isfile(run.path('eval', f'{s["name"]}.json'))]
  loaded: dict[str, Any] = {}
  predictors: dict[Any, Any] = {}
  from padir import selection  # pylint: disable=g-import-not-at-top
  with run.bar(len(todo) * batches, 'evaluate', 'batch') as bar:
    for system in todo:
      stage = system['model']
      if stage not in loaded:
        model = run.teacher_model() if system['kind'] == 'ar' else run.student_model(stage)
        if f'{system["kind"]}_model' in loaded:
          model = loaded[f'{system["kind"]}_model']  # the same network: reuse its decoders
        params, shardings, step = load_params(run, model, stage, tokenizer, partitioner)
        loaded[stage] = (model, params, shardings, step)
        loaded.setdefault(f'{system["kind"]}_model', model)
      model, params, shardings, step = loaded[stage]
      if system.get('rerank'):
        if 'teacher' not in loaded:
          teacher = run.teacher_model()
          loaded['teacher'] = (teacher,) + load_params(run, teacher, 'teacher', tokenizer,
                                                       partitioner)
        teacher, t_params, t_shardings, _ = loaded['teacher']
        model = loaded.setdefault(('reranked', id(model)),
                                  selection.TeacherReranked(model, teacher))
        params, shardings = (params, t_params), (shardings, t_shardings)
      key = (id(model), system['config'])
      if key not in predictors:
        predictors[key] = evaluation.Predictor(model, partitioner, shardings,
                                               {'decode_config': system['config']})
      result = decode_and_score(
          predictors[key], params, run.full_data, 'test', run.cfg.eval_batch_size,
          tokenizer, max_examples=run.cfg.eval_examples,
          save_prefix=run.path('eval', 'decodes', system['name']), progress=bar)
      result.update({k: v for k, v in system.items() if k != 'config'})
      result['length_ratio'] = result['mean_length'] / max(
          result['mean_length'] - result['mean_length_error'], 1e-9)
      result['checkpoint_step'] = step
      result['decode_config'] = dataclasses.asdict(system['config'])
      write_json(run.path('eval', f'{system["name"]}.json'), result)
      run.say(bar, f'  {system["label"]}: BLEU {result["bleu"]:.2f}, repetition '
                f'{result["repetition_rate"]:.4f}, length error '
                f'{result["mean_length_error"]:+.2f}')
  return {'systems': [s['name'] for s in systems], 'test_examples': rows}

# ----------------------------------------------------------------------------------------
# Stage 7: batch-1 latency.


def _load_average() -> float | None:
  """The 1-minute load average of the machine (None where the OS does not report it)."""
  try:
    return round(os.getloadavg()[0], 2)
  except (AttributeError, OSError):
    return None


def benchmark(run: Any) -> dict[str, Any]:
  from padir import partitioning  # pylint: disable=g-import-not-at-top
  from padir.data import arrays as arrays_lib  # pylint: disable=g-import-not-at-top
  from padir.data import vocab  # pylint: disable=g-import-not-at-top
  if not run.cfg.bench_examples:
    return {'latency_ms': {}}
  tokenizer = vocab.load_tokenizer(run.cfg.vocabulary)
  partitioner = partitioning.Partitioner()
  test = arrays_lib.ArrayDataset.load(os.path.join(run.full_data, 'test'), mmap=False)
  sources = np.asarray(test.arrays['encoder_input_tokens'])[:run.cfg.bench_examples]
  length = run.lengths['targets']
  teacher = run.teacher_model()
  t_params, _, _ = load_params(run, teacher, 'teacher', tokenizer, partitioner)
  ar = ar_greedy_decoder(teacher, length)  # one compilation serves both AR models
  decoders = {'ar_greedy': batch1(ar, t_params)}
  if run.trains_matched_ar:
    decoders[MATCHED_AR] = batch1(ar, load_params(run, teacher, 'ar_matched', tokenizer,
                                                  partitioner)[0])
  from padir import selection  # pylint: disable=g-import-not-at-top
  student = run.student_model()
  best = chosen_setting(run)
  sweep = sorted(set(run.cfg.iterations) | {best.iterations})
  refiners = {}  # one compilation serves every student
  for t in sweep:
    config = dataclasses.replace(best, iterations=t).refine_config(run.cfg.refine)
    refiners[t] = selection.batch1_decoder(student, config, length,
                                           teacher if best.rerank else None)
  main = run.main_student()
  for stage in trained_students(run):
    short = STUDENT_SHORT[stage]
    s_params, _, _ = load_params(run, student, stage, tokenizer, partitioner)
    params = (s_params, t_params) if best.rerank else s_params
    for t in (sweep if stage == main else [best.iterations]):
      decoders[f'padir_{short}_t{t}'] = batch1(refiners[t], params)
  load_before = _load_average()
  with run.bar(len(sources), 'latency (batch 1)', 'sentence') as bar:
    latency = measure_latency(decoders, sources, progress=bar)
  result: dict[str, Any] = {'latency_ms': latency, 'bench_examples': int(len(sources)),
                            'load_average': [load_before, _load_average()]}
  if run.cfg.small_preset:
    targets = np.asarray(test.arrays['decoder_target_tokens'])
    n = int(np.median((targets > 0).sum(axis=1)))
    small, counts = fixed_length_decoders(
        teacher, student, run.cfg.small_preset, n, best.refine_config(run.cfg.refine),
        run.cfg.small_iterations, run.lengths['inputs'])
    few = sources[:run.cfg.small_bench_examples]
    with run.bar(len(few), f'latency ({run.cfg.small_preset})', 'sentence') as bar:
      small_latency = measure_latency(small, few, progress=bar)
    result['small'] = {'config': run.cfg.small_preset, 'output_length': n,
                       'latency_ms': small_latency, 'params': counts,
                       'bench_examples': int(len(few))}
  return result
