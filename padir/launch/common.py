"""Pieces shared by the launchers: the trainer command line and running or printing commands."""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Sequence

DEFAULT_MODULE = 'padir.train'


def trainer_command(trainer_args: Sequence[str], python: str = 'python3',
                    module: str = DEFAULT_MODULE) -> list[str]:
  """The argument list that starts one trainer process."""
  if not trainer_args:
    raise ValueError('No trainer flags were given: put them after "--", e.g. '
                     '-- --gin_file=gin/experiments/bible_es_en_padir.gin '
                     "--gin.MODEL_DIR=\"'/tmp/run'\"")
  return [python, '-m', module, *trainer_args]


def quote(command: Sequence[str]) -> str:
  """A shell-safe rendering of an argument list."""
  return shlex.join([str(c) for c in command])


def run_or_print(commands: Sequence[Sequence[str]], dry_run: bool) -> int:
  """Runs the commands one after the other (stopping at the first failure) or prints them."""
  for command in commands:
    if dry_run:
      print(quote(command))
      continue
    print(f'+ {quote(command)}', file=sys.stderr, flush=True)
    rc = subprocess.call(list(command))
    if rc != 0:
      print(f'Command failed with exit code {rc}: {quote(command)}', file=sys.stderr)
      return rc
  return 0
