"""The train state and the jitted, sharded train and eval steps.

`Trainer` owns nothing but functions: it derives the state's shardings from the model's logical
axes (`padir.partitioning`), initialises the state directly into those shardings, and compiles

* ``train_step(state, batch) -> (state, metrics)``: ``jax.jit`` with in/out shardings and the
  state donated; the dropout / corruption key of step ``s`` is ``fold_in(key(seed), s)``, so a
  resumed run draws exactly what an uninterrupted one would; with ``num_microbatches > 1`` the
  batch is split and gradients are averaged over a ``lax.scan`` (microbatch ``i`` uses
  ``fold_in(step_key, i)``);
* ``eval_step(params, batch) -> metrics``: the model's ``eval_fn`` (no dropout, fixed key).

Metrics are scalars: the model's (loss, accuracy, num_tokens, ...) plus ``learning_rate``,
``grad_norm``, ``param_norm``, ``num_input_tokens`` and ``num_target_tokens`` (non-pad tokens
of the global batch).
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping, Sequence

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from padir import errors
from padir import hlo_stats
from padir import optimizers as optimizers_lib
from padir import partitioning as partitioning_lib

Array = jax.Array
Batch = Mapping[str, Array]
Metrics = dict[str, Array]

# Metrics that add up over microbatches and over logging windows (counts); the rest average.
SUMMED_METRICS = ('num_tokens', 'num_examples', 'weight_sum', 'num_input_tokens',
                  'num_target_tokens')


@flax.struct.dataclass
class TrainState:
  """Step, parameters and optimizer state (a pytree)."""
  step: Array  # int32 scalar: steps taken
  params: Any
  opt_state: Any


class NonFiniteLossError(errors.UserError, RuntimeError):
  """Training produced a NaN or Inf loss."""


def _combine(total: Metrics, new: Metrics) -> Metrics:
  return {k: total[k] + new[k] for k in total}


def _finish_microbatches(total: Metrics, num_microbatches: int) -> Metrics:
  return {k: v if k in SUMMED_METRICS else v / num_microbatches for k, v in total.items()}


class Trainer:
  """Builds and runs the sharded train / eval steps of a model."""

  def __init__(self,
               model: Any,
               optimizer: optimizers_lib.Optimizer,
               partitioner: partitioning_lib.Partitioner,
               input_shapes: Mapping[str, tuple[int, ...]],
               *,
               seed: int = 0,
               num_microbatches: int = 1):
    """Derives shardings and compiles nothing yet.

    Args:
      model: a padir model (``get_initial_variables``, ``get_logical_axes``, ``loss_fn``,
        ``eval_fn``).
      optimizer: `padir.optimizers.Optimizer`.
      partitioner: the mesh and rules.
      input_shapes: feature -> global batch shape ([B, L]) of the training batches.
      seed: seeds the parameter init and every step's key.
      num_microbatches: gradient accumulation: the batch is split into this many parts.

    Raises:
      ValueError: a batch size the mesh or the microbatches cannot split, or a parameter
        dimension a mesh axis does not divide (named).
    """
    if not isinstance(optimizer, optimizers_lib.Optimizer):
      raise ValueError(f'optimizer must be a padir.optimizers.Optimizer (e.g. '
                       f'@padir.optimizers.adafactor() in gin), got {type(optimizer).__name__}.')
    if not isinstance(num_microbatches, int) or num_microbatches < 1:
      raise ValueError(f'num_microbatches={num_microbatches!r} must be an integer >= 1.')
    self.model = model
    self.optimizer = optimizer
    self.tx = optimizer.tx
    self.partitioner = partitioner
    self.seed = int(seed)
    self.num_microbatches = num_microbatches
    self.input_shapes = {k: tuple(int(d) for d in v) for k, v in input_shapes.items()}
    batch_size = next(iter(self.input_shapes.values()))[0]
    partitioner.check_batch_size(batch_size)
    if batch_size % num_microbatches or (batch_size // num_microbatches) % \
        partitioner.batch_shards:
      raise ValueError(
          f'batch size {batch_size} must split into num_microbatches={num_microbatches} '
          f'microbatches that are multiples of data x fsdp = {partitioner.batch_shards}.')
    self.batch_size = batch_size
    init_shapes = {k: (partitioner.batch_shards,) + v[1:] for k, v in self.input_shapes.items()}
    self._init_shapes = init_shapes
    with partitioner.context():
      self.logical_axes = model.get_logical_axes(init_shapes)
    self.abstract_params = jax.eval_shape(
        lambda key: model.get_initial_variables(key, init_shapes).params, jax.random.key(0))
    self.param_shardings = partitioner.param_shardings(self.logical_axes, self.abstract_params)
    self.opt_shardings = partitioner.optimizer_shardings(self.tx, self.abstract_params,
                                                         self.param_shardings)
    self.state_shardings = TrainState(step=partitioner.replicated(),
                                      params=self.param_shardings,
                                      opt_state=self.opt_shardings)
    self._train_step = None
    self._narrow_steps: dict[tuple[tuple[int, ...], ...], Any] = {}
    self._eval_step = None
    self.compile_seconds: float | None = None
    self.train_step_flops: float | None = None

  # ------------------------------------------------------------------ state

  def abstract_state(self) -> TrainState:
    """ShapeDtypeStructs (with shardings) of the train state: restore targets."""
    abstract_opt = jax.eval_shape(self.tx.init, self.abstract_params)
    def attach(x, s):
      return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
    return TrainState(
        step=jax.ShapeDtypeStruct((), jnp.int32, sharding=self.partitioner.replicated()),
        params=jax.tree_util.tree_map(attach, self.abstract_params, self.param_shardings),
        opt_state=jax.tree_util.tree_map(attach, abstract_opt, self.opt_shardings))

  def init_state(self) -> TrainState:
    """A fresh state from ``seed``, created directly in its shardings."""
    def init(key):
      params = self.model.get_initial_variables(key, self._init_shapes).params
      return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                        opt_state=self.tx.init(params))
    init = jax.jit(init, out_shardings=self.state_shardings)
    with jax.set_mesh(self.partitioner.mesh):
      return init(jax.random.key(self.seed))

  def state_from(self, step: int, params: Any, opt_state: Any) -> TrainState:
    """A TrainState from restored parts (already in their shardings)."""
    step_array = jax.device_put(jnp.asarray(step, jnp.int32), self.partitioner.replicated())
    return TrainState(step=step_array, params=params, opt_state=opt_state)

  # ------------------------------------------------------------------ steps

  def _grads_and_metrics(self, params: Any, batch: Batch, key: Array) -> tuple[Any, Metrics]:
    grad_fn = jax.value_and_grad(self.model.loss_fn, has_aux=True)
    m = self.num_microbatches
    if m == 1:
      (_, metrics), grads = grad_fn(params, batch, key)
      return grads, dict(metrics)
    # Microbatch i holds rows i, i + m, i + 2m, ...: every microbatch stays spread over all
    # batch shards, so no data moves between devices.
    micro = {k: jnp.swapaxes(v.reshape((v.shape[0] // m, m) + v.shape[1:]), 0, 1)
             for k, v in batch.items()}  # [m, B/m, ...]
    sharding = self.partitioner.batch_sharding(2)

    def body(carry, xs):
      grads_sum, metrics_sum = carry
      index, mb = xs
      mb = {k: jax.lax.with_sharding_constraint(v, sharding) for k, v in mb.items()}
      (_, metrics), grads = grad_fn(params, mb, jax.random.fold_in(key, index))
      grads_sum = jax.tree_util.tree_map(jnp.add, grads_sum, grads)
      return (grads_sum, _combine(metrics_sum, dict(metrics))), None

    first = {k: v[0] for k, v in micro.items()}
    metric_shapes = jax.eval_shape(lambda: grad_fn(params, first, key)[0][1])
    zeros_m = {k: jnp.zeros(s.shape, s.dtype) for k, s in metric_shapes.items()}
    zeros_g = jax.tree_util.tree_map(jnp.zeros_like, params)
    (grads_sum, metrics_sum), _ = jax.lax.scan(body, (zeros_g, zeros_m),
                                               (jnp.arange(m), micro))
    grads = jax.tree_util.tree_map(lambda g: g / m, grads_sum)
    return grads, _finish_microbatches(metrics_sum, m)

  def _train_step_fn(self, state: TrainState, batch: Batch) -> tuple[TrainState, Metrics]:
    key = jax.random.fold_in(jax.random.key(self.seed), state.step)
    grads, metrics = self._grads_and_metrics(state.params, batch, key)
    updates, opt_state = self.tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics.update(
        learning_rate=jnp.asarray(self.optimizer.learning_rate(state.step), jnp.float32),
        grad_norm=optax.global_norm(grads),
        param_norm=optax.global_norm(params),
        num_input_tokens=jnp.sum(batch['encoder_input_tokens'] > 0).astype(jnp.float32),
        num_target_tokens=jnp.sum(batch['decoder_target_tokens'] > 0).astype(jnp.float32))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def _abstract_batch(self, shapes: Mapping[str, tuple[int, ...]] | None = None
                      ) -> dict[str, jax.ShapeDtypeStruct]:
    sharding = self.partitioner.batch_sharding(2)
    return {k: jax.ShapeDtypeStruct(v, jnp.int32, sharding=sharding)
            for k, v in (shapes or self.input_shapes).items()}

  def jitted_train_step(self, donate: bool = True) -> Any:
    """The ``jax.jit``-ed train step ``(state, batch) -> (state, metrics)``, not yet compiled.

    Args:
      donate: donate the input state's buffers (training); False keeps the state usable after
        the call, e.g. to profile one step several times (`padir.bench.ops.op_profile`). Call
        it inside ``self.partitioner.context()``.
    """
    return jax.jit(self._train_step_fn,
                   in_shardings=(self.state_shardings, self.partitioner.batch_sharding(2)),
                   out_shardings=(self.state_shardings, self.partitioner.replicated()),
                   donate_argnums=(0,) if donate else ())

  def _compile_for(self, shapes: Mapping[str, tuple[int, ...]] | None = None) -> Any:
    jitted = self.jitted_train_step()
    with self.partitioner.context():
      return jitted.lower(self.abstract_state(), self._abstract_batch(shapes)).compile()

  def compile(self, shapes: Mapping[str, Sequence[int]] | None = None) -> None:
    """Compiles the train step ahead of time (records seconds and the step's FLOPs).

    Args:
      shapes: feature -> global batch shape with narrower sequences (a length bucket);
        None: the full ``input_shapes``. Compiling every bucket before training keeps the
        compile pauses out of the step timings.
    """
    if shapes is not None:
      batch = {k: np.empty(tuple(v), np.int8) for k, v in shapes.items()}
      self.check_batch(batch, global_shapes=True)
      self._step_for(batch)
      return
    if self._train_step is not None:
      return
    start = time.perf_counter()
    compiled = self._compile_for()
    self.compile_seconds = time.perf_counter() - start
    self.train_step_flops = hlo_stats.flops(compiled)
    self._train_step = compiled

  @property
  def compiled_train_step(self) -> Any:
    """The ahead-of-time compiled train step (compiled on first use).

    Its ``memory_analysis()``, ``cost_analysis()`` and ``as_text()`` describe the per-device
    program (`padir.plan` reads them).
    """
    self.compile()
    return self._train_step

  @property
  def compiled_widths(self) -> list[dict[str, int]]:
    """Feature -> sequence width of every batch shape compiled so far (the full one first)."""
    keys = ([tuple(self.input_shapes.values())] if self._train_step is not None else []) + \
        list(self._narrow_steps)
    return [{k: shape[1] for k, shape in zip(self.input_shapes, key)} for key in keys]

  def check_batch(self, batch: Mapping[str, np.ndarray], global_shapes: bool = False) -> None:
    """Host-side check of a batch's features and shapes before it reaches a compiled step.

    Rows must number the compiled batch size; a sequence may be narrower than the compiled
    length (length-bucketed batches, `padir.datasets.DatasetConfig.length_buckets`): each
    narrower shape compiles a step of its own once.
    """
    for name, shape in self.input_shapes.items():
      if name not in batch:
        raise ValueError(f'The batch lacks feature {name!r} (has {sorted(batch)}).')
      expected = shape if global_shapes else (shape[0] // jax.process_count(),) + shape[1:]
      got = tuple(batch[name].shape)
      if len(got) != len(expected) or got[0] != expected[0] or \
          any(g < 1 or g > e for g, e in zip(got[1:], expected[1:])):
        raise ValueError(f'Feature {name!r} has shape {got}, expected {expected} (or a '
                         'narrower sequence); every batch must have the rows the step was '
                         'compiled for (drop_remainder=True) and at most its length.')

  def _step_for(self, batch: Mapping[str, Any]) -> Any:
    """The compiled step of this batch's shapes (a narrower one compiles once, on first use)."""
    self.compile()
    key = tuple(tuple(int(d) for d in batch[k].shape) for k in self.input_shapes)
    if key == tuple(self.input_shapes.values()):
      return self._train_step
    if key not in self._narrow_steps:
      start = time.perf_counter()
      self._narrow_steps[key] = self._compile_for(dict(zip(self.input_shapes, key)))
      self.compile_seconds = (self.compile_seconds or 0.0) + time.perf_counter() - start
    return self._narrow_steps[key]

  def train_step(self, state: TrainState, batch: Mapping[str, Any]) -> tuple[TrainState, Metrics]:
    """One optimizer step. ``batch``: this process's numpy rows or global jax arrays.

    The input state is donated: use only the returned one.
    """
    self.compile()
    if not all(isinstance(v, jax.Array) for v in batch.values()):
      self.check_batch(batch)
      batch = self.partitioner.shard_batch({k: batch[k] for k in self.input_shapes})
    else:
      self.check_batch(batch, global_shapes=True)
      batch = {k: batch[k] for k in self.input_shapes}
    step = self._step_for(batch)
    with self.partitioner.context():
      return step(state, batch)

  def eval_step(self, params: Any, batch: Mapping[str, Any]) -> Metrics:
    """The model's eval metrics on one batch (no dropout; fixed corruption key)."""
    if self._eval_step is None:
      def fn(params, batch):
        _, metrics = self.model.eval_fn(params, batch, jax.random.key(self.seed))
        return metrics
      self._eval_step = jax.jit(fn, in_shardings=(self.param_shardings,
                                                  self.partitioner.batch_sharding(2)),
                                out_shardings=self.partitioner.replicated())
    if not all(isinstance(v, jax.Array) for v in batch.values()):
      batch = self.partitioner.shard_batch(batch)
    with self.partitioner.context():
      return self._eval_step(params, dict(batch))


class MetricsAccumulator:
  """Collects per-step device metrics without blocking; reduces them on the host on demand."""

  def __init__(self):
    self._steps: list[tuple[int, Metrics]] = []

  def add(self, step: int, metrics: Metrics) -> None:
    """Records the metrics of ``step`` (the step number after the update)."""
    self._steps.append((step, metrics))

  def __len__(self) -> int:
    return len(self._steps)

  def reduce(self) -> tuple[dict[str, float], list[tuple[int, float]]]:
    """Fetches and clears the window: (reduced metrics, [(step, loss)]).

    Counts (`SUMMED_METRICS`) are summed, everything else averaged over the window's steps.
    """
    if not self._steps:
      return {}, []
    fetched = jax.device_get([m for _, m in self._steps])
    steps = [s for s, _ in self._steps]
    self._steps = []
    reduced = {}
    for key in fetched[0]:
      values = np.asarray([float(m[key]) for m in fetched], np.float64)
      reduced[key] = float(values.sum() if key in SUMMED_METRICS else values.mean())
    losses = [(s, float(m['loss'])) for s, m in zip(steps, fetched)]
    return reduced, losses


def check_finite(losses: list[tuple[int, float]]) -> None:
  """Raises NonFiniteLossError naming the first step whose loss is NaN or Inf."""
  for step, loss in losses:
    if not math.isfinite(loss):
      raise NonFiniteLossError(
          f'The training loss is {loss} at step {step}. Training stopped; no checkpoint was '
          'written after the last finite step. Lower the learning rate, enable gradient '
          'clipping (max_grad_norm) or check the data, then rerun: training resumes from the '
          'last good checkpoint.')
