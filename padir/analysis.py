"""Error modes of a set of decodes (the paper's analysis): repetition, length, per iteration.

Everything here works on host numpy arrays of token ids, [N, L] for final outputs and
[T, N, L] for the per-iteration history that the refinement decoder returns on request:

* ``repetition_rate``: the fraction of real tokens equal to the token before them (adjacent
  duplicates, "stutter"), the error mode tied to PaDIR's product-form parallel updates
  (``repetition_counts``: the counts behind it, per row);
* ``length_stats``: predicted minus reference lengths (mean, mean absolute, exact, within 1);
* ``per_iteration``: repetition rate, and BLEU when references are given, after each iteration;
* ``iterations_histogram``: how many rows stopped after 1, 2, ... iterations.

``save_decodes`` / ``load_decodes`` store a set of decodes as one ``.npz`` file that
``padir analyze`` reads.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any, Callable, Sequence

import numpy as np

from padir import errors
from padir.special_ids import EOS_ID, FIRST_REAL_PIECE, PAD_ID


def real_token_mask(tokens: np.ndarray) -> np.ndarray:
  """[..., L] bool: positions before the first EOS that hold neither pad nor EOS."""
  tokens = np.asarray(tokens)
  after_eos = np.cumsum(tokens == EOS_ID, axis=-1) > 0
  return (~after_eos) & (tokens != PAD_ID)


def lengths(tokens: np.ndarray) -> np.ndarray:
  """[..., L] -> [...] number of real tokens (EOS and pad excluded)."""
  return real_token_mask(tokens).sum(axis=-1)


def repetition_counts(tokens: np.ndarray, removed: np.ndarray | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Per row: (tokens that repeat the one before them, real tokens), both [N] (or [...]).

  With ``removed`` (see `repetition_rate`) both count the repeats the decoder dropped.
  """
  tokens = np.asarray(tokens)
  real = real_token_mask(tokens)
  repeats = (tokens[..., 1:] == tokens[..., :-1]) & real[..., 1:] & real[..., :-1]
  repeats &= tokens[..., 1:] >= FIRST_REAL_PIECE
  extra = np.zeros(tokens.shape[:-1], np.int64) if removed is None else np.asarray(removed)
  return repeats.sum(-1) + extra, real.sum(-1) + extra


def repetition_rate(tokens: np.ndarray, per_row: bool = False,
                    removed: np.ndarray | None = None) -> float | np.ndarray:
  """Fraction of real tokens that repeat the token right before them.

  Args:
    tokens: [N, L] (or [..., L]) token ids; everything from the first EOS on is ignored.
    per_row: return one rate per row instead of the corpus rate.
    removed: [N] (or [...]) repeats a decoder dropped from each row
      (``RefineConfig.collapse_repeats``, ``aux['repeats_removed']``): the rate is then the
      one before they were dropped.
  """
  num_repeats, num_real = repetition_counts(tokens, removed)
  if per_row:
    return num_repeats / np.maximum(num_real, 1)
  return float(num_repeats.sum() / max(int(num_real.sum()), 1))


def looping_share(tokens: np.ndarray, n: int = 4) -> float:
  """Share of rows [N, L] whose real tokens hold some n-gram twice (a loop such as "the light
  of the darkness, and the light of the darkness"; 0.0 for no rows)."""
  tokens = np.asarray(tokens)
  real = real_token_mask(tokens)
  looping = []
  for row, keep in zip(tokens.reshape(-1, tokens.shape[-1]), real.reshape(-1, real.shape[-1])):
    ids = row[keep].tolist()
    grams = [tuple(ids[i:i + n]) for i in range(len(ids) - n + 1)]
    looping.append(len(grams) != len(set(grams)))
  return float(np.mean(looping)) if looping else 0.0


def length_stats(predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
  """Length error of predictions against references (both [N, L] token ids)."""
  diff = lengths(predicted).astype(np.int64) - lengths(reference).astype(np.int64)
  if diff.size == 0:
    raise ValueError('length_stats needs at least one row.')
  return {
      'mean_length_error': float(diff.mean()),
      'mean_abs_length_error': float(np.abs(diff).mean()),
      'exact_length': float((diff == 0).mean()),
      'length_within_1': float((np.abs(diff) <= 1).mean()),
  }


def iterations_histogram(iterations: np.ndarray) -> dict[int, int]:
  """{iterations used: number of rows}, sorted by iterations."""
  values, counts = np.unique(np.asarray(iterations), return_counts=True)
  return {int(v): int(c) for v, c in zip(values, counts)}


def per_iteration(history: np.ndarray,
                  decode_fn: Callable[[np.ndarray], list[str]] | None = None,
                  references: Sequence[Sequence[str]] | None = None) -> list[dict[str, float]]:
  """Repetition rate (and BLEU with references) of the canvas after every iteration.

  Args:
    history: [T, N, L] canvases after iterations 1..T (rows that stopped early repeat their
      final canvas).
    decode_fn: token rows -> detokenised strings; needed for BLEU.
    references: reference streams for BLEU (each a list of N strings), as sacrebleu expects.
  """
  history = np.asarray(history)
  if history.ndim != 3:
    raise ValueError(f'history must be [iterations, rows, length], got shape {history.shape}.')
  rows = []
  for t, canvas in enumerate(history):
    row = {'iteration': t + 1, 'repetition_rate': repetition_rate(canvas),
           'mean_length': float(lengths(canvas).mean())}
    if references is not None:
      if decode_fn is None:
        raise ValueError('BLEU per iteration needs decode_fn to detokenise the canvases.')
      import sacrebleu  # imported on use: only BLEU needs it
      row['bleu'] = float(sacrebleu.corpus_bleu(decode_fn(canvas), list(references)).score)
    rows.append(row)
  return rows


def save_decodes(path: str | os.PathLike[str], tokens: np.ndarray, *,
                 history: np.ndarray | None = None, iterations: np.ndarray | None = None,
                 reference_tokens: np.ndarray | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
  """Writes a set of decodes to ``path`` (.npz) for ``padir analyze``."""
  arrays = {'tokens': np.asarray(tokens, np.int32)}
  for name, value in (('history', history), ('iterations', iterations),
                      ('reference_tokens', reference_tokens)):
    if value is not None:
      arrays[name] = np.asarray(value, np.int32)
  arrays['metadata'] = np.asarray(json.dumps(metadata or {}))
  np.savez_compressed(path, **arrays)


def load_decodes(path: str | os.PathLike[str]) -> dict[str, Any]:
  """Reads what ``save_decodes`` wrote; metadata comes back as a dict."""
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path} does not exist; write decodes with '
                            'padir.analysis.save_decodes (padir infer --save_decodes=...).')
  with np.load(path, allow_pickle=False) as data:
    out = {k: data[k] for k in data.files}
  if 'tokens' not in out:
    raise ValueError(f'{path} has no "tokens" array; it was not written by save_decodes.')
  out['metadata'] = json.loads(str(out.get('metadata', '{}')))
  return out


def analyze(decodes: dict[str, Any]) -> dict[str, Any]:
  """All statistics that the stored arrays allow."""
  tokens = decodes['tokens']
  report: dict[str, Any] = {'rows': int(tokens.shape[0]),
                            'repetition_rate': repetition_rate(tokens),
                            'mean_length': float(lengths(tokens).mean())}
  if 'reference_tokens' in decodes:
    report.update(length_stats(tokens, decodes['reference_tokens']))
    report['reference_repetition_rate'] = repetition_rate(decodes['reference_tokens'])
  if 'iterations' in decodes:
    its = decodes['iterations']
    report['mean_iterations'] = float(np.mean(its))
    report['iterations_histogram'] = iterations_histogram(its)
  if 'history' in decodes:
    report['per_iteration'] = per_iteration(decodes['history'])
  return report


def format_report(report: dict[str, Any]) -> str:
  """A short markdown rendering of `analyze`'s output."""
  lines = [f'rows: {report["rows"]}',
           f'repetition rate: {report["repetition_rate"]:.4f}',
           f'mean length: {report["mean_length"]:.2f}']
  for key in ('reference_repetition_rate', 'mean_length_error', 'mean_abs_length_error',
              'exact_length', 'length_within_1', 'mean_iterations'):
    if key in report:
      lines.append(f'{key.replace("_", " ")}: {report[key]:.4f}')
  if 'iterations_histogram' in report:
    lines.append(f'iterations used: {report["iterations_histogram"]}')
  if 'per_iteration' in report:
    lines += ['', '| iteration | repetition rate | mean length |', '|---|---|---|']
    lines += [f'| {r["iteration"]} | {r["repetition_rate"]:.4f} | {r["mean_length"]:.2f} |'
              for r in report['per_iteration']]
  return '\n'.join(lines)


@errors.command('padir analyze')
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='padir analyze',
                                   description='Error modes of a set of decodes.')
  parser.add_argument('decodes', help='.npz written by padir.analysis.save_decodes')
  parser.add_argument('--json', default=None, help='also write the report as JSON here')
  args = parser.parse_args(argv)
  try:
    report = analyze(load_decodes(args.decodes))
  except (FileNotFoundError, ValueError) as e:
    print(f'padir analyze: {e}')
    return 2
  print(format_report(report))
  if args.json:
    with open(args.json, 'w', encoding='utf-8') as f:
      json.dump(report, f, indent=2)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
