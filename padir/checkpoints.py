"""Orbax checkpoints of padir runs: save, resume, params-only loading and averaging.

A checkpoint is ``MODEL_DIR/<step>/`` written by ``orbax.checkpoint.CheckpointManager`` with
four items:

* ``params``, ``opt_state``: the train state's arrays (restored directly into the current
  shardings, so the mesh may change between runs);
* ``data``: the training batch iterator's position (``BatchIterator.get_state()``);
* ``metadata``: JSON with the format version, the step, the vocabulary fingerprint (its sha256)
  the run was trained with, the parameter shapes, the gin config and library versions.

Saves are asynchronous; an interrupted save leaves only a temporary directory that is ignored
(and cleaned up) later. Restoring tries the newest checkpoint first; one that cannot be read
(truncated or corrupt files) is reported, moved to ``MODEL_DIR/corrupt_checkpoints/`` and the
previous one is used. A checkpoint whose vocabulary or parameter shapes differ from the run's
is refused with a message that says so (never treated as corrupt).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import shutil
from typing import Any, Mapping, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from padir import gin_utils

FORMAT = 'padir-checkpoint'
FORMAT_VERSION = 1
ITEMS = ('params', 'opt_state', 'data', 'metadata')
CORRUPT_DIR = 'corrupt_checkpoints'

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  """How a training run checkpoints.

  Attributes:
    period: save every this many steps (and at the last step).
    keep: how many checkpoints to keep (older ones are deleted); None keeps all.
    async_save: write in the background while training continues.
    save_on_sigterm: on SIGTERM, save at the current step and exit (preemption).
    init_from: when ``MODEL_DIR`` has no checkpoint, start from the params of this checkpoint
      (a model dir or a step dir: fine-tuning / continued training); None trains from scratch.
  """
  period: int = 1000
  keep: int | None = 5
  async_save: bool = True
  save_on_sigterm: bool = True
  init_from: str | None = None

  def __post_init__(self):
    if not isinstance(self.period, int) or self.period < 1:
      raise ValueError(f'CheckpointConfig.period={self.period!r} must be an integer >= 1.')
    if self.keep is not None and (not isinstance(self.keep, int) or self.keep < 1):
      raise ValueError(f'CheckpointConfig.keep={self.keep!r} must be an integer >= 1 or None.')


gin_utils.configurable(CheckpointConfig, module='padir.checkpoints')


class Restored(NamedTuple):
  """What :meth:`CheckpointManager.restore_latest` returns."""
  step: int
  params: Any
  opt_state: Any
  data_state: dict[str, Any]
  metadata: dict[str, Any]


def param_shapes(abstract_params: Any) -> dict[str, list[int]]:
  """'path/to/param' -> shape, for the metadata and for compatibility checks."""
  flat = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
  return {jax.tree_util.keystr(path, simple=True, separator='/'): list(leaf.shape)
          for path, leaf in flat}


def make_metadata(step: int, vocabulary: Mapping[str, Any] | None, abstract_params: Any,
                  extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
  """The JSON metadata item of a checkpoint."""
  meta = {
      'format': FORMAT,
      'format_version': FORMAT_VERSION,
      'step': int(step),
      'vocabulary': dict(vocabulary) if vocabulary is not None else None,
      'param_shapes': param_shapes(abstract_params),
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
      'versions': {'jax': jax.__version__, 'orbax': getattr(ocp, '__version__', 'unknown')},
  }
  meta.update(extra or {})
  return meta


def check_metadata(metadata: Mapping[str, Any], where: str, *, vocabulary: Any = None,
                   abstract_params: Any = None) -> None:
  """Refuses a checkpoint made with another format, vocabulary or parameter shapes.

  Args:
    metadata: the checkpoint's metadata item.
    where: the checkpoint's path, for messages.
    vocabulary: the run's vocabulary (anything ``padir.data.vocab.load_tokenizer`` takes, or a
      Tokenizer); None skips the check.
    abstract_params: the run's parameter tree (ShapeDtypeStructs); None skips the check.

  Raises:
    ValueError: naming the difference and the fix.
  """
  if metadata.get('format') != FORMAT:
    raise ValueError(f'{where} is not a padir checkpoint (format {metadata.get("format")!r}).')
  if metadata.get('format_version', 0) > FORMAT_VERSION:
    raise ValueError(f'{where} has checkpoint format version {metadata["format_version"]}; this '
                     f'padir reads up to {FORMAT_VERSION}. Upgrade padir.')
  if vocabulary is not None and metadata.get('vocabulary') is not None:
    from padir.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    tokenizer = (vocabulary if isinstance(vocabulary, vocab_lib.Tokenizer)
                 else vocab_lib.load_tokenizer(vocabulary))
    vocab_lib.check_fingerprint(metadata['vocabulary'], tokenizer, what=f'checkpoint {where}')
  if abstract_params is not None and 'param_shapes' in metadata:
    mine = param_shapes(abstract_params)
    theirs = metadata['param_shapes']
    if mine != theirs:
      diff = sorted(set(mine) ^ set(theirs))[:5] or [
          k for k in mine if mine[k] != theirs.get(k)][:5]
      details = ', '.join(f'{k}: checkpoint {theirs.get(k)} vs model {mine.get(k)}' for k in diff)
      raise ValueError(
          f'{where} was written by a model with other parameter shapes ({details}). Use the '
          'gin config it was trained with (MODEL_DIR/config.gin) or another MODEL_DIR.')


def _manager(directory: str, keep: int | None = None, async_save: bool = True,
             read_only: bool = False) -> ocp.CheckpointManager:
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=async_save, create=not read_only,
      read_only=read_only, cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options, item_names=ITEMS)


class CheckpointManager:
  """Saves and restores the train state, data position and metadata in ``directory``."""

  def __init__(self, directory: str, keep: int | None = 5, async_save: bool = True):
    self.directory = os.path.abspath(directory)
    self._mgr = _manager(self.directory, keep, async_save)

  def all_steps(self) -> list[int]:
    return sorted(self._mgr.all_steps())

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def save(self, step: int, params: Any, opt_state: Any, data_state: Mapping[str, Any] | None,
           metadata: Mapping[str, Any]) -> None:
    """Starts saving (asynchronously when configured); returns once the arrays are copied."""
    args = ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        data=ocp.args.JsonSave(dict(data_state or {})),
        metadata=ocp.args.JsonSave(dict(metadata)))
    self._mgr.save(int(step), args=args, force=True)

  def wait(self) -> None:
    """Blocks until pending saves are on disk."""
    self._mgr.wait_until_finished()

  def close(self) -> None:
    self._mgr.wait_until_finished()
    self._mgr.close()

  def read_metadata(self, step: int) -> dict[str, Any]:
    restored = self._mgr.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
    return dict(restored['metadata'])

  def _quarantine(self, step: int) -> str:
    """Moves an unreadable checkpoint out of the way (process 0) so the step can be redone."""
    target = os.path.join(self.directory, CORRUPT_DIR, str(step))
    if jax.process_index() == 0:
      os.makedirs(os.path.dirname(target), exist_ok=True)
      if os.path.exists(target):
        shutil.rmtree(target)
      shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'padir_quarantine_{step}')
    self._mgr.reload()
    return target

  def restore_latest(self, abstract_params: Any, abstract_opt_state: Any, *,
                     vocabulary: Any = None, report=print) -> Restored | None:
    """Restores the newest readable checkpoint, or returns None when there is none.

    Args:
      abstract_params: ShapeDtypeStructs (with shardings) of the params.
      abstract_opt_state: ShapeDtypeStructs (with shardings) of the optimizer state.
      vocabulary: the run's vocabulary, checked against the checkpoint's fingerprint.
      report: receives one line per unreadable checkpoint.

    Raises:
      ValueError: a checkpoint of another vocabulary, model or format (not a corruption).
    """
    for step in reversed(self.all_steps()):
      where = os.path.join(self.directory, str(step))
      try:
        metadata = self.read_metadata(step)
      except Exception as err:  # pylint: disable=broad-except
        moved = self._quarantine(step)
        report(f'Checkpoint {where} is unreadable ({type(err).__name__}: {_short(err)}); moved '
               f'to {moved}, using the previous one.')
        continue
      check_metadata(metadata, where, vocabulary=vocabulary, abstract_params=abstract_params)
      try:
        restored = self._mgr.restore(step, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(abstract_params),
            opt_state=ocp.args.StandardRestore(abstract_opt_state),
            data=ocp.args.JsonRestore()))
        params, opt_state = restored['params'], restored['opt_state']
        _check_restored(params, abstract_params)
        _check_restored(opt_state, abstract_opt_state)
        data_state = dict(restored['data'] or {})
      except Exception as err:  # pylint: disable=broad-except
        moved = self._quarantine(step)
        report(f'Checkpoint {where} is unreadable ({type(err).__name__}: {_short(err)}); moved '
               f'to {moved}, using the previous one.')
        continue
      return Restored(step, params, opt_state, data_state, metadata)
    return None


def _short(err: Exception, limit: int = 300) -> str:
  text = ' '.join(str(err).split())
  return text if len(text) <= limit else text[:limit] + '...'


def _check_restored(tree: Any, abstract: Any) -> None:
  """Restored arrays must have the expected structure, shapes and dtypes."""
  got = jax.tree_util.tree_structure(tree)
  want = jax.tree_util.tree_structure(abstract)
  if got != want:
    raise ValueError(f'restored tree structure {got} differs from the expected {want}')
  for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(abstract)):
    if a.shape != b.shape or a.dtype != b.dtype:
      raise ValueError(f'restored array {a.shape} {a.dtype} differs from {b.shape} {b.dtype}')


def resolve_checkpoint(path: str, step: int | None = None) -> tuple[str, int]:
  """(model dir, step) of a model dir (newest or ``step``) or of one step directory.

  Raises:
    ValueError: when the path holds no padir checkpoint.
  """
  path = os.path.abspath(os.path.expanduser(path))
  base = os.path.basename(path.rstrip('/'))
  if base.isdigit() and os.path.isdir(os.path.join(path, 'params')):
    if step is not None and step != int(base):
      raise ValueError(f'{path} is the checkpoint of step {base}, not of step {step}.')
    return os.path.dirname(path), int(base)
  if not os.path.isdir(path):
    raise ValueError(f'Checkpoint path {path} does not exist.')
  mgr = _manager(path, read_only=True)
  steps = sorted(mgr.all_steps())
  mgr.close()
  if not steps:
    raise ValueError(f'{path} holds no checkpoint (expected MODEL_DIR/<step>/ directories '
                     'written by padir.train).')
  if step is None:
    return path, steps[-1]
  if step not in steps:
    raise ValueError(f'{path} has no checkpoint of step {step}; it has steps {steps}.')
  return path, step


def load_params(path: str, abstract_params: Any | None = None, *, step: int | None = None,
                vocabulary: Any = None) -> tuple[Any, dict[str, Any], int]:
  """Loads only the params of a checkpoint (no optimizer state): for eval, infer and fine-tuning.

  Args:
    path: a model dir (newest checkpoint, or ``step``) or a step directory ``MODEL_DIR/<step>``.
    abstract_params: ShapeDtypeStructs with shardings to restore into; None restores host
      arrays on one device with the saved shapes.
    step: which step of a model dir.
    vocabulary: when given, must match the checkpoint's vocabulary fingerprint.

  Returns:
    (params, metadata, step).

  Raises:
    ValueError: a missing checkpoint, or one of another vocabulary or model.
  """
  directory, step = resolve_checkpoint(path, step)
  mgr = _manager(directory, read_only=True)
  try:
    where = os.path.join(directory, str(step))
    meta = dict(mgr.restore(step, args=ocp.args.Composite(
        metadata=ocp.args.JsonRestore()))['metadata'])
    check_metadata(meta, where, vocabulary=vocabulary, abstract_params=abstract_params)
    if abstract_params is None:
      abstract_params = _saved_params_on_one_device(os.path.join(where, 'params'))
    params = mgr.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_params)))['params']
  finally:
    mgr.close()
  return params, meta, step


def _saved_params_on_one_device(params_dir: str) -> Any:
  """ShapeDtypeStructs of the saved params, placed on this process's first device."""
  saved = ocp.StandardCheckpointer().metadata(params_dir)
  tree = getattr(getattr(saved, 'item_metadata', saved), 'tree', None)
  if tree is None:
    tree = getattr(saved, 'item_metadata', saved)
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  return jax.tree_util.tree_map(
      lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype, sharding=device), tree)


def average_checkpoints(model_dir: str, output_dir: str, num_checkpoints: int = 5,
                        steps: list[int] | None = None) -> tuple[int, list[int]]:
  """Averages the params of the last ``num_checkpoints`` (or given ``steps``) checkpoints.

  The result is a params-only checkpoint at the newest averaged step in ``output_dir``; its
  metadata lists the averaged steps. Load it with :func:`load_params` (eval, infer).

  Returns:
    (step written, steps averaged).

  Raises:
    ValueError: too few checkpoints, differing vocabularies or shapes, or an existing output.
  """
  model_dir = os.path.abspath(model_dir)
  output_dir = os.path.abspath(output_dir)
  if output_dir == model_dir:
    raise ValueError('output_dir must differ from model_dir (training would resume from the '
                     'average otherwise).')
  mgr = _manager(model_dir, read_only=True)
  available = sorted(mgr.all_steps())
  mgr.close()
  if steps is None:
    if num_checkpoints < 1:
      raise ValueError(f'num_checkpoints={num_checkpoints} must be >= 1.')
    if len(available) < num_checkpoints:
      raise ValueError(f'{model_dir} has {len(available)} checkpoints ({available}); cannot '
                       f'average the last {num_checkpoints}.')
    steps = available[-num_checkpoints:]
  missing = sorted(set(steps) - set(available))
  if missing:
    raise ValueError(f'{model_dir} has no checkpoints of steps {missing}; it has {available}.')
  total, first_meta = None, None
  for step in steps:
    params, meta, _ = load_params(model_dir, step=step)
    host = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), params)
    if first_meta is None:
      first_meta, total = meta, host
      dtypes = jax.tree_util.tree_map(lambda x: x.dtype, params)
      continue
    if meta.get('vocabulary') != first_meta.get('vocabulary') or \
        meta.get('param_shapes') != first_meta.get('param_shapes'):
      raise ValueError(f'Checkpoint {step} has another vocabulary or model than {steps[0]}; '
                       'only checkpoints of one run can be averaged.')
    total = jax.tree_util.tree_map(np.add, total, host)
  averaged = jax.tree_util.tree_map(lambda t, d: (t / len(steps)).astype(d), total, dtypes)
  last = max(steps)
  out = _manager(output_dir, async_save=False)
  if last in out.all_steps():
    out.close()
    raise ValueError(f'{output_dir} already has a checkpoint of step {last}.')
  meta = dict(first_meta)
  meta.update(step=last, averaged_steps=list(steps), averaged_from=model_dir)
  out.save(last, args=ocp.args.Composite(params=ocp.args.StandardSave(averaged),
                                         metadata=ocp.args.JsonSave(meta)))
  out.wait_until_finished()
  out.close()
  return last, list(steps)
