"""The ``padir`` console script: one entry point, one subcommand per job.

``padir <command> [flags]`` runs ``python -m padir.<module>`` for that command with the same
flags, so ``padir train --gin_file=F`` and ``python -m padir.train --gin_file=F`` are the same.
Every command prints one or two lines for a user mistake (`padir.errors`); ``--debug`` or
``PADIR_DEBUG=1`` shows the full traceback.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Sequence

from padir import errors

# command -> (module with a main(argv) function, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    'demo': ('padir.demo', 'tiny AR and PaDIR forward passes on the embedded corpus'),
    'train': ('padir.train', 'train a model from gin files (T5X-style flags)'),
    'eval': ('padir.eval', 'metrics of a checkpoint on a task split'),
    'infer': ('padir.infer', 'decode a task split or a text file into a TSV'),
    'translate': ('padir.translate', 'translate stdin (or a file) with a trained model dir'),
    'distill': ('padir.distill', 'decode a training set with a teacher into a distilled task'),
    'average': ('padir.average_checkpoints', 'average the last N checkpoints of a run'),
    'bench': ('padir.bench', 'speed benchmarks (decode, train, data)'),
    'launch': ('padir.launch.__main__', 'run training on a TPU pod, SLURM cluster or local processes'),
    'analyze': ('padir.analysis', 'error modes of a set of decodes'),
    'plan': ('padir.plan_cli', 'memory, FLOPs and collectives of the train / decode steps on a pod '
             '(compiled on simulated devices)'),
    'quickstart': ('padir.quickstart', 'AR teacher -> distillation -> PaDIR student report'),
}


def available_commands() -> dict[str, tuple[str, str]]:
  """The commands whose module is installed in this version of padir."""
  return {name: spec for name, spec in COMMANDS.items()
          if importlib.util.find_spec(spec[0]) is not None}


def _usage(commands: dict[str, tuple[str, str]]) -> str:
  lines = ['usage: padir <command> [flags]', '', 'commands:']
  lines += [f'  {name:<11} {text}' for name, (_, text) in commands.items()]
  lines += ['', "Run 'padir <command> --help' for a command's flags; add --debug (or set "
            f"{errors.DEBUG_ENV}=1) for full tracebacks of errors."]
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Dispatches ``padir <command> ...`` to the command's module."""
  argv = errors.pop_debug_flag(sys.argv[1:] if argv is None else argv)
  commands = available_commands()
  if not argv or argv[0] in ('-h', '--help', 'help'):
    print(_usage(commands))
    return 0
  name, rest = argv[0], argv[1:]
  if name not in commands:
    print(f"padir: unknown command {name!r}.\n\n{_usage(commands)}", file=sys.stderr)
    return 2
  prog = f'padir {name}'
  return errors.call(lambda: importlib.import_module(commands[name][0]).main(rest), prog)


if __name__ == '__main__':
  sys.exit(main())
