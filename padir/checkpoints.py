"""Orbax checkpoints of padir runs: save, resume, params-only loading and averaging.

A checkpoint is ``MODEL_DIR/<step>/`` written by ``orbax.checkpoint.CheckpointManager`` with
four items:

* ``params``, ``opt_state``: the train state's arrays (restored directly into the current
  shardings, so the mesh may change between runs);
* ``data``: the training batch iterator's position (``BatchIterator.get_state()``);
* ``metadata``: JSON with the format version, the step, the vocabulary fingerprint (its sha256)
  the run was trained with, the parameter shapes, the gin config and library versions.

Saves are asynchronous; an interrupted save leaves only a temporary directory that is ignored
(and cleaned up) later. A restore never deletes or overwrites a checkpoint:

* a checkpoint of another vocabulary, model (parameter shapes) or optimizer (optimizer-state
  shapes) is refused with :class:`IncompatibleCheckpointError`, and nothing is moved;
* the newest checkpoint that can be read is used; newer ones that cannot be read (truncated or
  corrupt files) are reported and moved to ``MODEL_DIR/corrupt_checkpoints/<step>`` (``<step>.1``,
  ``<step>.2``, ... when that name is taken), so their steps can be redone;
* when checkpoints exist but none can be read, :class:`NoReadableCheckpointError` stops the run
  and nothing is moved, unless ``CheckpointConfig.start_over_if_unreadable`` asks to move them
  aside and train from step 0.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import re
import shutil
from typing import Any, Callable, Mapping, NamedTuple

import jax
import numpy as np
import orbax.checkpoint as ocp

from padir import errors
from padir import gin_utils
from padir import quiet

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
    save_on_sigterm: on SIGTERM or Ctrl-C (SIGINT), save at the current step and exit
      (preemption); a second Ctrl-C stops at once.
    init_from: when ``MODEL_DIR`` has no checkpoint, start from the params of this checkpoint
      (a model dir or a step dir: fine-tuning / continued training); None trains from scratch.
    start_over_if_unreadable: when ``MODEL_DIR`` has checkpoints but none can be read, move them
      to ``corrupt_checkpoints/`` and train from step 0 (default: stop with an error).
  """
  period: int = 1000
  keep: int | None = 5
  async_save: bool = True
  save_on_sigterm: bool = True
  init_from: str | None = None
  start_over_if_unreadable: bool = False

  def __post_init__(self):
    if not isinstance(self.period, int) or self.period < 1:
      raise ValueError(f'CheckpointConfig.period={self.period!r} must be an integer >= 1.')
    if self.keep is not None and (not isinstance(self.keep, int) or self.keep < 1):
      raise ValueError(f'CheckpointConfig.keep={self.keep!r} must be an integer >= 1 or None.')


gin_utils.configurable(CheckpointConfig, module='padir.checkpoints')


class CheckpointError(errors.UserError, ValueError):
  """A checkpoint that cannot be used; the message names the problem and the fix."""


class IncompatibleCheckpointError(CheckpointError):
  """A readable checkpoint of another vocabulary, model or optimizer (nothing is moved)."""


class UnreadableCheckpointError(CheckpointError):
  """A checkpoint whose files cannot be read (truncated, corrupt or missing)."""


class NoReadableCheckpointError(CheckpointError):
  """Checkpoints exist but none can be read (nothing is moved)."""


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
                  extra: Mapping[str, Any] | None = None,
                  abstract_opt_state: Any = None) -> dict[str, Any]:
  """The JSON metadata item of a checkpoint (with the optimizer-state shapes when given)."""
  meta = {
      'format': FORMAT,
      'format_version': FORMAT_VERSION,
      'step': int(step),
      'vocabulary': dict(vocabulary) if vocabulary is not None else None,
      'param_shapes': param_shapes(abstract_params),
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(),
      'versions': {'jax': jax.__version__, 'orbax': getattr(ocp, '__version__', 'unknown')},
  }
  if abstract_opt_state is not None:
    meta['opt_state_shapes'] = param_shapes(abstract_opt_state)
  meta.update(extra or {})
  return meta


def _shape_diff(mine: Mapping[str, Any], theirs: Mapping[str, Any], limit: int = 3) -> str:
  """A few differing entries of two 'path' -> shape maps, for messages."""
  keys = [k for k in sorted(set(mine) | set(theirs)) if mine.get(k) != theirs.get(k)]
  shown = ', '.join(f'{k}: checkpoint {theirs.get(k, "absent")} vs run {mine.get(k, "absent")}'
                    for k in keys[:limit])
  more = f' and {len(keys) - limit} more' if len(keys) > limit else ''
  return shown + more


def _gin_macro(text: str | None, name: str) -> str | None:
  """The value a gin config text binds to macro ``name`` (None when it binds none)."""
  if not text:
    return None
  found = re.search(rf'^{re.escape(name)}\s*=\s*(.+?)\s*$', text, re.MULTILINE)
  return found.group(1) if found else None


def check_metadata(metadata: Mapping[str, Any], where: str, *, vocabulary: Any = None,
                   abstract_params: Any = None, abstract_opt_state: Any = None,
                   gin_config: str | None = None) -> None:
  """Refuses a checkpoint made with another format, vocabulary, model or optimizer.

  Args:
    metadata: the checkpoint's metadata item.
    where: the checkpoint's path, for messages.
    vocabulary: the run's vocabulary (anything ``padir.data.vocab.load_tokenizer`` takes, or a
      Tokenizer); None skips the check.
    abstract_params: the run's parameter tree (ShapeDtypeStructs); None skips the check.
    abstract_opt_state: the run's optimizer state; None skips the check (so does a checkpoint
      that did not record its optimizer-state shapes).
    gin_config: the run's gin config text, to name both optimizers in the message.

  Raises:
    IncompatibleCheckpointError: naming the difference (the fix is the caller's to add).
  """
  if metadata.get('format') != FORMAT:
    raise IncompatibleCheckpointError(
        f'{where} is not a padir checkpoint (format {metadata.get("format")!r}).')
  if metadata.get('format_version', 0) > FORMAT_VERSION:
    raise IncompatibleCheckpointError(
        f'{where} has checkpoint format version {metadata["format_version"]}; this padir reads '
        f'up to {FORMAT_VERSION}. Upgrade padir.')
  if vocabulary is not None and metadata.get('vocabulary') is not None:
    from padir.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
    tokenizer = (vocabulary if isinstance(vocabulary, vocab_lib.Tokenizer)
                 else vocab_lib.load_tokenizer(vocabulary))
    try:
      vocab_lib.check_fingerprint(metadata['vocabulary'], tokenizer, what=f'checkpoint {where}')
    except ValueError as err:
      raise IncompatibleCheckpointError(str(err)) from None
  if abstract_params is not None and 'param_shapes' in metadata:
    mine = param_shapes(abstract_params)
    if mine != metadata['param_shapes']:
      raise IncompatibleCheckpointError(
          f'{where} was written by a model with other parameter shapes '
          f'({_shape_diff(mine, metadata["param_shapes"])}).')
  if abstract_opt_state is not None and 'opt_state_shapes' in metadata:
    mine = param_shapes(abstract_opt_state)
    if mine != metadata['opt_state_shapes']:
      raise IncompatibleCheckpointError(
          _optimizer_message(where, metadata, gin_config,
                             _shape_diff(mine, metadata['opt_state_shapes'], limit=1)))


def _optimizer_message(where: str, metadata: Mapping[str, Any], gin_config: str | None,
                       detail: str) -> str:
  theirs = _gin_macro(metadata.get('gin_config'), 'OPTIMIZER')
  mine = _gin_macro(gin_config, 'OPTIMIZER')
  names = f'OPTIMIZER = {theirs} there, {mine} here; ' if theirs and mine else ''
  return f'{where} was saved with another optimizer ({names}state {detail}).'


def _resume_fix(directory: str) -> str:
  return (f'Nothing was moved. Resume with the gin config it was trained with '
          f'({os.path.join(directory, "config.gin")}), or train in a new MODEL_DIR with '
          f'--gin.padir.checkpoints.CheckpointConfig.init_from="\'{directory}\'" to start from '
          'its params only.')


def reason(err: BaseException, limit: int = 200) -> str:
  """A short, one-line reason of a read failure (TensorStore's spec dump left out)."""
  text = ' '.join(str(err).split())
  text = re.sub(r'\s*\[(tensorstore_spec|source locations)=.*$', '', text)
  parts = text.split(': ')
  if len(parts) > 2 and re.fullmatch(r'[A-Z_]+', parts[0]):
    text = f'{parts[0]}: {parts[-1]}'
  text = f'{type(err).__name__}: {text}' if text else type(err).__name__
  return text if len(text) <= limit else text[:limit - 3] + '...'


_HANDLERS: dict[str, Callable[[], Any]] = {
    'params': ocp.StandardCheckpointHandler,
    'opt_state': ocp.StandardCheckpointHandler,
    'data': ocp.JsonCheckpointHandler,
    'metadata': ocp.JsonCheckpointHandler,
}


def _manager(directory: str, keep: int | None = None, async_save: bool = True,
             read_only: bool = False) -> ocp.CheckpointManager:
  quiet.install()
  options = ocp.CheckpointManagerOptions(
      max_to_keep=keep, enable_async_checkpointing=async_save, create=not read_only,
      read_only=read_only, cleanup_tmp_directories=not read_only)
  return ocp.CheckpointManager(os.path.abspath(directory), options=options,
                               item_handlers={k: make() for k, make in _HANDLERS.items()})


def _read_metadata(mgr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  restored = mgr.restore(step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
  return dict(restored['metadata'])


def _saved_shapes(mgr: ocp.CheckpointManager, step: int, item: str) -> list[tuple[int, ...]]:
  """The sorted shapes of a saved array item, from its metadata (no array data is read)."""
  saved = mgr.item_metadata(step)[item]
  tree = getattr(saved, 'tree', saved)
  if tree is None:
    raise ValueError(f'no metadata for the {item} item')
  return sorted(tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(tree))


def _shapes(abstract: Any) -> list[tuple[int, ...]]:
  return sorted(tuple(leaf.shape) for leaf in jax.tree_util.tree_leaves(abstract))


def _probe(mgr: ocp.CheckpointManager, step: int) -> dict[str, Any]:
  """The metadata of a checkpoint whose metadata and array metadata can be read.

  Raises:
    Exception: whatever reading raised (the checkpoint is unreadable).
  """
  metadata = _read_metadata(mgr, step)
  _saved_shapes(mgr, step, 'params')
  return metadata


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
    return _read_metadata(self._mgr, step)

  def _quarantine(self, steps: list[int]) -> dict[int, str]:
    """Moves unreadable checkpoints aside (process 0), each to a name not yet taken."""
    moved = {}
    for step in steps:
      moved[step] = target = quarantine_path(self.directory, step)
      if jax.process_index() == 0:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(os.path.join(self.directory, str(step)), target)
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f'padir_quarantine_{"_".join(map(str, steps))}')
    self._mgr.reload()
    return moved

  def _check_compatible(self, step: int, metadata: Mapping[str, Any], abstract_params: Any,
                        abstract_opt_state: Any, vocabulary: Any,
                        gin_config: str | None) -> None:
    """Raises IncompatibleCheckpointError (with the fix) for a checkpoint of another run."""
    where = os.path.join(self.directory, str(step))
    try:
      check_metadata(metadata, where, vocabulary=vocabulary, abstract_params=abstract_params,
                     abstract_opt_state=abstract_opt_state, gin_config=gin_config)
      if 'opt_state_shapes' not in metadata:  # older checkpoints: compare the saved arrays
        try:
          saved = _saved_shapes(self._mgr, step, 'opt_state')
        except Exception:  # pylint: disable=broad-except
          return  # unreadable: the restore reports it
        if saved != _shapes(abstract_opt_state):
          raise IncompatibleCheckpointError(_optimizer_message(
              where, metadata, gin_config,
              f'{len(saved)} arrays there vs {len(_shapes(abstract_opt_state))} here'))
    except IncompatibleCheckpointError as err:
      raise IncompatibleCheckpointError(f'{err}\n{_resume_fix(self.directory)}') from None

  def restore_latest(self, abstract_params: Any, abstract_opt_state: Any, *,
                     vocabulary: Any = None, gin_config: str | None = None,
                     start_over_if_unreadable: bool = False,
                     report: Callable[[str], Any] = print) -> Restored | None:
    """Restores the newest readable checkpoint, or returns None when there is none.

    Never deletes or overwrites a checkpoint. Unreadable checkpoints newer than the one restored
    are moved to ``corrupt_checkpoints/`` (under names that never collide).

    Args:
      abstract_params: ShapeDtypeStructs (with shardings) of the params.
      abstract_opt_state: ShapeDtypeStructs (with shardings) of the optimizer state.
      vocabulary: the run's vocabulary, checked against the checkpoint's fingerprint.
      gin_config: the run's gin config text (names the optimizers in a refusal).
      start_over_if_unreadable: when no checkpoint can be read, move them all aside and return
        None (train from step 0) instead of raising.
      report: receives one line per unreadable checkpoint.

    Raises:
      IncompatibleCheckpointError: a checkpoint of another vocabulary, model, optimizer or
        format (nothing is moved).
      NoReadableCheckpointError: there are checkpoints but none can be read (nothing is moved).
    """
    unreadable: dict[int, str] = {}
    for step in reversed(self.all_steps()):
      try:
        metadata = _probe(self._mgr, step)
      except Exception as err:  # pylint: disable=broad-except
        unreadable[step] = reason(err)
        continue
      self._check_compatible(step, metadata, abstract_params, abstract_opt_state, vocabulary,
                             gin_config)
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
        if _is_structure_mismatch(err):
          raise IncompatibleCheckpointError(
              f'{os.path.join(self.directory, str(step))} holds other arrays than this run '
              f'({reason(err, 160)}).\n{_resume_fix(self.directory)}') from None
        unreadable[step] = reason(err)
        continue
      self._report_moved(unreadable, report, f'resuming from step {step}')
      return Restored(step, params, opt_state, data_state, metadata)
    if not unreadable:
      return None
    if not start_over_if_unreadable:
      steps = sorted(unreadable)
      raise NoReadableCheckpointError(
          f'No checkpoint in {self.directory} can be read (steps {steps}; step {steps[-1]}: '
          f'{unreadable[steps[-1]]}). Nothing was moved.\nRerun with '
          '--gin.padir.checkpoints.CheckpointConfig.start_over_if_unreadable=True to move them '
          f'to {CORRUPT_DIR}/ and train from step 0, or use another MODEL_DIR.')
    self._report_moved(unreadable, report, 'starting over from step 0')
    return None

  def _report_moved(self, unreadable: dict[int, str], report: Callable[[str], Any],
                    then: str) -> None:
    moved = self._quarantine(sorted(unreadable, reverse=True)) if unreadable else {}
    for step, target in moved.items():
      report(f'Checkpoint {os.path.join(self.directory, str(step))} is unreadable '
             f'({unreadable[step]}); moved to {target}, {then}.')


def quarantine_path(directory: str, step: int) -> str:
  """``directory/corrupt_checkpoints/<step>``, or ``<step>.N`` with the first free N."""
  base = os.path.join(directory, CORRUPT_DIR, str(step))
  target, n = base, 0
  while os.path.exists(target):
    n += 1
    target = f'{base}.{n}'
  return target


class _StructureMismatch(ValueError):
  """Restored arrays of another structure, shape or dtype than asked for."""


def _is_structure_mismatch(err: BaseException) -> bool:
  """Orbax's (or our) refusal of a tree of another structure: not a read failure."""
  text = str(err)
  return isinstance(err, _StructureMismatch) or isinstance(err, (ValueError, TypeError)) and (
      'tree structures do not match' in text or ('Mismatch' in text and 'Metadata' in text))


def _check_restored(tree: Any, abstract: Any) -> None:
  """Restored arrays must have the expected structure, shapes and dtypes."""
  got = jax.tree_util.tree_structure(tree)
  want = jax.tree_util.tree_structure(abstract)
  if got != want:
    raise _StructureMismatch(f'restored tree structure {got} differs from the expected {want}')
  for a, b in zip(jax.tree_util.tree_leaves(tree), jax.tree_util.tree_leaves(abstract)):
    if a.shape != b.shape or a.dtype != b.dtype:
      raise _StructureMismatch(
          f'restored array {a.shape} {a.dtype} differs from {b.shape} {b.dtype}')


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
    ValueError: a missing checkpoint.
    IncompatibleCheckpointError: one of another vocabulary or model.
    UnreadableCheckpointError: one that cannot be read (naming the previous readable step).
  """
  directory, step = resolve_checkpoint(path, step)
  mgr = _manager(directory, read_only=True)
  where = os.path.join(directory, str(step))
  fix = f'Use the gin config it was trained with ({os.path.join(directory, "config.gin")}).'
  try:
    try:
      meta = _read_metadata(mgr, step)
    except Exception as err:  # pylint: disable=broad-except
      raise _unreadable(mgr, directory, step, err) from None
    try:
      check_metadata(meta, where, vocabulary=vocabulary, abstract_params=abstract_params)
    except IncompatibleCheckpointError as err:
      raise IncompatibleCheckpointError(f'{err}\n{fix}') from None
    try:
      if abstract_params is None:
        abstract_params = _saved_params_on_one_device(os.path.join(where, 'params'))
      params = mgr.restore(step, args=ocp.args.Composite(
          params=ocp.args.StandardRestore(abstract_params)))['params']
      _check_restored(params, abstract_params)
    except Exception as err:  # pylint: disable=broad-except
      if _is_structure_mismatch(err):
        raise IncompatibleCheckpointError(
            f'{where} holds other parameters than this model ({reason(err, 160)}).\n{fix}'
        ) from None
      raise _unreadable(mgr, directory, step, err) from None
  finally:
    mgr.close()
  return params, meta, step


def _unreadable(mgr: ocp.CheckpointManager, directory: str, step: int,
                err: BaseException) -> UnreadableCheckpointError:
  """The error for an unreadable checkpoint, naming the previous readable one."""
  previous = next((s for s in sorted(mgr.all_steps(), reverse=True)
                   if s < step and _readable(mgr, s)), None)
  if previous is None:
    then = f'{directory} has no earlier readable checkpoint.'
  else:
    path = os.path.join(directory, str(previous))
    then = (f'The previous readable checkpoint is step {previous}: {path} (e.g. '
            f'--gin.CHECKPOINT_PATH="\'{path}\'").')
  return UnreadableCheckpointError(
      f'Checkpoint {os.path.join(directory, str(step))} cannot be read ({reason(err)}).\n{then}')


def _readable(mgr: ocp.CheckpointManager, step: int) -> bool:
  try:
    _probe(mgr, step)
    return True
  except Exception:  # pylint: disable=broad-except
    return False


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
