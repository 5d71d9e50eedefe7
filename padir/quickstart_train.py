"""One training stage of the quickstart: its progress display and the record it keeps.

`padir.quickstart.Quickstart` parses a stage's gin config (its experiment, the quickstart's
bindings, its own macros), then `train_stage` trains it with `padir.train.train` and returns
what the stage's marker records: steps, the cooldown and warm-up it trained with, the final
metrics, the network's size and where it started from. `TrainDisplay` feeds the trainer's
step callback into a progress bar (`padir.quickstart_pairs` uses it for the pairs that train
side by side). A stage stopped by SIGTERM or Ctrl-C raises `Stopped`.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
from typing import Any, Callable, Mapping

import gin
import jax
import numpy as np

from padir import summaries

SIGTERM_EXIT_CODE = 143
_STEP_LINE = re.compile(r'^step (\d+)/(\d+) \| (.*)$')

# The gin parameter whose value each training stage's record keeps (the report lists it).
COOLDOWN_BINDING = 'padir.optimizers.linear_cooldown.cooldown_steps'
WARMUP_BINDING = 'padir.optimizers.linear_cooldown.warmup_steps'


class Stopped(RuntimeError):
  """A stage stopped on SIGTERM or Ctrl-C after saving its state."""

  def __init__(self, message: str, code: int = SIGTERM_EXIT_CODE):
    super().__init__(message)
    self.code = code


def bound_value(name: str) -> Any:
  """The value gin binds to ``name`` now (a macro reference resolved); None when unbound."""
  try:
    value = gin.query_parameter(name)
  except (ValueError, KeyError):
    return None
  if isinstance(value, gin.config.ConfigurableReference):
    return value.scoped_configurable_fn() if value.configurable.name.endswith('macro') else None
  return value


def _count_params(params: Any) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))


class TrainDisplay:
  """Shows a training stage: a progress bar fed by `padir.train`'s step callback.

  With ``progress`` the bar advances at every step and shows the logged loss and accuracies;
  the trainer's own step lines are then dropped (the bar has them) and its other lines are
  written above the bar. Without ``progress`` every line is printed as is.
  """

  _SHOWN = summaries.METRIC_LABELS[:3]  # loss, accuracy, length accuracy

  def __init__(self, bar: Any, progress: bool, say: Callable[[str], Any]):
    self._bar = bar
    self._progress = progress
    self._say = say

  def print(self, line: str) -> None:
    """The trainer's ``print_fn``."""
    if self._progress and _STEP_LINE.match(line):
      return
    self._say(line)

  def on_step(self, step: int, metrics: Mapping[str, float] | None) -> None:
    """The trainer's ``step_callback``."""
    if not self._progress:
      return
    self._bar.update(step - self._bar.n)
    if metrics:
      self._bar.set_postfix_str(' | '.join(
          f'{label} {metrics[key]:.4g}' for key, label in self._SHOWN if key in metrics),
                                refresh=False)


def latest_step(model_dir: str) -> int:
  """The newest checkpoint step in ``model_dir`` (0 when it has none)."""
  if not os.path.isdir(model_dir):
    return 0
  steps = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
  return max(steps, default=0)


def train_stage(run: Any, stage: str, model: Any, data_dir: str, steps: int) -> dict[str, Any]:
  """Trains ``stage`` of the `padir.quickstart.Quickstart` ``run`` with the gin config parsed
  for it (``model``: its ``MODEL``); returns the stage's record.

  Raises:
    Stopped: SIGTERM or Ctrl-C stopped the training (its checkpoint is saved; a rerun resumes).
  """
  from padir import train as train_lib  # pylint: disable=g-import-not-at-top
  model_dir = run.path(stage)
  with run.bar(steps, stage, 'step', initial=min(latest_step(model_dir), steps)) as bar:

    display = TrainDisplay(bar, run.progress, lambda line: run.say(bar, line))

    def on_step(step: int, metrics: Mapping[str, float] | None) -> None:
      display.on_step(step, metrics)
      if run.on_step is not None:
        run.on_step(stage, step, metrics)

    result = train_lib.train(print_fn=display.print, step_callback=on_step)
  if result.stopped_by_signal:
    name = 'Ctrl-C' if result.stop_signal == signal.SIGINT else 'SIGTERM'
    raise Stopped(f'{stage} stopped by {name} at step {result.step}; rerun to resume.',
                  128 + int(result.stop_signal or signal.SIGTERM))
  return {
      'step': result.step,
      'cooldown_steps': bound_value(COOLDOWN_BINDING),
      'warmup_steps': bound_value(WARMUP_BINDING) or 0,
      'train_metrics': result.train_metrics,
      'eval_metrics': result.eval_metrics,
      'params': _count_params(result.state.params),
      'model': type(model).__name__,
      'network': {k: v for k, v in dataclasses.asdict(model.network_config).items()
                  if k in ('emb_dim', 'num_heads', 'head_dim', 'mlp_dim',
                           'num_encoder_layers', 'num_decoder_layers', 'dropout_rate',
                           'positional_attention', 'vocab_size', 'max_target_length')},
      'data': data_dir,
      'init_from': run.init_dir(stage),
  }
