r"""Metrics of a checkpoint on a task split: ``python -m padir.eval`` (or ``padir eval``).

  python -m padir.eval \
    --gin_file=gin/experiments/bible_es_en_padir.gin --gin_file=gin/runs/eval.gin \
    --gin.CHECKPOINT_PATH="'/tmp/bible_padir'" --gin.EVAL_OUTPUT_DIR="'/tmp/bible_eval'"

Loads only the params (newest checkpoint of a model dir, or one step dir), checks the
vocabulary against the checkpoint's, computes the validation loss (``eval_fn``) and, when the
model decodes, BLEU / chrF of the decoded split; prints them and writes
``EVAL_OUTPUT_DIR/eval-<split>-<step>.json`` (plus the decoded rows as a TSV).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Callable, Mapping, Sequence

import jax
import optax

from padir import checkpoints as checkpoints_lib
from padir import datasets as datasets_lib
from padir import evaluation
from padir import gin_utils
from padir import optimizers as optimizers_lib
from padir import partitioning as partitioning_lib
from padir import train as train_lib
from padir import trainer as trainer_lib


def abstract_params(model: Any, partitioner: partitioning_lib.Partitioner,
                    input_shapes: Mapping[str, tuple[int, ...]]) -> tuple[Any, Any]:
  """(abstract params, their NamedShardings on the partitioner's mesh); nothing is allocated."""
  init_shapes = {k: (partitioner.batch_shards,) + tuple(v[1:]) for k, v in input_shapes.items()}
  with partitioner.context():
    logical = model.get_logical_axes(init_shapes)
  abstract = jax.eval_shape(
      lambda key: model.get_initial_variables(key, init_shapes).params, jax.random.key(0))
  return abstract, partitioner.param_shardings(logical, abstract)


def load_for_inference(model: Any, partitioner: partitioning_lib.Partitioner,
                       checkpoint_path: str, tokenizer: Any,
                       input_shapes: Mapping[str, tuple[int, ...]],
                       step: int | None = None) -> tuple[Any, Any, int]:
  """Params-only restore into the partitioner's shardings: (params, param_shardings, step).

  ``step`` picks a checkpoint of a model dir (default: the newest).
  """
  abstract, shardings = abstract_params(model, partitioner, input_shapes)
  target = jax.tree_util.tree_map(
      lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract, shardings)
  params, _, step = checkpoints_lib.load_params(checkpoint_path, target, step=step,
                                                vocabulary=tokenizer)
  return params, shardings, step


def write_rows_tsv(path: str, rows: Sequence[evaluation.DecodedRow]) -> None:
  """A header, then source / reference / prediction per line.

  Whitespace runs (tabs and newlines included) in the texts become single spaces, so every
  line has exactly one tab between columns; nothing else is quoted or escaped. The reference
  column (the first reference) is left out when no row has one.
  """
  clean = lambda t: '' if t is None else ' '.join(str(t).split())
  has_ref = any(r.reference is not None for r in rows)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('source\treference\tprediction\n' if has_ref else 'source\tprediction\n')
    for r in rows:
      cells = [r.source, r.reference, r.prediction] if has_ref else [r.source, r.prediction]
      f.write('\t'.join(clean(c) for c in cells) + '\n')


def evaluate(*,
             model: Any,
             dataset_cfg: datasets_lib.DatasetConfig,
             checkpoint_path: str,
             partitioner: partitioning_lib.Partitioner,
             output_dir: str | None = None,
             vocabulary: Any = None,
             eval_steps: int | None = None,
             decode: bool = True,
             num_decode_examples: int | None = None,
             decode_kwargs: Mapping[str, Any] | None = None,
             random_seed: int = 0,
             print_fn: Callable[[str], Any] = print) -> dict[str, float]:
  """Validation loss and (with ``decode``) BLEU / chrF of a checkpoint on one split.

  Args:
    model: the model (``MODEL``), the same config the checkpoint was trained with.
    dataset_cfg: the split to evaluate.
    checkpoint_path: a model dir (newest checkpoint) or a step dir (``CHECKPOINT_PATH``).
    partitioner: mesh and rules.
    output_dir: where the JSON metrics and decoded TSV go (None: print only).
    vocabulary: the run's vocabulary (default: the model's).
    eval_steps: loss batches (None: the whole split).
    decode: also decode the split and score it.
    num_decode_examples: examples to decode (None: all).
    decode_kwargs: keyword arguments of ``predict_batch_with_aux``.
    random_seed: key of the corruption (loss) and of sampling decoders.
    print_fn: console output.

  Returns:
    The metrics (``step`` included).
  """
  tokenizer = train_lib._vocabulary_of(model, vocabulary)  # pylint: disable=protected-access
  it = datasets_lib.make_iterator(dataset_cfg, vocabulary=tokenizer, shuffle=False,
                                  num_epochs=1, drop_remainder=False)
  partitioner.check_batch_size(dataset_cfg.batch_size, 'eval batch_size')
  input_shapes = datasets_lib.global_shapes(it)
  params, shardings, step = load_for_inference(model, partitioner, checkpoint_path, tokenizer,
                                               input_shapes)
  # A Trainer with a stateless optimizer, used only for its eval step.
  trainer = trainer_lib.Trainer(model, _identity_optimizer(), partitioner, input_shapes,
                                seed=random_seed)
  metrics = {'step': float(step)}
  loss = evaluation.evaluate_loss(trainer.eval_step, params, it, eval_steps)
  metrics.update(loss)
  rows = []
  if decode:
    predictor = evaluation.Predictor(model, partitioner, shardings, decode_kwargs,
                                     seed=random_seed)
    it = datasets_lib.make_iterator(dataset_cfg, vocabulary=tokenizer, shuffle=False,
                                    num_epochs=1, drop_remainder=False)
    rows, stats = evaluation.decode_split(predictor, params, it, tokenizer, num_decode_examples,
                                          texts=datasets_lib.export_texts(dataset_cfg))
    metrics.update(stats)
    metrics.update(evaluation.translation_scores(
        rows, print_fn=print_fn if jax.process_index() == 0 else None))
  if jax.process_index() == 0:
    shown = ', '.join(f'{k} {v:.4g}' for k, v in sorted(metrics.items()))
    print_fn(f'{checkpoint_path} (step {step}) on {dataset_cfg.source}/{dataset_cfg.split}: '
             f'{shown}')
    if output_dir:
      os.makedirs(output_dir, exist_ok=True)
      name = f'eval-{dataset_cfg.split}-{step}'
      with open(os.path.join(output_dir, name + '.json'), 'w', encoding='utf-8') as f:
        json.dump({'checkpoint': os.path.abspath(checkpoint_path), 'step': step,
                   'source': dataset_cfg.source, 'split': dataset_cfg.split,
                   'metrics': metrics}, f, indent=2, sort_keys=True)
        f.write('\n')
      if rows:
        write_rows_tsv(os.path.join(output_dir, name + '.tsv'), rows)
  return metrics


def _identity_optimizer() -> optimizers_lib.Optimizer:
  return optimizers_lib.Optimizer(optax.identity(), optax.constant_schedule(0.0))


evaluate = gin_utils.configurable(evaluate, module='padir.eval')


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m padir.eval`` / ``padir eval``."""
  return train_lib.run_main(argv, evaluate, 'padir eval', __doc__)


if __name__ == '__main__':
  sys.exit(main())
