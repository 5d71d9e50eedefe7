r"""Decodes a task split or a plain text file into a TSV: ``python -m padir.infer``.

  # a split of the run's task (or export):
  python -m padir.infer \
    --gin_file=gin/experiments/bible_es_en_padir.gin --gin_file=gin/runs/infer.gin \
    --gin.CHECKPOINT_PATH="'/tmp/bible_padir'" --gin.INFER_OUTPUT_DIR="'/tmp/bible_infer'"

  # a text file, one source sentence per line:
  ... --gin.INFER_INPUT_FILE="'/tmp/sources.txt'"

A text file is split at newlines only (`padir.data.textfile`: not at U+2028, form feeds and
the like; a trailing ``\r`` and a byte order mark are removed), and the TSV has one row per
input line, in order; an empty (or whitespace-only) line gets an empty prediction.

Writes ``INFER_OUTPUT_DIR/<name>-<step>.tsv`` with a header row: ``source``, ``reference`` (for
splits) and ``prediction``. Sources longer than the model's input length are cut (the count is
printed).
"""

from __future__ import annotations

import os
import sys
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import numpy as np

from padir import datasets as datasets_lib
from padir import eval as eval_lib
from padir import evaluation
from padir import gin_utils
from padir import partitioning as partitioning_lib
from padir import train as train_lib
from padir.data import textfile
from padir.special_ids import EOS_ID


def encode_lines(lines: Sequence[str], tokenizer: Any, length: int) -> tuple[np.ndarray, int]:
  """Source lines -> int32 [N, length] (EOS appended, cut to length); returns (array, cut)."""
  out = np.zeros((len(lines), length), np.int32)
  cut = 0
  for i, line in enumerate(lines):
    ids = tokenizer.encode(line.rstrip('\n'))
    if len(ids) + 1 > length:
      ids = ids[:length - 1]
      cut += 1
    ids = ids + [EOS_ID]
    out[i, :len(ids)] = ids
  return out, cut


def _file_batches(sources: np.ndarray, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
  """This process's rows of global batches of ``sources`` (the last one padded with empty rows)."""
  per_process = batch_size // jax.process_count()
  start = jax.process_index() * per_process
  for offset in range(0, len(sources), batch_size):
    block = sources[offset:offset + batch_size]
    if len(block) < batch_size:
      block = np.pad(block, ((0, batch_size - len(block)), (0, 0)))
    yield {'encoder_input_tokens': block[start:start + per_process]}


def infer(*,
          model: Any,
          checkpoint_path: str,
          partitioner: partitioning_lib.Partitioner,
          output_dir: str,
          task_feature_lengths: Mapping[str, int],
          dataset_cfg: datasets_lib.DatasetConfig | None = None,
          input_file: str | None = None,
          batch_size: int = 64,
          vocabulary: Any = None,
          num_examples: int | None = None,
          decode_kwargs: Mapping[str, Any] | None = None,
          random_seed: int = 0,
          print_fn: Callable[[str], Any] = print) -> str:
  """Decodes ``input_file`` (one source per line) or ``dataset_cfg``'s split into a TSV.

  Args:
    model: the model (``MODEL``).
    checkpoint_path: a model dir (newest checkpoint) or a step dir (``CHECKPOINT_PATH``).
    partitioner: mesh and rules.
    output_dir: where the TSV goes (``INFER_OUTPUT_DIR``).
    task_feature_lengths: ``{'inputs': L_in, 'targets': L}`` (text sources are cut to L_in).
    dataset_cfg: the split to decode when no ``input_file`` is given.
    input_file: a UTF-8 text file, one source per line (``INFER_INPUT_FILE``).
    batch_size: global batch size for ``input_file`` (a split uses its config's).
    vocabulary: the run's vocabulary (default: the model's).
    num_examples: decode at most this many (None: all).
    decode_kwargs: keyword arguments of ``predict_batch_with_aux``.
    random_seed: key of sampling decoders.
    print_fn: console output.

  Returns:
    The TSV's path.
  """
  if not output_dir:
    raise ValueError('INFER_OUTPUT_DIR is empty; set --gin.INFER_OUTPUT_DIR="\'/path\'".')
  if input_file is None and dataset_cfg is None:
    raise ValueError('Nothing to decode: set INFER_INPUT_FILE or the infer dataset '
                     '(padir.infer.infer.dataset_cfg).')
  tokenizer = train_lib._vocabulary_of(model, vocabulary)  # pylint: disable=protected-access
  length = int(task_feature_lengths['inputs'])
  if input_file is not None:
    if not os.path.isfile(input_file):
      raise ValueError(f'INFER_INPUT_FILE {input_file} does not exist.')
    partitioner.check_batch_size(batch_size, 'infer batch_size')
    lines = textfile.read_lines(input_file)
    if num_examples is not None:
      lines = lines[:num_examples]
    nonempty = [i for i, line in enumerate(lines) if line.strip()]
    if not nonempty:
      raise ValueError(f'{input_file} has no text to decode (no line holds more than spaces).')
    sources, cut = encode_lines([lines[i] for i in nonempty], tokenizer, length)
    if cut:
      print_fn(f'{cut} of {len(nonempty)} sources were longer than {length - 1} tokens and were '
               'cut.')
    batches = _file_batches(sources, batch_size)
    name = os.path.splitext(os.path.basename(input_file))[0]
    input_shapes = {'encoder_input_tokens': (batch_size, length)}
  else:
    partitioner.check_batch_size(dataset_cfg.batch_size, 'infer batch_size')
    batches = datasets_lib.make_iterator(dataset_cfg, vocabulary=tokenizer, shuffle=False,
                                         num_epochs=1, drop_remainder=False)
    name = f'{os.path.basename(os.path.normpath(dataset_cfg.source))}-{dataset_cfg.split}'
    input_shapes = datasets_lib.global_shapes(batches)
  input_shapes = dict(input_shapes)
  input_shapes.setdefault('decoder_target_tokens',
                          (input_shapes['encoder_input_tokens'][0],
                           int(task_feature_lengths['targets'])))
  params, shardings, step = eval_lib.load_for_inference(model, partitioner, checkpoint_path,
                                                        tokenizer, input_shapes)
  predictor = evaluation.Predictor(model, partitioner, shardings, decode_kwargs,
                                   seed=random_seed)
  texts = datasets_lib.export_texts(dataset_cfg) if input_file is None else None
  rows, stats = evaluation.decode_split(predictor, params, batches, tokenizer, num_examples,
                                        texts=texts)
  if input_file is not None:  # one row per input line, in order; an empty line stays empty
    decoded = rows[:len(nonempty)]
    rows = [evaluation.DecodedRow(line, [], '', []) for line in lines]
    for i, row in zip(nonempty, decoded):
      row.source = lines[i]  # the original text, not the detokenized (possibly cut) ids
      rows[i] = row
  path = os.path.join(output_dir, f'{name}-{step}.tsv')
  if jax.process_index() == 0:
    os.makedirs(output_dir, exist_ok=True)
    eval_lib.write_rows_tsv(path, rows)
    print_fn(f'Decoded {len(rows)} examples with {checkpoint_path} (step {step}) in '
             f'{stats["decode_seconds"]:.1f}s -> {path}')
  return path


infer = gin_utils.configurable(infer, module='padir.infer')


def main(argv: Sequence[str] | None = None) -> int:
  """``python -m padir.infer`` / ``padir infer``."""
  return train_lib.run_main(argv, infer, 'padir infer', __doc__)


if __name__ == '__main__':
  sys.exit(main())
