"""Device mesh, logical axis rules and NamedShardings for params, optimizer state and batches.

The mesh has the axes ``('data', 'fsdp', 'tensor')``: ``data`` replicates the model and splits
the batch, ``fsdp`` splits the batch *and* the parameters' ``embed`` dimension (ZeRO-3 style),
``tensor`` splits heads, MLP and vocabulary (Megatron style). One entry of ``mesh_shape`` may be
-1 and is filled from the device count.

Logical axis rules map the T5X names the network annotates (``batch``, ``length``, ``embed``,
``heads``, ``kv``, ``joined_kv``, ``mlp``, ``vocab``, ``relpos_buckets``, ``layers``) to mesh
axes; they are plain data, set in gin (``Partitioner.logical_axis_rules``). A logical name may
have several rules: the first whose mesh axes are still free in that array wins, so an
activation ``[batch, length, embed]`` keeps ``embed`` replicated while a parameter
``[embed, mlp]`` puts ``embed`` on ``fsdp``.

Optimizer-state shardings are derived, not tabled: :meth:`Partitioner.optimizer_shardings`
evaluates ``tx.init`` abstractly and gives each state leaf its parameter's sharding (same
shape), the parameter's sharding without the reduced dimension (factored Adafactor moments) or
replication (counters, anything else).

Multi-host: entry points join the job with ``padir.distributed.initialize()`` (flags or
environment, JAX's cluster detection otherwise); every process then feeds its rows of the
global batch to :meth:`Partitioner.shard_batch`.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Iterator, Mapping, Sequence

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import NamedSharding, PartitionSpec as P

from padir import gin_utils

MESH_AXES = ('data', 'fsdp', 'tensor')
BATCH_MESH_AXES = ('data', 'fsdp')
LogicalRules = Sequence[tuple[str, Any]]


def standard_logical_axis_rules() -> tuple[tuple[str, Any], ...]:
  """T5X-style rules for the ('data', 'fsdp', 'tensor') mesh (data + FSDP + tensor parallel)."""
  return (
      ('batch', BATCH_MESH_AXES),
      ('vocab', 'tensor'),
      ('mlp', 'tensor'),
      ('heads', 'tensor'),
      ('joined_kv', 'tensor'),
      ('embed', 'fsdp'),
      ('kv', None),
      ('length', None),
      ('relpos_buckets', None),
      ('layers', None),
  )


def resolve_mesh_shape(mesh_shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
  """Fills one -1 entry from the device count and checks that the product matches.

  Raises:
    ValueError: a wrong number of entries, several -1, a non-positive size, or a product that
      does not match ``num_devices``.
  """
  shape = [int(s) for s in mesh_shape]
  if len(shape) != len(MESH_AXES):
    raise ValueError(f'mesh_shape={tuple(mesh_shape)} needs {len(MESH_AXES)} entries, one per '
                     f'mesh axis {MESH_AXES}, e.g. (-1, 1, 1).')
  auto = [i for i, s in enumerate(shape) if s == -1]
  if len(auto) > 1:
    raise ValueError(f'mesh_shape={tuple(mesh_shape)}: at most one entry may be -1.')
  if any(s == 0 or s < -1 for s in shape):
    raise ValueError(f'mesh_shape={tuple(mesh_shape)}: sizes must be positive (or one -1).')
  known = math.prod(s for s in shape if s != -1)
  if auto:
    if num_devices % known:
      raise ValueError(f'mesh_shape={tuple(mesh_shape)}: {num_devices} devices are not a '
                       f'multiple of the fixed axes\' product {known}.')
    shape[auto[0]] = num_devices // known
  if math.prod(shape) != num_devices:
    raise ValueError(f'mesh_shape={tuple(mesh_shape)} has {math.prod(shape)} devices but '
                     f'{num_devices} are available; use -1 for one axis to fill it.')
  return tuple(shape)


def _path_name(path: tuple[Any, ...]) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', getattr(k, 'idx', k)))) for k in path)


class Partitioner:
  """A mesh plus logical axis rules: shardings for params, optimizer state and batches."""

  def __init__(self,
               mesh_shape: Sequence[int] = (-1, 1, 1),
               logical_axis_rules: LogicalRules | None = None,
               devices: Sequence[Any] | None = None,
               num_devices: int | None = None):
    """Builds the mesh.

    Args:
      mesh_shape: sizes of ('data', 'fsdp', 'tensor'); one may be -1 (filled from the devices).
      logical_axis_rules: (logical name, mesh axis | tuple of mesh axes | None) pairs;
        defaults to :func:`standard_logical_axis_rules`.
      devices: the devices to use (default: all, ``jax.devices()``).
      num_devices: use only the first N of them (single-process runs; None: all).
    """
    devices = list(jax.devices() if devices is None else devices)
    if num_devices is not None:
      if jax.process_count() > 1:
        raise ValueError('Partitioner.num_devices is for single-process runs; a multi-process '
                         'job uses every device of every process.')
      if not 1 <= num_devices <= len(devices):
        raise ValueError(f'Partitioner.num_devices={num_devices} must be in [1, '
                         f'{len(devices)}] (the available devices).')
      devices = devices[:num_devices]
    shape = resolve_mesh_shape(mesh_shape, len(devices))
    self.mesh = jax.make_mesh(shape, MESH_AXES,
                              axis_types=(jax.sharding.AxisType.Auto,) * len(MESH_AXES),
                              devices=devices)
    rules = standard_logical_axis_rules() if logical_axis_rules is None else logical_axis_rules
    self.rules = tuple((str(name), tuple(axes) if isinstance(axes, list) else axes)
                       for name, axes in rules)
    for name, axes in self.rules:
      for axis in (axes if isinstance(axes, tuple) else (axes,)):
        if axis is not None and axis not in MESH_AXES:
          raise ValueError(f'Logical axis rule ({name!r}, {axes!r}) names mesh axis {axis!r}; '
                           f'the mesh axes are {MESH_AXES}.')

  # ---------------------------------------------------------------- mesh facts

  @property
  def mesh_shape(self) -> dict[str, int]:
    return dict(self.mesh.shape)

  @property
  def batch_shards(self) -> int:
    """How many ways the batch dimension is split (data * fsdp)."""
    return self.mesh.shape['data'] * self.mesh.shape['fsdp']

  @contextlib.contextmanager
  def context(self) -> Iterator[None]:
    """Mesh and logical-rule context for tracing and running jitted functions."""
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      yield

  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  # ---------------------------------------------------------------- params

  def mesh_spec(self, logical_spec: P | None) -> P:
    """A logical PartitionSpec -> a mesh PartitionSpec under the rules."""
    if logical_spec is None:
      return P()
    return nn.logical_to_mesh_axes(logical_spec, self.rules)

  def _check_divisible(self, path: str, shape: tuple[int, ...], spec: P,
                       logical: P | None) -> None:
    for dim, axes in enumerate(tuple(spec)):
      if axes is None:
        continue
      names = axes if isinstance(axes, tuple) else (axes,)
      size = math.prod(self.mesh.shape[a] for a in names)
      if shape[dim] % size:
        logical_name = tuple(logical)[dim] if logical is not None and dim < len(logical) else '?'
        raise ValueError(
            f'Cannot shard {path} of shape {shape}: dimension {dim} (logical axis '
            f'{logical_name!r}) has size {shape[dim]}, which mesh axis {"x".join(names)} of size '
            f'{size} does not divide. Change the mesh shape, the model size, or the logical '
            f'axis rule for {logical_name!r} (e.g. map it to None).')

  def param_shardings(self, logical_specs: Any, abstract_params: Any) -> Any:
    """NamedShardings for a parameter tree from its logical specs (checked for divisibility).

    Args:
      logical_specs: tree of logical PartitionSpecs (``nn.get_partition_spec`` of the boxed
        params, or ``model.get_logical_axes``).
      abstract_params: the same tree of arrays or ShapeDtypeStructs.

    Raises:
      ValueError: naming the parameter path and the axis that does not divide.
    """
    flat_specs = dict(jax.tree_util.tree_flatten_with_path(
        logical_specs, is_leaf=lambda x: isinstance(x, P) or x is None)[0])
    def one(path, leaf):
      logical = flat_specs.get(path)
      spec = self.mesh_spec(logical)
      self._check_divisible(_path_name(path), tuple(leaf.shape), spec, logical)
      return NamedSharding(self.mesh, spec)
    return jax.tree_util.tree_map_with_path(one, abstract_params)

  # ---------------------------------------------------------------- optimizer state

  def _derived_spec(self, leaf_shape: tuple[int, ...], param_shape: tuple[int, ...],
                    param_spec: P) -> P:
    spec = tuple(param_spec) + (None,) * (len(param_shape) - len(tuple(param_spec)))
    if leaf_shape == param_shape:
      return P(*spec)
    # A factored moment: the parameter's shape with one dimension reduced away.
    for dim in range(len(param_shape)):
      if leaf_shape == param_shape[:dim] + param_shape[dim + 1:]:
        reduced = spec[:dim] + spec[dim + 1:]
        fits = []
        for size, axes in zip(leaf_shape, reduced):
          names = axes if isinstance(axes, tuple) else (axes,)
          ok = axes is None or size % math.prod(self.mesh.shape[a] for a in names) == 0
          fits.append(axes if ok else None)
        return P(*fits)
    return P()

  def optimizer_shardings(self, tx: optax.GradientTransformation, abstract_params: Any,
                          param_shardings: Any) -> Any:
    """NamedShardings for ``tx.init(params)``, derived with ``jax.eval_shape``.

    Each state leaf that optax associates with a parameter gets the parameter's sharding when
    it has the parameter's shape, the sharding without the reduced dimension when it is a
    factored moment (Adafactor), and replication otherwise (counts, scalars).
    """
    abstract_state = jax.eval_shape(tx.init, abstract_params)

    def leaf_sharding(leaf, param, sharding):
      if not hasattr(leaf, 'shape'):
        return self.replicated()
      spec = self._derived_spec(tuple(leaf.shape), tuple(param.shape), sharding.spec)
      return NamedSharding(self.mesh, spec)

    return optax.tree_map_params(
        tx, leaf_sharding, abstract_state, abstract_params, param_shardings,
        transform_non_params=lambda _: self.replicated())

  # ---------------------------------------------------------------- batches

  def batch_sharding(self, ndim: int = 2) -> NamedSharding:
    """Batch-major arrays: dimension 0 split over ('data', 'fsdp'), the rest replicated."""
    return NamedSharding(self.mesh, P(BATCH_MESH_AXES, *([None] * (ndim - 1))))

  def check_batch_size(self, batch_size: int, what: str = 'batch_size') -> None:
    """The global batch must split evenly over the batch shards and the processes."""
    shards = self.batch_shards
    if batch_size % shards or batch_size % jax.process_count():
      raise ValueError(
          f'{what}={batch_size} must be a multiple of data x fsdp = {shards} (mesh '
          f'{self.mesh_shape}) and of the process count {jax.process_count()}.')

  def shard_batch(self, local_batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
    """This process's rows of the global batch -> global arrays sharded over the batch axes.

    Process p must hold rows ``[p * B/P, (p + 1) * B/P)`` of the global batch (what
    ``padir.data`` iterators yield); the devices of the mesh are laid out so that this holds.
    """
    out = {}
    for name, value in local_batch.items():
      value = np.asarray(value)
      sharding = self.batch_sharding(value.ndim)
      global_shape = (value.shape[0] * jax.process_count(),) + value.shape[1:]
      out[name] = jax.make_array_from_process_local_data(sharding, value, global_shape)
    return out

  def check_process_rows(self, global_batch_size: int) -> None:
    """Checks that this process's devices hold its contiguous block of batch rows."""
    sharding = self.batch_sharding(1)
    starts = sorted({idx[0].start or 0 for d, idx in
                     sharding.devices_indices_map((global_batch_size,)).items()
                     if d.process_index == jax.process_index()})
    local = global_batch_size // jax.process_count()
    lo = jax.process_index() * local
    stops = [s + global_batch_size // self.batch_shards for s in starts]
    if starts and (starts[0] != lo or max(stops) != lo + local):
      raise ValueError(
          f'The mesh gives process {jax.process_index()} batch rows [{starts[0]}, {max(stops)}) '
          f'but the data iterator serves rows [{lo}, {lo + local}); order the mesh devices by '
          'process (jax.make_mesh does by default).')


gin_utils.configurable(Partitioner, module='padir.partitioning')
gin_utils.configurable(standard_logical_axis_rules, module='padir.partitioning')
