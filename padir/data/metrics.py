"""Translation postprocessing and metrics: sacrebleu corpus BLEU and chrF, multi-reference.

TensorFlow-free (sacrebleu only). The functions follow seqio's calling conventions, so a task can
use them as ``postprocess_fn`` and ``metric_fns``, and padir's own evaluation can call them on
plain lists.

Every score is printed once with its sacrebleu signature (tokeniser, casing, smoothing, number of
references, version) so a reported number can be reproduced.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

REFERENCES = 'references'  # per-example feature with every reference text of a target


def _text(value: Any) -> str:
  if isinstance(value, bytes):
    return value.decode('utf-8')
  return str(value)


def postprocess_translation(output_or_target: Any,
                            example: Mapping[str, Any] | None = None,
                            is_target: bool = False) -> str | list[str]:
  """seqio postprocess_fn: decoded text, stripped; for targets, every reference.

  Args:
    output_or_target: a decoded model output or target (str or UTF-8 bytes).
    example: the task example; when it holds a ``references`` feature and ``is_target`` is
      set, those references are returned instead of the single target.
    is_target: whether ``output_or_target`` is a target.

  Returns:
    A string for outputs; a list of reference strings for targets with references.
  """
  if is_target and example is not None and REFERENCES in example:
    return [_text(r).strip() for r in example[REFERENCES]]
  return _text(output_or_target).strip()


def _reference_streams(targets: Sequence[str | Sequence[str]]) -> list[list[str | None]]:
  """Per-example references -> sacrebleu's per-reference streams (None fills shorter lists)."""
  per_example = [[t] if isinstance(t, (str, bytes)) else list(t) for t in targets]
  if any(not refs for refs in per_example):
    raise ValueError('Every example needs at least one reference.')
  width = max(len(refs) for refs in per_example)
  return [[_text(refs[k]) if k < len(refs) else None for refs in per_example]
          for k in range(width)]


def translation_metrics(targets: Sequence[str | Sequence[str]],
                        predictions: Sequence[str],
                        *,
                        print_fn: Callable[[str], Any] | None = print) -> dict[str, float]:
  """Corpus BLEU and chrF (sacrebleu defaults), with one or several references per example.

  Args:
    targets: per example, a reference string or a list of references (counts may differ).
    predictions: per example, the system output.
    print_fn: receives one line per metric with its score and sacrebleu signature; None is
      silent.

  Returns:
    ``{'bleu': ..., 'chrf': ...}`` on sacrebleu's 0-100 scale.

  Usable as a seqio metric_fn as it is (seqio reads only the positional parameters).
  """
  import sacrebleu  # pylint: disable=g-import-not-at-top

  if len(targets) != len(predictions):
    raise ValueError(f'{len(targets)} targets but {len(predictions)} predictions.')
  if not predictions:
    raise ValueError('No predictions to score.')
  hyps = [_text(p) for p in predictions]
  refs = _reference_streams(targets)
  scores = {}
  for name, metric in (('bleu', sacrebleu.metrics.BLEU()), ('chrf', sacrebleu.metrics.CHRF())):
    result = metric.corpus_score(hyps, refs)
    scores[name] = float(result.score)
    if print_fn is not None:
      print_fn(f'{result}  [signature {metric.get_signature()}]')
  return scores

