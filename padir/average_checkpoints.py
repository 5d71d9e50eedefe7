r"""Averages the parameters of the last N checkpoints of a run (NAR MT practice).

  python -m padir.average_checkpoints --model_dir=/runs/wmt14_ende_padir \
      --output_dir=/runs/wmt14_ende_padir_avg5 --num_checkpoints=5

writes a params-only checkpoint at the newest averaged step into OUTPUT_DIR; evaluate or decode
it like any other (``--gin.CHECKPOINT_PATH="'/runs/wmt14_ende_padir_avg5'"``). ``--steps=A,B,C``
picks the steps instead.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from padir import checkpoints
from padir import errors


@errors.command('padir average')
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m padir.average_checkpoints',
                                   description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--model_dir', required=True, help='the run whose checkpoints to average')
  parser.add_argument('--output_dir', required=True, help='where the averaged checkpoint goes')
  parser.add_argument('--num_checkpoints', type=int, default=5,
                      help='average the newest N checkpoints (default 5)')
  parser.add_argument('--steps', default=None, help='comma-separated steps instead of the last N')
  args = parser.parse_args(argv)
  try:
    steps = [int(s) for s in args.steps.split(',') if s] if args.steps else None
  except ValueError:
    print(f'--steps={args.steps!r}: expected comma-separated integers.', file=sys.stderr)
    return 2
  try:
    step, used = checkpoints.average_checkpoints(args.model_dir, args.output_dir,
                                                 args.num_checkpoints, steps)
  except ValueError as err:
    print(f'average_checkpoints: {err}', file=sys.stderr)
    return 1
  print(f'Averaged steps {used} of {args.model_dir} -> {args.output_dir}/{step}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
