"""Measurements of the quickstart: test-split quality of a decoder, and batch-1 latency.

* :func:`decode_and_score`: decodes an exported split with a model's ``predict_batch_with_aux``
  (jitted on the mesh by `padir.evaluation.Predictor`) and returns multi-reference BLEU / chrF
  (`padir.data.metrics`), the repetition rate and length error (`padir.analysis`), the passes
  used and, for a refinement decode with ``return_history``, the statistics of the canvas after
  every pass. The decodes are saved for ``padir analyze`` and as a TSV.
* :func:`measure_latency`: per-sentence wall time of several decoders at batch 1, interleaved
  sentence by sentence so that load changes on a shared machine hit every system alike.
* :func:`fixed_length_decoders`: AR greedy and PaDIR decoders of randomly initialised networks
  of a larger preset that always produce exactly ``n`` tokens (speed does not depend on what
  the weights say, only on how many steps and passes run).
"""

from __future__ import annotations

import dataclasses
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
    ``bleu``, ``chrf``, ``repetition_rate``, ``reference_repetition_rate``, the
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
  tokens, targets, iterations, histories, rows = [], [], [], [], []
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
  result['reference_repetition_rate'] = analysis.repetition_rate(targets_np)
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
  for fn in decoders.values():
    for i in range(warmup):
      jax.block_until_ready(fn(sources[i % len(sources)][None]))
  times: dict[str, list[float]] = {name: [] for name in decoders}
  for row in sources:
    for name, fn in decoders.items():
      start = time.perf_counter()
      jax.block_until_ready(fn(row[None]))
      times[name].append(time.perf_counter() - start)
    if progress is not None:
      progress.update(1)
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
  """The jitted AR greedy decoder of an `EncoderDecoderModel` (no mesh: batch-1 timing)."""
  config = ARConfig(method='greedy', eos_id=model.special_ids.eos, min_length=min_length)
  return decoding.ar_decoder(model.module, config, max_length)


def refine_decoder(model: Any, config: RefineConfig, max_length: int) -> decoding.ShardedDecoder:
  """The jitted refinement decoder of a `PadirModel` (no mesh: batch-1 timing)."""
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
  positional attention, length beam, remasking).

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
    config = dataclasses.replace(refine, num_iterations=t, early_stop=False,
                                 return_history=False, canvas_buckets=())
    lengths = np.full((1, config.top_k_lengths), output_length, np.int32)
    decoders[f'padir_t{t}'] = batch1(refine_decoder(nar, config, output_length), nar_params,
                                     lengths)
  return decoders, {'ar': count(ar_params), 'padir': count(nar_params)}
