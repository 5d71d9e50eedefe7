"""``python -m padir.launch {tpu,slurm,local} [launcher flags] -- [trainer flags]``."""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from padir import errors
from padir.launch import local, slurm, tpu

_LAUNCHERS = {'tpu': tpu, 'slurm': slurm, 'local': local}


@errors.command('padir launch')
def main(argv: Sequence[str] | None = None) -> int:
  argv = list(sys.argv[1:] if argv is None else argv)
  launcher_args, trainer_args = argv, []
  if '--' in argv:
    cut = argv.index('--')
    launcher_args, trainer_args = argv[:cut], argv[cut + 1:]
  parser = argparse.ArgumentParser(prog='padir launch',
                                   description='Run the padir trainer on a pod or cluster.',
                                   epilog='Trainer flags go after "--".')
  sub = parser.add_subparsers(dest='launcher', required=True)
  for name, module in _LAUNCHERS.items():
    p = sub.add_parser(name, help=module.__doc__.splitlines()[0])
    p.add_argument('--dry_run', action='store_true', help='print the commands, run nothing')
    module.add_arguments(p)
  args = parser.parse_args(launcher_args)
  try:
    return _LAUNCHERS[args.launcher].run(args, trainer_args)
  except ValueError as e:
    print(f'padir launch: {e}', file=sys.stderr)
    return 2


if __name__ == '__main__':
  sys.exit(main())
