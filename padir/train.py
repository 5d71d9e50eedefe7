r"""Trains a model from gin files: ``python -m padir.train`` (or ``padir train``).

  python -m padir.train \
    --gin_file=gin/experiments/bible_es_en_padir.gin \
    --gin.MODEL_DIR="'/tmp/bible_padir'" --gin.TRAIN_STEPS=2000

Rerunning the same command resumes from the newest checkpoint in MODEL_DIR (params, optimizer
state and data position), so a killed or preempted run continues where it stopped; on CPU with
a fixed seed the result is bit-identical to an uninterrupted run.

Multi-process: each process joins the job through ``padir.distributed.initialize()``: flags
``--coordinator_address=HOST:PORT --num_processes=N --process_id=I``, or the ``PADIR_*``
environment variables the launchers set (``python -m padir.launch``), or JAX's detection of a
TPU pod / SLURM step.

Writes to MODEL_DIR: ``<step>/`` checkpoints, ``config.gin`` (parsed) and
``operative_config.gin`` (what was used), ``model-info.txt`` (parameters and shardings),
``metrics.jsonl`` and ``tensorboard/``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import numpy as np

from padir import builders  # pylint: disable=unused-import  (gin registrations)
from padir import decoding  # pylint: disable=unused-import  (gin registrations)
from padir import checkpoints as checkpoints_lib
from padir import datasets as datasets_lib
from padir import distributed
from padir import errors
from padir import evaluation
from padir import gin_utils
from padir import optimizers as optimizers_lib
from padir import partitioning as partitioning_lib
from padir import summaries
from padir import trainer as trainer_lib

SIGTERM_EXIT_CODE = 143

# step_callback(step, metrics or None): see `train`.
StepCallback = Callable[[int, Mapping[str, float] | None], Any]


@dataclasses.dataclass
class TrainResult:
  """What :func:`train` returns.

  Attributes:
    step: steps completed.
    stopped_by_signal: training stopped early on SIGTERM or Ctrl-C (a checkpoint was saved).
    train_metrics: the last logged training metrics.
    eval_metrics: the last evaluation metrics ({} when none ran).
    state: the final train state.
    stop_signal: the signal that stopped it (``signal.SIGTERM`` or ``signal.SIGINT``), or None.
  """
  step: int
  stopped_by_signal: bool
  train_metrics: dict[str, float]
  eval_metrics: dict[str, float]
  state: Any = None
  stop_signal: int | None = None


class _SignalFlag:
  """Set by SIGTERM or a first Ctrl-C (SIGINT); installed only in the main thread.

  A second Ctrl-C raises KeyboardInterrupt at once (the default behaviour).
  """

  NAMES = {signal.SIGTERM: 'SIGTERM', signal.SIGINT: 'Ctrl-C'}

  def __init__(self, enabled: bool):
    self.raised = False
    self.signum: int | None = None
    self._previous: dict[int, Any] = {}
    if enabled and threading.current_thread() is threading.main_thread():
      for signum in self.NAMES:
        self._previous[signum] = signal.signal(signum, self._handle)

  @property
  def name(self) -> str:
    return self.NAMES.get(self.signum, 'a signal')

  def _handle(self, signum, frame):  # pylint: disable=unused-argument
    if signum == signal.SIGINT:
      if self.raised:
        raise KeyboardInterrupt
      try:  # os.write: print() could re-enter a write the signal interrupted
        os.write(2, b'\nCtrl-C: saving a checkpoint after this step (press Ctrl-C again to '
                 b'stop without saving).\n')
      except OSError:
        pass
    self.raised = True
    self.signum = self.signum or signum

  def restore(self) -> None:
    for signum, previous in self._previous.items():
      signal.signal(signum, previous)
    self._previous = {}

  def any_process(self) -> bool:
    """Whether any process got the signal (collective when there are several)."""
    if jax.process_count() == 1:
      return self.raised
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
    if self.signum is None and np.max(flags):
      self.signum = int(np.max(flags))
    return bool(np.max(flags))


def _write_model_info(path: str, trainer: trainer_lib.Trainer, model: Any) -> None:
  lines = [f'model: {type(model).__name__}', f'network: {model.network_config}',
           f'mesh: {trainer.partitioner.mesh_shape}', '', 'parameters (shape, mesh sharding):']
  flat = jax.tree_util.tree_flatten_with_path(trainer.abstract_params)[0]
  shardings = jax.tree_util.tree_leaves(trainer.param_shardings)
  total = 0
  for (key_path, leaf), sharding in zip(flat, shardings):
    total += int(np.prod(leaf.shape))
    name = jax.tree_util.keystr(key_path, simple=True, separator='/')
    lines.append(f'  {name:<70} {str(tuple(leaf.shape)):<18} {sharding.spec}')
  lines.insert(3, f'total parameters: {total:,}')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(lines) + '\n')


def _vocabulary_of(model: Any, vocabulary: Any):
  from padir.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  if vocabulary is not None:
    return vocab_lib.load_tokenizer(vocabulary)
  tokenizer = getattr(model, 'vocabulary', None)
  if tokenizer is None:
    raise ValueError('train needs the vocabulary: set padir.train.train.vocabulary (the '
                     'VOCABULARY macro) or build the model with padir.builders.build_model.')
  return tokenizer


def train(*,
          model: Any,
          train_dataset_cfg: datasets_lib.DatasetConfig,
          partitioner: partitioning_lib.Partitioner,
          optimizer: optimizers_lib.Optimizer,
          model_dir: str,
          total_steps: int,
          checkpoint_cfg: checkpoints_lib.CheckpointConfig = checkpoints_lib.CheckpointConfig(),
          train_eval_dataset_cfg: datasets_lib.DatasetConfig | None = None,
          infer_eval_dataset_cfg: datasets_lib.DatasetConfig | None = None,
          vocabulary: Any = None,
          eval_period: int = 1000,
          eval_steps: int | None = 20,
          infer_eval_examples: int | None = 256,
          decode_kwargs: Mapping[str, Any] | None = None,
          log_period: int = 100,
          random_seed: int = 0,
          num_microbatches: int = 1,
          tensorboard: bool = True,
          print_fn: Callable[[str], Any] = print,
          step_callback: StepCallback | None = None) -> TrainResult:
  """Trains ``model`` for ``total_steps`` steps, resuming from ``model_dir`` when possible.

  Args:
    model: a padir model (``MODEL``).
    train_dataset_cfg: the training data.
    partitioner: mesh and logical axis rules.
    optimizer: `padir.optimizers.Optimizer` (``OPTIMIZER``).
    model_dir: where checkpoints, configs and metrics go (``MODEL_DIR``).
    total_steps: train until this step (``TRAIN_STEPS``); a finished run does nothing.
    checkpoint_cfg: checkpoint period, retention, async, SIGTERM, initial params.
    train_eval_dataset_cfg: validation data for the loss (None: no validation loss).
    infer_eval_dataset_cfg: validation data to decode for BLEU / chrF (None: no decoding).
    vocabulary: the run's vocabulary (``VOCABULARY``); default: the model's.
    eval_period: evaluate every this many steps (and at the end).
    eval_steps: validation-loss batches per evaluation (None: the whole split).
    infer_eval_examples: examples decoded per evaluation (None: the whole split).
    decode_kwargs: keyword arguments of ``predict_batch_with_aux``.
    log_period: log training metrics every this many steps.
    random_seed: seeds parameter init, dropout and corruption (``RANDOM_SEED``).
    num_microbatches: gradient accumulation.
    tensorboard: write TensorBoard summaries (needs tensorboardX).
    print_fn: console output.
    step_callback: called on the chief process after every step as
      ``step_callback(step, metrics)``: ``metrics`` is the dict of training metrics logged at
      that step (loss, accuracy, rates; at log steps and the last step) and ``None`` at other
      steps. For progress bars and custom logging; it must not block for long.

  Returns:
    TrainResult.

  Raises:
    trainer.NonFiniteLossError: a NaN / Inf loss (no checkpoint is written after it).
    ValueError: bad configuration, data or checkpoints, with the fix in the message.
  """
  for name, value in (('total_steps', total_steps), ('eval_period', eval_period),
                      ('log_period', log_period)):
    if not isinstance(value, int) or value < 1:
      raise ValueError(f'padir.train.train.{name}={value!r} must be an integer >= 1.')
  if not model_dir:
    raise ValueError('MODEL_DIR is empty; set --gin.MODEL_DIR="\'/path/to/run\'".')
  is_chief = jax.process_index() == 0
  model_dir = os.path.abspath(os.path.expanduser(model_dir))
  if is_chief:
    os.makedirs(model_dir, exist_ok=True)
  tokenizer = _vocabulary_of(model, vocabulary)

  train_iter = datasets_lib.make_iterator(train_dataset_cfg, vocabulary=tokenizer)
  input_shapes = datasets_lib.global_shapes(train_iter)
  trainer = trainer_lib.Trainer(model, optimizer, partitioner, input_shapes, seed=random_seed,
                                num_microbatches=num_microbatches)
  partitioner.check_process_rows(trainer.batch_size)
  predictor = None
  if infer_eval_dataset_cfg is not None:
    partitioner.check_batch_size(infer_eval_dataset_cfg.batch_size, 'infer_eval batch_size')
    predictor = evaluation.Predictor(model, partitioner, trainer.param_shardings, decode_kwargs,
                                     seed=random_seed)
  if train_eval_dataset_cfg is not None:
    partitioner.check_batch_size(train_eval_dataset_cfg.batch_size, 'train_eval batch_size')

  ckpt = checkpoints_lib.CheckpointManager(model_dir, keep=checkpoint_cfg.keep,
                                           async_save=checkpoint_cfg.async_save)
  abstract = trainer.abstract_state()
  try:
    restored = ckpt.restore_latest(
        abstract.params, abstract.opt_state, vocabulary=tokenizer, gin_config=_gin_config_text(),
        start_over_if_unreadable=checkpoint_cfg.start_over_if_unreadable, report=print_fn)
  except BaseException:
    ckpt.close()
    raise
  if restored is not None:
    state = trainer.state_from(restored.step, restored.params, restored.opt_state)
    if restored.data_state:
      train_iter.set_state(restored.data_state)
    print_fn(f'Resumed from {model_dir}/{restored.step} (step {restored.step}).')
  elif checkpoint_cfg.init_from:
    from padir import init_from as init_from_lib  # pylint: disable=g-import-not-at-top
    state = trainer.init_state()
    params, summary = init_from_lib.init_params(
        checkpoint_cfg.init_from, state.params, vocabulary=tokenizer,
        network_config=getattr(model, 'network_config', None))
    state = trainer.state_from(0, params, state.opt_state)
    print_fn(summary.describe())
  else:
    state = trainer.init_state()
  step = int(jax.device_get(state.step))
  if is_chief:  # only now: a refused checkpoint keeps the config.gin it was trained with
    gin_utils.write_config(model_dir, 'config.gin')
    _write_model_info(os.path.join(model_dir, 'model-info.txt'), trainer, model)
    gin_utils.write_config(model_dir, 'operative_config.gin', operative=True)

  def metadata(at_step: int) -> dict[str, Any]:
    return checkpoints_lib.make_metadata(
        at_step, tokenizer.fingerprint(), trainer.abstract_params,
        abstract_opt_state=abstract.opt_state,
        extra={'model': type(model).__name__,
               'network_config': dataclasses.asdict(model.network_config),
               'input_shapes': {k: list(v) for k, v in input_shapes.items()},
               'gin_config': _gin_config_text()})

  if step >= total_steps:
    print_fn(f'{model_dir} is already at step {step} >= TRAIN_STEPS={total_steps}; nothing to '
             'do.')
    ckpt.close()
    return TrainResult(step, False, {}, {}, state)

  trainer.compile()
  buckets = datasets_lib.bucket_shapes(train_iter)
  for shapes in buckets:  # length buckets: one step per width, compiled before the clock starts
    trainer.compile(shapes)
  widths = ''
  if buckets:
    widths = ', length buckets ' + '/'.join(
        str(max(shape[1] for shape in shapes.values())) for shapes in buckets + [input_shapes])
  print_fn(f'Compiled the train step in {trainer.compile_seconds:.1f}s; training from step '
           f'{step} to {total_steps} (batch {trainer.batch_size}, mesh '
           f'{partitioner.mesh_shape}{widths}).')
  writer = summaries.MetricWriter(model_dir, tensorboard=tensorboard, print_fn=print_fn,
                                  start_step=step)
  progress = summaries.Progress(step, total_steps)
  window = trainer_lib.MetricsAccumulator()
  flag = _SignalFlag(checkpoint_cfg.save_on_sigterm)
  last_train: dict[str, float] = {}
  last_eval: dict[str, float] = {}
  last_saved = step if restored is not None else None
  stopped = False

  def flush() -> dict[str, float] | None:
    nonlocal last_train
    if not len(window):
      return None
    metrics, losses = window.reduce()
    trainer_lib.check_finite(losses)
    tokens = metrics.get('num_input_tokens', 0.0) + metrics.get('num_target_tokens', 0.0)
    rates = progress.window(step, tokens)
    metrics.update(rates)
    writer.write_scalars(step, 'train', metrics)
    if is_chief:
      print_fn(progress.line(step, metrics, rates))
    last_train = metrics
    return metrics

  def save() -> None:
    nonlocal last_saved
    if last_saved == step:
      return
    flush()  # raises on a non-finite loss: a bad state is never saved
    ckpt.save(step, state.params, state.opt_state, train_iter.get_state(), metadata(step))
    last_saved = step

  try:
    while step < total_steps:
      try:
        batch = next(train_iter)
      except StopIteration:
        raise ValueError(
            f'The training data ran out at step {step} (num_epochs='
            f'{train_dataset_cfg.num_epochs}); set num_epochs=None to repeat it.') from None
      state, metrics = trainer.train_step(state, batch)
      step += 1
      window.add(step, metrics)
      last_step = step == total_steps
      logged = flush() if step % log_period == 0 or last_step else None
      if step_callback is not None and is_chief:
        step_callback(step, logged)
      if step % eval_period == 0 or last_step:
        start = time.time()
        flush()
        last_eval = _evaluate(trainer, state.params, tokenizer, predictor,
                              train_eval_dataset_cfg, infer_eval_dataset_cfg, eval_steps,
                              infer_eval_examples, writer, step, print_fn)
        progress.pause(time.time() - start)
      if step % checkpoint_cfg.period == 0 or last_step:
        start = time.time()
        save()
        progress.pause(time.time() - start)
      check_signal = jax.process_count() == 1 or step % log_period == 0
      if checkpoint_cfg.save_on_sigterm and check_signal and flag.any_process():
        save()
        print_fn(f'{flag.name}: saved a checkpoint at step {step} and stopped; rerun the same '
                 'command to resume.')
        stopped = True
        break
  finally:
    flag.restore()
    ckpt.close()  # waits for pending saves (all of finite states)
    writer.close()
  if is_chief:
    gin_utils.write_config(model_dir, 'operative_config.gin', operative=True)
  return TrainResult(step, stopped, last_train, last_eval, state,
                     stop_signal=flag.signum if stopped else None)


def _gin_config_text() -> str:
  import gin  # pylint: disable=g-import-not-at-top
  return gin.config_str()


def _evaluate(trainer, params, tokenizer, predictor, loss_cfg, infer_cfg, eval_steps,
              infer_examples, writer, step, print_fn) -> dict[str, float]:
  """Validation loss and decoding scores at ``step``; logs and returns them."""
  results: dict[str, float] = {}
  if loss_cfg is not None:
    it = datasets_lib.make_iterator(loss_cfg, vocabulary=tokenizer, shuffle=False, num_epochs=1,
                                    drop_remainder=False)
    metrics = evaluation.evaluate_loss(trainer.eval_step, params, it, eval_steps)
    results.update(metrics)
  if predictor is not None:
    it = datasets_lib.make_iterator(infer_cfg, vocabulary=tokenizer, shuffle=False, num_epochs=1,
                                    drop_remainder=False)
    rows, stats = evaluation.decode_split(predictor, params, it, tokenizer, infer_examples,
                                          texts=datasets_lib.export_texts(infer_cfg))
    results.update(stats)
    results.update(evaluation.translation_scores(rows, print_fn=None))
    if rows:
      sample = '\n\n'.join(f'source: {r.source}\nreference: {r.reference}\nprediction: '
                           f'{r.prediction}' for r in rows[:3])
      writer.write_text(step, 'eval', 'samples', sample)
  if results:
    writer.write_scalars(step, 'eval', results)
    if jax.process_index() == 0:
      shown = ', '.join(f'{k} {results[k]:.4g}' for k in ('loss', 'accuracy', 'bleu', 'chrf',
                                                          'mean_iterations') if k in results)
      print_fn(f'eval at step {step}: {shown}')
  return results


train = gin_utils.configurable(train, module='padir.train')


def _parser(prog: str, doc: str) -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog=prog, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter,
      epilog='Gin flags: --gin_file=F (repeatable), --gin.NAME=VALUE, '
      '--gin_bindings="NAME = VALUE", --gin_search_paths=A,B. See docs/gin.md.')
  parser.add_argument('--coordinator_address', default=None,
                      help='HOST:PORT of process 0 (multi-process runs; or '
                      'PADIR_COORDINATOR_ADDRESS)')
  parser.add_argument('--num_processes', type=int, default=None,
                      help='number of processes (or PADIR_NUM_PROCESSES)')
  parser.add_argument('--process_id', type=int, default=None,
                      help='this process (or PADIR_PROCESS_ID)')
  parser.add_argument(errors.DEBUG_FLAG, action='store_true',
                      help=f'show full tracebacks of errors (or {errors.DEBUG_ENV}=1)')
  return parser


def run_main(argv: Sequence[str] | None, entry: Callable[[], Any], prog: str, doc: str) -> int:
  """Shared ``main`` of train / eval / infer / distill: flags -> distributed -> gin -> entry().

  User mistakes print one or two lines (see `padir.errors`); ``--debug`` shows tracebacks.
  """
  argv = errors.pop_debug_flag(sys.argv[1:] if argv is None else argv)
  parser = _parser(prog, doc)
  if any(a in ('-h', '--help') for a in argv):
    parser.print_help()
    return 0
  try:
    gin_args = gin_utils.split_gin_args(argv)
    flags = parser.parse_args(gin_args.rest)
  except gin_utils.GinFlagError as err:
    print(f'{prog}: {err}', file=sys.stderr)
    return 2

  def body() -> None:
    distributed.initialize(flags.coordinator_address, flags.num_processes, flags.process_id)
    gin_utils.parse_command_line(argv)
    entry()

  return errors.call(body, prog)


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m padir.train`` / ``padir train``."""
  result: list[TrainResult] = []
  code = run_main(argv, lambda: result.append(train()), 'padir train', __doc__)
  if code == 0 and result and result[0].stopped_by_signal:
    return 128 + int(result[0].stop_signal or signal.SIGTERM)  # 143 SIGTERM, 130 Ctrl-C
  return code


if __name__ == '__main__':
  sys.exit(main())
