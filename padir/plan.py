"""Pod-scale plans, proven by compilation: memory, FLOPs and collectives of the real steps.

For a T5.1.1 preset (`PlanSpec`; `padir.plan_cli` also reads gin experiments), a global
batch, feature lengths and a mesh (``data,fsdp,tensor``, one entry may be -1, or auto), the plan
lowers and compiles on N simulated CPU devices, from abstract shapes only (``jax.eval_shape`` /
``ShapeDtypeStruct``; no parameter is allocated):

* the real train step: `padir.trainer.Trainer` with its shardings from `padir.partitioning`,
  the model's loss (PaDIR with its unrolled stages, or AR), Adafactor, the state donated;
* the decode step: ``predict_batch_with_aux`` of the model (PaDIR refinement decoding, AR
  greedy), parameters in the same shardings, rows over the batch axes.

It reports per device: parameter and optimizer-state bytes (from the shardings), the compiled
program's arguments / temporaries / peak (XLA's buffer assignment, `padir.hlo_stats`), FLOPs
per step, and the collectives of the partitioned program; compares the peak with a device's
memory (`DEVICES`) and gives the largest global batch that fits, from a linear fit of the peak
over two compiled batch sizes. The auto mesh takes the smallest tensor-parallel degree, then
the smallest FSDP degree, that fits; data parallel for the rest.

The numbers are XLA:CPU's: same partitioning and same collectives as on an accelerator, but
TPU and GPU compilers fuse, schedule and lay out buffers differently, so temporaries there
differ (bfloat16 activations may be kept in float32 by the CPU compiler). Treat the peak as an
estimate with a margin (``headroom``), the state bytes and the collectives as exact.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from padir import hlo_stats

GIB = 1024**3
# Per-device memory in GiB (HBM per chip or GPU).
DEVICES = {'v4': 32.0, 'v5e': 16.0, 'v5p': 95.0, 'h100': 80.0, 'h200': 141.0}
# Named slices and clusters: (device, number of devices).
TARGETS = {'v4-32': ('v4', 32), 'v5e-64': ('v5e', 64), 'v5e-256': ('v5e', 256),
           '8xh100': ('h100', 8), 'v5p-128': ('v5p', 128), '8xh200': ('h200', 8)}
OBJECTIVES = ('padir', 'ar')


@dataclasses.dataclass
class PlanSpec:
  """What to plan. Validated by :meth:`validate`.

  Attributes:
    size: T5.1.1 preset (tiny, small, base, large, xl).
    objective: 'padir' (bidirectional decoder, ``stages`` unrolled) or 'ar' (causal).
    stages: unrolled PaDIR training stages.
    batch_size: global training batch.
    input_length, target_length: feature lengths.
    vocab_size: embedding rows (32,128 for a 32k SentencePiece vocabulary + 100 extra ids).
    dtype: activation dtype ('bfloat16' or 'float32'); parameters stay float32.
    scan_layers, remat_policy: the T5Config options of the same name.
    num_devices: devices of the mesh.
    mesh: (data, fsdp, tensor), one entry may be -1; None = auto.
    device: a key of `DEVICES` (for the memory comparison) or a free name.
    device_memory_gib: memory per device (default: the device's).
    headroom: fits when peak <= headroom x device memory.
    decode_batch_size: global decode batch (0: do not compile the decode step).
    decode_iterations: refinement iterations of the PaDIR decode step.
    largest_batch: also compile a second batch size and fit the largest batch that fits.
    train: compile the train step (False: only the decode step, on an explicit mesh).
    num_microbatches: gradient accumulation steps of the train step (``NUM_MICROBATCHES``).
    network_overrides: more T5Config fields (e.g. ``num_encoder_layers``; tests shrink models).
    model_overrides: more keyword arguments of the model class (e.g. PaDIR's
      ``joint_stage_gradients``).
  """
  size: str = 'base'
  objective: str = 'padir'
  stages: int = 2
  batch_size: int = 512
  input_length: int = 128
  target_length: int = 128
  vocab_size: int = 32128
  dtype: str = 'bfloat16'
  scan_layers: bool = False
  remat_policy: str = 'none'
  num_devices: int = 8
  mesh: tuple[int, int, int] | None = None
  device: str = 'h100'
  device_memory_gib: float | None = None
  headroom: float = 0.9
  decode_batch_size: int = 0
  decode_iterations: int = 4
  largest_batch: bool = True
  train: bool = True
  num_microbatches: int = 1
  network_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
  model_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)

  def validate(self) -> None:
    """Raises ValueError naming the bad field."""
    from padir.network import _PRESETS  # pylint: disable=g-import-not-at-top
    if self.size not in _PRESETS:
      raise ValueError(f'Unknown size {self.size!r}; choose from {sorted(_PRESETS)}.')
    if self.objective not in OBJECTIVES:
      raise ValueError(f'Unknown objective {self.objective!r}; choose from {OBJECTIVES}.')
    for name in ('stages', 'batch_size', 'input_length', 'target_length', 'vocab_size',
                 'num_devices', 'decode_iterations', 'num_microbatches'):
      value = getattr(self, name)
      if not isinstance(value, int) or value < 1:
        raise ValueError(f'{name}={value!r} must be a positive integer.')
    if self.decode_batch_size < 0:
      raise ValueError(f'decode_batch_size={self.decode_batch_size} must be >= 0.')
    if self.mesh is not None:
      from padir import partitioning  # pylint: disable=g-import-not-at-top
      partitioning.resolve_mesh_shape(self.mesh, self.num_devices)
    if self.device_memory_gib is None and self.device not in DEVICES:
      raise ValueError(f'Unknown device {self.device!r} ({sorted(DEVICES)}); give its memory '
                       'with device_memory_gib (--device_memory_gib).')
    if not 0 < self.headroom <= 1:
      raise ValueError(f'headroom={self.headroom} must be in (0, 1].')
    if not self.train and (self.mesh is None or not self.decode_batch_size):
      raise ValueError('Planning only the decode step (train=False) needs an explicit mesh and '
                       'decode_batch_size > 0.')

  @property
  def memory_bytes(self) -> int:
    gib = self.device_memory_gib if self.device_memory_gib is not None else DEVICES[self.device]
    return int(gib * GIB)


@dataclasses.dataclass
class StepPlan:
  """One compiled step on one mesh; byte counts are per device."""
  mesh: tuple[int, int, int]
  batch_size: int
  params_bytes: int
  opt_state_bytes: int
  memory: hlo_stats.MemoryStats
  flops: float | None
  collectives: dict[str, hlo_stats.CollectiveStats]
  compile_seconds: float
  matmul_flops: float = 0.0

  @property
  def peak(self) -> int:
    return self.memory.peak

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out['peak_bytes'] = self.peak
    return out


def build_model(spec: PlanSpec) -> Any:
  """The padir model of a spec, as ``padir.builders.build_model`` makes it from gin."""
  from padir import builders, models  # pylint: disable=g-import-not-at-top
  cls = models.PadirModel if spec.objective == 'padir' else models.EncoderDecoderModel
  kwargs = {'num_train_stages': spec.stages} if spec.objective == 'padir' else {}
  kwargs.update(spec.model_overrides)
  network = builders.network_config(spec.size, vocab_size=spec.vocab_size, dtype=spec.dtype,
                                    scan_layers=spec.scan_layers,
                                    remat_policy=spec.remat_policy,
                                    **spec.network_overrides)
  # 'byte' needs no file; vocab_size sets the embedding rows of the real vocabulary.
  return builders.build_model(cls, vocabulary='byte', network=network, model_kwargs=kwargs,
                              task_feature_lengths={'inputs': spec.input_length,
                                                    'targets': spec.target_length})


def _devices(num_devices: int) -> list[Any]:
  devices = jax.devices()
  if len(devices) < num_devices:
    raise ValueError(f'The plan needs {num_devices} devices but JAX has {len(devices)}; set '
                     f'XLA_FLAGS=--xla_force_host_platform_device_count={num_devices} before '
                     'JAX starts (the padir plan command does this itself).')
  return devices[:num_devices]


def _shard_bytes(tree: Any, shardings: Any) -> int:
  """Bytes one device holds of a tree of ShapeDtypeStructs under NamedShardings."""
  leaves = jax.tree_util.tree_leaves(tree)
  specs = jax.tree_util.tree_leaves(shardings)
  total = 0
  for leaf, sharding in zip(leaves, specs):
    shape = sharding.shard_shape(tuple(leaf.shape))
    total += math.prod(shape) * jnp.dtype(leaf.dtype).itemsize
  return total


def _input_shapes(spec: PlanSpec, batch_size: int) -> dict[str, tuple[int, int]]:
  return {'encoder_input_tokens': (batch_size, spec.input_length),
          'decoder_target_tokens': (batch_size, spec.target_length),
          'decoder_loss_weights': (batch_size, spec.target_length)}


def make_trainer(model: Any, spec: PlanSpec, mesh: Sequence[int], batch_size: int) -> Any:
  """A `padir.trainer.Trainer` on the first ``num_devices`` devices (nothing compiled yet)."""
  from padir import optimizers, partitioning, trainer  # pylint: disable=g-import-not-at-top
  partitioner = partitioning.Partitioner(tuple(mesh), devices=_devices(spec.num_devices))
  return trainer.Trainer(model, optimizers.adafactor(), partitioner,
                         _input_shapes(spec, batch_size),
                         num_microbatches=spec.num_microbatches)


def state_bytes(trainer: Any) -> tuple[int, int]:
  """(parameter bytes, optimizer-state bytes) per device, from the trainer's shardings."""
  abstract_opt = jax.eval_shape(trainer.tx.init, trainer.abstract_params)
  return (_shard_bytes(trainer.abstract_params, trainer.param_shardings),
          _shard_bytes(abstract_opt, trainer.opt_shardings))


def plan_train_step(model: Any, spec: PlanSpec, mesh: Sequence[int],
                    batch_size: int | None = None) -> StepPlan:
  """Compiles the real train step abstractly and reads its per-device numbers."""
  batch_size = spec.batch_size if batch_size is None else batch_size
  return plan_trainer(make_trainer(model, spec, mesh, batch_size))


def plan_trainer(trainer: Any) -> StepPlan:
  """Compiles a trainer's step (if not yet) and reads its per-device numbers."""
  params_bytes, opt_bytes = state_bytes(trainer)
  start = time.perf_counter()
  compiled = trainer.compiled_train_step
  seconds = time.perf_counter() - start
  shape = tuple(trainer.partitioner.mesh.shape[a] for a in ('data', 'fsdp', 'tensor'))
  text = compiled.as_text()
  return StepPlan(shape, trainer.batch_size, params_bytes, opt_bytes,
                  hlo_stats.memory_stats(compiled), hlo_stats.flops(compiled),
                  hlo_stats.collectives(text), seconds, hlo_stats.matmul_flops(text))


def plan_decode_step(model: Any, spec: PlanSpec, mesh: Sequence[int]) -> StepPlan:
  """Compiles the model's ``predict_batch_with_aux`` on the mesh (params as in training)."""
  from padir import partitioning  # pylint: disable=g-import-not-at-top
  partitioner = partitioning.Partitioner(tuple(mesh), devices=_devices(spec.num_devices))
  batch = spec.decode_batch_size
  partitioner.check_batch_size(batch, 'decode_batch_size')
  init_shapes = _input_shapes(spec, partitioner.batch_shards)
  with partitioner.context():
    logical = model.get_logical_axes(init_shapes)
  abstract_params = jax.eval_shape(
      lambda key: model.get_initial_variables(key, init_shapes).params, jax.random.key(0))
  param_shardings = partitioner.param_shardings(logical, abstract_params)
  kwargs = ({'num_iterations': spec.decode_iterations} if spec.objective == 'padir'
            else {'method': 'greedy'})

  def decode(params, tokens, rng):  # tokens [B, L_in] -> (outputs [B, L], aux)
    return model.predict_batch_with_aux(params, {'encoder_input_tokens': tokens}, rng,
                                        **kwargs)

  rows = partitioner.batch_sharding(2)
  jitted = jax.jit(decode, in_shardings=(param_shardings, rows, partitioner.replicated()))
  params = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_params,
      param_shardings)
  tokens = jax.ShapeDtypeStruct((batch, spec.input_length), jnp.int32, sharding=rows)
  key = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=partitioner.replicated())
  start = time.perf_counter()
  with partitioner.context():
    compiled = jitted.lower(params, tokens, key).compile()
  seconds = time.perf_counter() - start
  shape = tuple(partitioner.mesh.shape[a] for a in ('data', 'fsdp', 'tensor'))
  text = compiled.as_text()
  return StepPlan(shape, batch, _shard_bytes(abstract_params, param_shardings), 0,
                  hlo_stats.memory_stats(compiled), hlo_stats.flops(compiled),
                  hlo_stats.collectives(text), seconds, hlo_stats.matmul_flops(text))


# ---------------------------------------------------------------------------- auto mesh


def _divisors(n: int) -> list[int]:
  return [d for d in range(1, n + 1) if n % d == 0]


def mesh_candidates(spec: PlanSpec, model: Any) -> list[tuple[int, int, int]]:
  """Meshes in auto order: tensor degree ascending, then FSDP degree ascending.

  Only meshes whose axes divide the sharded dimensions (tensor: heads, MLP, vocabulary; fsdp:
  the embedding) and the batch (data x fsdp) are listed.
  """
  cfg = model.network_config
  out = []
  for tensor in _divisors(spec.num_devices):
    if any(dim % tensor for dim in (cfg.num_heads, cfg.mlp_dim, cfg.vocab_size)):
      continue
    rest = spec.num_devices // tensor
    if spec.batch_size % (rest * spec.num_microbatches):
      continue
    for fsdp in _divisors(rest):
      if cfg.emb_dim % fsdp:
        continue
      out.append((rest // fsdp, fsdp, tensor))
  return out


def auto_mesh(model: Any, spec: PlanSpec, log=print) -> tuple[StepPlan, list[dict[str, Any]]]:
  """The first candidate mesh whose compiled train step fits (or the smallest peak seen).

  A candidate whose parameters + gradients + optimizer state alone exceed the budget is
  skipped without compiling.

  Returns:
    (the chosen plan, one record per candidate: mesh, state bytes, peak or why skipped).
  """
  budget = spec.headroom * spec.memory_bytes
  tried: list[dict[str, Any]] = []
  best = None
  for mesh in mesh_candidates(spec, model):
    trainer = make_trainer(model, spec, mesh, spec.batch_size)
    params_bytes, opt_bytes = state_bytes(trainer)
    lower_bound = 2 * params_bytes + opt_bytes  # params, their gradients, optimizer state
    record = {'mesh': list(mesh), 'state_bytes': params_bytes + opt_bytes}
    if lower_bound > budget:
      record['skipped'] = 'parameters + gradients + optimizer state exceed the budget'
      tried.append(record)
      continue
    log(f'auto: compiling mesh {mesh} ...')
    plan = plan_train_step(model, spec, mesh)
    record['peak_bytes'] = plan.peak
    tried.append(record)
    if best is None or plan.peak < best.peak:
      best = plan
    if plan.peak <= budget:
      return plan, tried
  if best is None:
    raise ValueError(f'No mesh of {spec.num_devices} devices holds the {spec.size} '
                     f'{spec.objective} state in {spec.memory_bytes / GIB:.0f} GiB per device.')
  return best, tried


# ---------------------------------------------------------------------------- largest batch


def largest_batch(a: StepPlan, b: StepPlan, budget: float, multiple: int) -> int:
  """The largest global batch (a multiple of ``multiple``) whose peak fits ``budget``.

  The peak is fitted as ``fixed + per_example x batch`` through two compiled batch sizes.
  Returns 0 when even ``multiple`` examples do not fit.
  """
  if a.batch_size == b.batch_size:
    raise ValueError('largest_batch needs two different compiled batch sizes.')
  slope = (b.peak - a.peak) / (b.batch_size - a.batch_size)
  fixed = a.peak - slope * a.batch_size
  if slope <= 0:
    return 0 if fixed > budget else -1  # -1: not limited by memory in this range
  if fixed + slope * multiple > budget:
    return 0
  best = int((budget - fixed) // slope)
  return max(0, best // multiple * multiple)


def second_batch(batch_size: int, shards: int) -> int:
  """The other batch size of the fit: half the batch, or double it when half does not split.

  ``shards``: what the batch must be a multiple of (data x fsdp x microbatches).
  """
  half = batch_size // 2
  return half if half >= shards and half % shards == 0 else 2 * batch_size


# ---------------------------------------------------------------------------- the plan


def gin_binding(mesh: Sequence[int]) -> str:
  """The flag that selects ``mesh`` for padir.train."""
  return f'--gin.padir.partitioning.Partitioner.mesh_shape="({", ".join(map(str, mesh))})"'


def run_plan(spec: PlanSpec, log=print) -> dict[str, Any]:
  """Compiles what ``spec`` asks for and returns the JSON-ready plan."""
  spec.validate()
  model = build_model(spec)
  params = jax.eval_shape(
      lambda key: model.get_initial_variables(key, _input_shapes(spec, 1)).params,
      jax.random.key(0))
  num_params = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(params))
  budget = spec.headroom * spec.memory_bytes
  out: dict[str, Any] = {'spec': dataclasses.asdict(spec), 'num_params': num_params,
                         'memory_bytes': spec.memory_bytes, 'budget_bytes': int(budget),
                         'jax_version': jax.__version__}
  if not spec.train:
    decode = plan_decode_step(model, spec, spec.mesh)
    out['decode'] = decode.to_json()
    out['decode_fits'] = decode.peak <= budget
    return out
  if spec.mesh is None:
    train, tried = auto_mesh(model, spec, log)
    out['auto_candidates'] = tried
  else:
    train = plan_train_step(model, spec, spec.mesh)
  log(f'train step on mesh {train.mesh}: peak {train.peak / GIB:.2f} GiB per device '
      f'({train.compile_seconds:.0f} s to compile)')
  out['train'] = train.to_json()
  out['fits'] = train.peak <= budget
  out['gin_binding'] = gin_binding(train.mesh)
  if spec.largest_batch:
    shards = train.mesh[0] * train.mesh[1] * spec.num_microbatches
    other = plan_train_step(model, spec, train.mesh, second_batch(spec.batch_size, shards))
    out['train_second_batch'] = other.to_json()
    out['largest_batch'] = largest_batch(train, other, budget, shards)
  if spec.decode_batch_size:
    decode = plan_decode_step(model, spec, train.mesh)
    out['decode'] = decode.to_json()
    out['decode_fits'] = decode.peak <= budget
  return out


def format_plan(plan: dict[str, Any]) -> str:
  """A human-readable summary of :func:`run_plan`'s result."""
  spec = plan['spec']
  lines = [f"{spec['size']} {spec['objective']} ({plan['num_params'] / 1e6:.0f}M parameters), "
           f"batch {spec['batch_size']} x ({spec['input_length']} + {spec['target_length']}), "
           f"{spec['dtype']} activations, {spec['num_devices']} x {spec['device']} "
           f"({plan['memory_bytes'] / GIB:.0f} GiB, budget {spec['headroom']:.0%})"]
  for name in ('train', 'decode'):
    if name not in plan:
      continue
    step = plan[name]
    mem = step['memory']
    flops = f"{step['flops'] / 1e12:.2f} TFLOP" if step['flops'] else 'n/a'
    if step.get('matmul_flops'):  # a scanned step's loop body counts once in XLA's figure
      flops += f" (matmuls with loop trip counts: {step['matmul_flops'] / 1e12:.2f} TFLOP)"
    lines.append(
        f"{name} step, mesh (data, fsdp, tensor) = {tuple(step['mesh'])}, batch "
        f"{step['batch_size']}: params {step['params_bytes'] / GIB:.3f} GiB, optimizer state "
        f"{step['opt_state_bytes'] / GIB:.3f} GiB, arguments {mem['argument'] / GIB:.2f} GiB, "
        f"temporaries {mem['temp'] / GIB:.2f} GiB, peak {step['peak_bytes'] / GIB:.2f} GiB per "
        f"device; {flops} per device per step")
    colls = ', '.join(f"{k} {v['count']} x ({v['bytes'] / 2**20:,.1f} MiB)"
                      for k, v in step['collectives'].items() if v['count'])
    lines.append(f'  collectives: {colls or "none"}')
  if 'fits' in plan:
    lines.append(f"fits: {'yes' if plan['fits'] else 'NO'}")
  if 'decode_fits' in plan:
    lines.append(f"decode fits: {'yes' if plan['decode_fits'] else 'NO'}")
  if 'largest_batch' in plan:
    value = plan['largest_batch']
    lines.append('largest batch that fits: ' + (
        'not memory-bound in the fitted range' if value < 0 else f'{value} (linear fit of '
        f"compiles at {plan['train']['batch_size']} and "
        f"{plan['train_second_batch']['batch_size']})"))
  if 'gin_binding' in plan:
    lines.append(f"mesh flag for padir.train: {plan['gin_binding']}")
  return '\n'.join(lines)
