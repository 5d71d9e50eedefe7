"""Shared fixtures of the trainer tests: a tiny synthetic export and tiny-model gin flags."""

from __future__ import annotations

import os

import numpy as np

from padir.data import arrays as arrays_lib
from padir.data import vocab as vocab_lib

VOCABULARY = 'byte:8'
LENGTH = 8


def write_reverse_task(root: str, num_train: int = 64, num_validation: int = 16,
                       seed: int = 0) -> str:
  """Exports a reverse-the-sequence task (byte vocabulary) as arrays under ``root``."""
  rng = np.random.default_rng(seed)
  tokenizer = vocab_lib.load_tokenizer(VOCABULARY)
  fingerprint = tokenizer.fingerprint()
  for split, n in (('train', num_train), ('validation', num_validation)):
    enc = np.zeros((n, LENGTH), np.int32)
    dec = np.zeros((n, LENGTH), np.int32)
    for i in range(n):
      k = int(rng.integers(2, LENGTH - 1))
      tokens = rng.integers(3 + 97, 3 + 123, size=k)  # lowercase letters as bytes
      enc[i, :k], enc[i, k] = tokens, 1
      dec[i, :k], dec[i, k] = tokens[::-1], 1
    arrays_lib.write_split(
        os.path.join(root, split),
        {'encoder_input_tokens': enc, 'decoder_target_tokens': dec,
         'decoder_loss_weights': (dec > 0).astype(np.int32)},
        {'task': 'reverse', 'split': split, 'converter': 'padir',
         'task_feature_lengths': {'inputs': LENGTH, 'targets': LENGTH},
         'vocabulary': fingerprint})
    if split == 'validation':  # sources and two references per row (multi-reference BLEU)
      sources = [tokenizer.decode(row) for row in enc]
      refs = [[tokenizer.decode(row), tokenizer.decode(row).upper()] for row in dec]
      arrays_lib.write_text(os.path.join(root, split), sources, refs)
  return root


TINY_NETWORK = [
    '--gin.padir.builders.network_config.emb_dim=32',
    '--gin.padir.builders.network_config.num_heads=2',
    '--gin.padir.builders.network_config.head_dim=16',
    '--gin.padir.builders.network_config.mlp_dim=64',
    '--gin.padir.builders.network_config.num_encoder_layers=1',
    '--gin.padir.builders.network_config.num_decoder_layers=1',
]


def run_flags(run: str, data_dir: str, extra: list[str], objective: str = 'padir'
              ) -> list[str]:
  """Flags of ``padir eval`` / ``padir infer`` for a model trained with :func:`train_flags`."""
  return [
      '--gin_file=models/tiny.gin',
      f'--gin_file=objectives/{objective}.gin',
      f'--gin_file=runs/{run}.gin',
      *TINY_NETWORK,
      f"--gin.MIXTURE_OR_TASK_NAME='{data_dir}'",
      f"--gin.VOCABULARY='{VOCABULARY}'",
      f"--gin.TASK_FEATURE_LENGTHS={{'inputs': {LENGTH}, 'targets': {LENGTH}}}",
      *extra,
  ]


def train_flags(data_dir: str, model_dir: str, steps: int, *, objective: str = 'padir',
                batch_size: int = 8, period: int = 2, extra: list[str] | None = None
                ) -> list[str]:
  """Command-line flags of a tiny training run on the synthetic export."""
  return [
      '--gin_file=models/tiny.gin',
      f'--gin_file=objectives/{objective}.gin',
      '--gin_file=runs/train.gin',
      *TINY_NETWORK,
      f"--gin.MODEL_DIR='{model_dir}'",
      f'--gin.TRAIN_STEPS={steps}',
      f"--gin.MIXTURE_OR_TASK_NAME='{data_dir}'",
      f"--gin.VOCABULARY='{VOCABULARY}'",
      f"--gin.TASK_FEATURE_LENGTHS={{'inputs': {LENGTH}, 'targets': {LENGTH}}}",
      f'--gin.BATCH_SIZE={batch_size}',
      '--gin.EVAL_BATCH_SIZE=8',
      f'--gin.CHECKPOINT_PERIOD={period}',
      f'--gin.EVAL_PERIOD={max(steps, 1)}',
      '--gin.EVAL_STEPS=2',
      '--gin.LOG_PERIOD=1',
      '--gin.INFER_EVAL_EXAMPLES=8',
      *(extra or []),
  ]
