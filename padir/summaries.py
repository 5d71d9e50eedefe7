"""Where training metrics go: a JSONL file, TensorBoard and a console progress line.

Only process 0 writes. ``MODEL_DIR/metrics.jsonl`` gets one JSON object per record::

  {"step": 200, "split": "train", "time": 1712.3, "loss": 3.2, "steps_per_sec": 4.1, ...}

TensorBoard event files go to ``MODEL_DIR/tensorboard/<split>/`` through ``tensorboardX`` when it
is installed (``pip install tensorboardX``); without it the JSONL file is the record and a note
says so once.
"""

from __future__ import annotations

import datetime
import json
import math
import os
import time
from typing import Any, Callable, Mapping

import jax


def format_duration(seconds: float) -> str:
  """'1h02m', '3m05s', '12s'."""
  if not math.isfinite(seconds) or seconds < 0:
    return '?'
  seconds = int(round(seconds))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f'{hours}h{minutes:02d}m'
  if minutes:
    return f'{minutes}m{secs:02d}s'
  return f'{secs}s'


def _format_value(value: float) -> str:
  if value == 0 or 1e-3 <= abs(value) < 1e5:
    return f'{value:.4g}'
  return f'{value:.3e}'


def drop_records_after(path: str, step: int) -> int:
  """Removes the records of steps after ``step`` from a metrics JSONL file (atomically).

  A resumed run redoes the steps after its checkpoint; their old records would appear twice.
  Unparsable lines (a torn last line of a killed run) are dropped too.

  Returns:
    The number of lines removed.
  """
  if not os.path.isfile(path):
    return 0
  kept, dropped = [], 0
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        keep = int(json.loads(line)['step']) <= step
      except (ValueError, KeyError, TypeError):
        keep = False
      if keep:
        kept.append(line if line.endswith('\n') else line + '\n')
      else:
        dropped += 1
  if dropped:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.writelines(kept)
    os.replace(tmp, path)
  return dropped


def read_records(model_dir: str, split: str | None = None) -> list[dict[str, Any]]:
  """The records of ``MODEL_DIR/metrics.jsonl`` in file order (an empty list without one).

  Args:
    model_dir: the training run's directory.
    split: keep only the records of this split (``'train'``, ``'eval'``, ...); None keeps all.

  Returns:
    One dict per parsable line; a torn last line of a killed run is skipped.
  """
  path = os.path.join(model_dir, 'metrics.jsonl')
  if not os.path.isfile(path):
    return []
  records = []
  with open(path, encoding='utf-8') as f:
    for line in f:
      try:
        record = json.loads(line)
      except ValueError:
        continue
      if isinstance(record, dict) and (split is None or record.get('split') == split):
        records.append(record)
  return records


def peak_learning_rate(model_dir: str) -> float | None:
  """The highest learning rate logged by a run's training records (None when none logged)."""
  rates = [float(r['learning_rate']) for r in read_records(model_dir, 'train')
           if isinstance(r.get('learning_rate'), (int, float))]
  return max(rates) if rates else None


class MetricWriter:
  """JSONL + optional TensorBoard writer (a no-op on processes other than 0).

  Args:
    model_dir: where ``metrics.jsonl`` and ``tensorboard/`` go.
    tensorboard: also write TensorBoard events (needs tensorboardX).
    print_fn: console output (a note when tensorboardX is missing).
    start_step: the step training starts (or resumes) from; records of later steps left by an
      interrupted run are removed from ``metrics.jsonl`` and purged from TensorBoard.
  """

  def __init__(self, model_dir: str, tensorboard: bool = True, print_fn: Callable = print,
               start_step: int | None = None):
    self._enabled = jax.process_index() == 0
    self._model_dir = model_dir
    self._jsonl = None
    self._tb: dict[str, Any] = {}
    self._tb_cls = None
    self._print = print_fn
    self._purge_step = None if start_step is None else int(start_step) + 1
    if not self._enabled:
      return
    os.makedirs(model_dir, exist_ok=True)
    if start_step is not None:
      drop_records_after(os.path.join(model_dir, 'metrics.jsonl'), int(start_step))
    self._jsonl = open(os.path.join(model_dir, 'metrics.jsonl'), 'a', encoding='utf-8')
    if tensorboard:
      try:
        from tensorboardX import SummaryWriter  # pylint: disable=g-import-not-at-top
        self._tb_cls = SummaryWriter
      except ImportError:
        self._print('TensorBoard summaries are off: install tensorboardX to get them '
                    '(metrics.jsonl has every number).')

  def _writer(self, split: str):
    if self._tb_cls is None:
      return None
    if split not in self._tb:
      self._tb[split] = self._tb_cls(os.path.join(self._model_dir, 'tensorboard', split),
                                     purge_step=self._purge_step)
    return self._tb[split]

  def write_scalars(self, step: int, split: str, scalars: Mapping[str, float]) -> None:
    if not self._enabled:
      return
    record = {'step': int(step), 'split': split,
              'time': datetime.datetime.now(datetime.timezone.utc).timestamp()}
    record.update({k: float(v) for k, v in scalars.items()})
    self._jsonl.write(json.dumps(record, sort_keys=True) + '\n')
    self._jsonl.flush()
    writer = self._writer(split)
    if writer is not None:
      for key, value in scalars.items():
        writer.add_scalar(key, float(value), int(step))
      writer.flush()

  def write_text(self, step: int, split: str, tag: str, text: str) -> None:
    """Text (e.g. the gin config or sample translations) to TensorBoard."""
    writer = self._writer(split) if self._enabled else None
    if writer is not None:
      writer.add_text(tag, text, int(step))
      writer.flush()

  def close(self) -> None:
    if self._jsonl is not None:
      self._jsonl.close()
      self._jsonl = None
    for writer in self._tb.values():
      writer.close()
    self._tb = {}


# Training metrics shown in console lines and progress bars, with their short labels; the
# first three are the quality metrics (the rest: optimizer state).
METRIC_LABELS = (('loss', 'loss'), ('accuracy', 'acc'), ('length_accuracy', 'len_acc'),
                 ('learning_rate', 'lr'), ('grad_norm', 'gnorm'))


class Progress:
  """Throughput and ETA between log lines: steps/s, tokens/s, seconds per step."""

  def __init__(self, start_step: int, total_steps: int, clock: Callable[[], float] = time.time):
    self._clock = clock
    self._total = total_steps
    self._last_step = start_step
    self._last_time = clock()
    self._paused = 0.0

  def pause(self, seconds: float) -> None:
    """Excludes time spent outside training (eval, checkpoint waits) from the next window."""
    self._paused += seconds

  def window(self, step: int, num_tokens: float) -> dict[str, float]:
    """Rates over the steps since the previous call."""
    now = self._clock()
    elapsed = max(now - self._last_time - self._paused, 1e-9)
    steps = step - self._last_step
    rates = {
        'steps_per_sec': steps / elapsed,
        'tokens_per_sec': num_tokens / elapsed,
        'seconds_per_step': elapsed / max(steps, 1),
    }
    rates['eta_seconds'] = (self._total - step) / max(rates['steps_per_sec'], 1e-9)
    self._last_step, self._last_time, self._paused = step, now, 0.0
    return rates

  def line(self, step: int, metrics: Mapping[str, float], rates: Mapping[str, float]) -> str:
    """'step 200/1000 | loss 3.21 | acc 0.41 | lr 1.0e-02 | 4.1 steps/s | 12.3k tok/s | ETA 3m'."""
    parts = [f'step {step}/{self._total}']
    for key, label in METRIC_LABELS:
      if key in metrics:
        parts.append(f'{label} {_format_value(metrics[key])}')
    parts.append(f'{rates["steps_per_sec"]:.2f} steps/s')
    tokens = rates['tokens_per_sec']
    parts.append(f'{tokens / 1000:.1f}k tok/s' if tokens >= 1000 else f'{tokens:.0f} tok/s')
    parts.append(f'ETA {format_duration(rates["eta_seconds"])}')
    return ' | '.join(parts)
