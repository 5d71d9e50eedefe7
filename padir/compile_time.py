"""How long JAX spends compiling while a block of code runs.

A jitted function is traced, lowered to StableHLO and compiled by XLA (or loaded from the
persistent compilation cache) the first time it meets a new input shape; JAX reports each of
these steps through `jax.monitoring`. :class:`CompileTimer` listens to those reports for the
duration of a ``with`` block, so a job can tell its compilation apart from its real work:

  with CompileTimer() as timer:
    train(...)
  print(timer.summary())  # {'seconds': 41.3, 'programs': 9, 'cache_hits': 4}

Durations come from JAX's own timers, in the thread that compiles. Timers in one process share
the reports: nested or concurrent timers each count every compilation of their span.
"""

from __future__ import annotations

from typing import Any

from jax import monitoring

# jax._src.dispatch: tracing to a jaxpr, lowering it, and XLA's compilation (which includes a
# load from the persistent cache when the program is there).
TRACE_EVENT = '/jax/core/compile/jaxpr_trace_duration'
LOWER_EVENT = '/jax/core/compile/jaxpr_to_mlir_module_duration'
BACKEND_EVENT = '/jax/core/compile/backend_compile_duration'
_PHASES = {TRACE_EVENT: 'trace', LOWER_EVENT: 'lower', BACKEND_EVENT: 'backend'}
CACHE_HIT_EVENT = '/jax/compilation_cache/cache_hits'


class CompileTimer:
  """Seconds spent tracing, lowering and compiling inside a ``with`` block.

  Attributes:
    seconds: ``{'trace': s, 'lower': s, 'backend': s}`` summed over the block.
    programs: XLA compilations requested (one per new program or input shape), cache loads
      included.
    cache_hits: those the persistent compilation cache answered.
  """

  def __init__(self):
    self.seconds = {'trace': 0.0, 'lower': 0.0, 'backend': 0.0}
    self.programs = 0
    self.cache_hits = 0
    self._active = False

  def _on_duration(self, event: str, duration: float, **_: Any) -> None:
    phase = _PHASES.get(event)
    if phase is None:
      return
    self.seconds[phase] += float(duration)
    if phase == 'backend':
      self.programs += 1

  def _on_event(self, event: str, **_: Any) -> None:
    if event == CACHE_HIT_EVENT:
      self.cache_hits += 1

  def __enter__(self) -> 'CompileTimer':
    if self._active:
      raise RuntimeError('CompileTimer is already running; use a new one for a nested block.')
    monitoring.register_event_duration_secs_listener(self._on_duration)
    monitoring.register_event_listener(self._on_event)
    self._active = True
    return self

  def __exit__(self, *exc: Any) -> None:
    monitoring.unregister_event_duration_listener(self._on_duration)
    monitoring.unregister_event_listener(self._on_event)
    self._active = False

  def absorb(self, summary: dict[str, float | int]) -> None:
    """Adds another timer's `summary` (e.g. of a worker process) to this one's counts."""
    self.seconds['backend'] += float(summary['seconds'])
    self.programs += int(summary['programs'])
    self.cache_hits += int(summary['cache_hits'])

  @property
  def total(self) -> float:
    """All compilation seconds of the block (trace + lower + backend)."""
    return sum(self.seconds.values())

  def summary(self) -> dict[str, float | int]:
    """``{'seconds': total, 'programs': n, 'cache_hits': n}``, seconds rounded to 0.1."""
    return {'seconds': round(self.total, 1), 'programs': self.programs,
            'cache_hits': self.cache_hits}
