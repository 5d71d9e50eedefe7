"""Evaluation loops shared by train, eval and infer: validation loss, decoding, BLEU / chrF.

* :func:`evaluate_loss`: the model's ``eval_fn`` metrics over batches of a split (teacher
  forcing for AR; fixed-key corruption for PaDIR).
* :class:`Predictor`: the model's ``predict_batch_with_aux`` jitted with the run's shardings;
  returns host token arrays.
* :func:`decode_split`: decodes batches and detokenizes sources, references and predictions.
* :func:`translation_scores`: sacrebleu BLEU and chrF (``padir.data.metrics``) of decoded rows.

References: an export with ``text.jsonl`` gives each row's source text and every reference
(multi-reference BLEU, e.g. both English Bibles); otherwise the batch's detokenized
``decoder_target_tokens`` is the one reference.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Iterable, Mapping

import jax
import numpy as np

from padir import analysis
from padir import decoding
from padir import partitioning as partitioning_lib
from padir import trainer as trainer_lib


def _real_rows(batch: Mapping[str, np.ndarray]) -> np.ndarray:
  """Rows that are examples, not the all-pad rows that fill a last partial batch."""
  return np.asarray(batch['encoder_input_tokens']).any(axis=1)


def evaluate_loss(eval_step: Callable[[Any, Mapping[str, np.ndarray]], Mapping[str, Any]],
                  params: Any, batches: Iterable[Mapping[str, np.ndarray]],
                  num_batches: int | None = None) -> dict[str, float]:
  """Eval metrics averaged over batches (counts summed).

  Args:
    eval_step: ``(params, batch) -> metrics`` (e.g. ``Trainer.eval_step``).
    params: the parameters.
    batches: numpy batches (this process's rows).
    num_batches: stop after this many (None: until the iterator ends).

  Returns:
    Metrics, plus ``num_batches``.
  """
  acc = trainer_lib.MetricsAccumulator()
  for i, batch in enumerate(batches):
    if num_batches is not None and i >= num_batches:
      break
    acc.add(i, eval_step(params, batch))
  count = len(acc)
  if not count:
    raise ValueError('The evaluation split produced no batch.')
  metrics, _ = acc.reduce()
  metrics['num_batches'] = float(count)
  return metrics


class Predictor:
  """``model.predict_batch_with_aux`` jitted on the mesh: numpy batch in, numpy tokens out."""

  def __init__(self, model: Any, partitioner: partitioning_lib.Partitioner, param_shardings: Any,
               decode_kwargs: Mapping[str, Any] | None = None, seed: int = 0):
    if not hasattr(model, 'predict_batch_with_aux'):
      raise ValueError(f'{type(model).__name__} has no predict_batch_with_aux; this version of '
                       'padir cannot decode with it.')
    self.partitioner = partitioner
    self.seed = seed
    kwargs = dict(decode_kwargs or {})
    self.gold_lengths = bool(kwargs.get('use_gold_lengths'))

    def predict(params, batch, key):
      tokens, aux = model.predict_batch_with_aux(params, batch, rng=key, **kwargs)
      return tokens, aux

    replicated = partitioner.replicated()
    self._fn = jax.jit(predict,
                       in_shardings=(param_shardings, partitioner.batch_sharding(2), replicated),
                       out_shardings=replicated, **decoding.jit_options())

  def __call__(self, params: Any, batch: Mapping[str, np.ndarray],
               batch_index: int = 0) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Decodes this process's rows; returns (tokens [B_global, L], aux) as host arrays.

    Only ``encoder_input_tokens`` reach the decoder, and ``decoder_target_tokens`` too when
    the decode keywords ask for ``use_gold_lengths`` (the oracle lengths are read from them).
    """
    inputs = {'encoder_input_tokens': np.asarray(batch['encoder_input_tokens'], np.int32)}
    if self.gold_lengths and 'decoder_target_tokens' in batch:
      inputs['decoder_target_tokens'] = np.asarray(batch['decoder_target_tokens'], np.int32)
    global_batch = self.partitioner.shard_batch(inputs)
    key = jax.random.fold_in(jax.random.key(self.seed), batch_index)
    with self.partitioner.context():
      tokens, aux = self._fn(params, global_batch, key)
    return np.asarray(tokens), jax.tree_util.tree_map(np.asarray, aux)


@dataclasses.dataclass
class DecodedRow:
  """One decoded example: texts, every reference (may be empty) and the output ids."""
  source: str
  references: list[str]
  prediction: str
  tokens: list[int]

  @property
  def reference(self) -> str | None:
    return self.references[0] if self.references else None


def _local_rows(global_array: np.ndarray) -> np.ndarray:
  """This process's block of a replicated [B_global, ...] result."""
  per_process = global_array.shape[0] // jax.process_count()
  start = jax.process_index() * per_process
  return global_array[start:start + per_process]


def _gather(value: np.ndarray) -> np.ndarray:
  """Every process's rows of a per-process array, in process order."""
  if jax.process_count() == 1:
    return np.asarray(value)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return np.asarray(multihost_utils.process_allgather(np.asarray(value), tiled=True))


def decode_split(predictor: Predictor, params: Any, batches: Iterable[Mapping[str, np.ndarray]],
                 tokenizer: Any, max_examples: int | None = None,
                 all_processes: bool = True,
                 texts: list[Mapping[str, Any]] | None = None
                 ) -> tuple[list[DecodedRow], dict[str, float]]:
  """Decodes batches and detokenizes sources, references (when present) and predictions.

  Args:
    predictor: the jitted decoder.
    params: the parameters.
    batches: numpy batches of this process's rows; with ``texts`` an iterator with
      ``last_rows`` (`padir.data.arrays.ArrayBatchIterator`).
    tokenizer: a ``padir.data.vocab.Tokenizer``.
    max_examples: stop after this many examples (per process).
    all_processes: return every process's rows (the decoded array is replicated); otherwise
      only this process's.
    texts: per dataset row ``{'inputs': str, 'references': [str, ...]}`` (an export's
      ``text.jsonl``): sources and references are taken from it.

  Returns:
    (rows, stats): ``stats`` has ``decode_seconds`` (all batches, the first one's compilation
    included), ``num_examples``, ``examples_per_sec`` (over ``decode_seconds``), with two or
    more batches ``first_batch_seconds`` and ``steady_examples_per_sec`` (the batches after
    the first: the decoder's speed without compilation), ``repetition_rate`` (the share of
    output tokens equal to the one before them, `padir.analysis.repetition_rate`),
    ``mean_iterations`` when the decoder reports iterations, and ``repetition_before_collapse``
    and ``mean_repeats_removed`` when it merges adjacent repeats
    (``aux['repeats_removed']``, `padir.refine_decoding.RefineConfig.collapse_repeats`).
    Seconds are wall time of the decode calls only (not detokenization).
  """
  rows: list[DecodedRow] = []
  seconds = 0.0
  first_seconds, first_rows, num_batches = 0.0, 0, 0
  iterations = []
  repeats = np.zeros(3, np.int64)  # adjacent repeats, real tokens, repeats the decoder merged
  merges = False
  seen = 0
  for index, batch in enumerate(batches):
    if max_examples is not None and seen >= max_examples:
      break
    start = time.perf_counter()
    row_ids = getattr(batches, 'last_rows', None) if texts is not None else None
    row_ids = None if row_ids is None else np.array(row_ids)
    tokens, aux = predictor(params, batch, index)
    elapsed = time.perf_counter() - start
    seconds += elapsed
    num_batches += 1
    if all_processes:
      batch = {k: _gather(v) for k, v in batch.items()}
      row_ids = None if row_ids is None else _gather(row_ids)
    else:
      tokens = _local_rows(tokens)
      aux = {k: _local_rows(v) if np.ndim(v) else v for k, v in aux.items()}
    keep = _real_rows(batch)
    if 'iterations' in aux:
      iterations.extend(np.asarray(aux['iterations'])[keep].tolist())
    removed = aux.get('repeats_removed')
    merges = merges or removed is not None
    repeats += _repeat_counts(np.asarray(tokens)[keep],
                              None if removed is None else np.asarray(removed)[keep])
    targets = batch.get('decoder_target_tokens')
    for i in np.flatnonzero(keep):
      seen += 1
      out = tokens[i].tolist()
      text = texts[int(row_ids[i])] if row_ids is not None and row_ids[i] >= 0 else None
      if text is not None:
        source, references = text['inputs'], list(text['references'])
      else:
        source = tokenizer.decode(batch['encoder_input_tokens'][i])
        references = [tokenizer.decode(targets[i])] if targets is not None else []
      rows.append(DecodedRow(source=source, references=references,
                             prediction=tokenizer.decode(out), tokens=out))
    if num_batches == 1:
      first_seconds, first_rows = elapsed, len(rows)
  if max_examples is not None:
    rows = rows[:max_examples * (jax.process_count() if all_processes else 1)]
  stats = {'decode_seconds': seconds, 'num_examples': float(len(rows)),
           'examples_per_sec': len(rows) / seconds if seconds > 0 else 0.0}
  if num_batches > 1 and seconds > first_seconds:
    stats['first_batch_seconds'] = first_seconds
    stats['steady_examples_per_sec'] = (len(rows) - first_rows) / (seconds - first_seconds)
  if iterations:
    stats['mean_iterations'] = float(np.mean(iterations))
  if seen:
    stats['repetition_rate'] = float(repeats[0] / max(repeats[1], 1))
    if merges:
      stats['repetition_before_collapse'] = float(
          (repeats[0] + repeats[2]) / max(repeats[1] + repeats[2], 1))
      stats['mean_repeats_removed'] = float(repeats[2] / seen)
  return rows, stats


def _repeat_counts(tokens: np.ndarray, removed: np.ndarray | None) -> np.ndarray:
  """[3] int: adjacent repeats, real tokens and merged repeats of rows.

  Args:
    tokens: [N, L] output tokens.
    removed: [N] repeats the decoder merged away (``aux['repeats_removed']``), or None.
  """
  num_repeats, num_real = analysis.repetition_counts(tokens)  # [N], [N]
  merged = 0 if removed is None else int(removed.sum())
  return np.array([int(num_repeats.sum()), int(num_real.sum()), merged], np.int64)


def translation_scores(rows: list[DecodedRow], print_fn: Callable[[str], Any] | None = None
                       ) -> dict[str, float]:
  """Corpus BLEU and chrF of decoded rows against their references (sacrebleu)."""
  from padir.data import metrics as metrics_lib  # pylint: disable=g-import-not-at-top
  scored = [r for r in rows if r.references]
  if not scored:
    raise ValueError('No references to score against: the split has no decoder_target_tokens.')
  return metrics_lib.translation_metrics([r.references for r in scored],
                                         [r.prediction for r in scored], print_fn=print_fn)
