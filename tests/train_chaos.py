"""Chaos runner for ``test_train_cli``: kill -9 a tiny training run at random steps, then finish.

Run as ``python tests/train_chaos.py SPEC_JSON``. The runner imports padir once (no JAX backend
is started in it) and forks one child per training attempt, so an attempt costs the train step's
compilation (from the persistent compilation cache) but no interpreter start or imports:

1. an uninterrupted run into ``straight``;
2. ``kills`` runs into ``chaos``, each killed with SIGKILL as soon as it logs step ``target``
   (distinct random targets in increasing order, so every attempt gets further);
3. one run interrupted by SIGINT (Ctrl-C) at step ``ctrl_c``, which must save and exit 130;
4. a final run that must finish.

Prints one JSON line: what every attempt resumed from and where it stopped.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sys
import traceback


def _attempt(train_main, flags: list[str], stop_at: int | None = None,
             signum: int = signal.SIGKILL) -> dict:
  """Trains in a forked child; sends ``signum`` once it logs step ``stop_at`` or later."""
  read_fd, write_fd = os.pipe()
  pid = os.fork()
  if pid == 0:  # the child: train with stdout and stderr into the pipe
    os.close(read_fd)
    os.dup2(write_fd, 1)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    sys.stdout = os.fdopen(1, 'w', buffering=1, closefd=False)
    sys.stderr = sys.stdout
    try:
      code = train_main(flags)
    except BaseException:  # pylint: disable=broad-except
      traceback.print_exc()
      code = 1
    sys.stdout.flush()
    os._exit(code)  # pylint: disable=protected-access
  os.close(write_fd)
  lines, resumed, stopped_at = [], 0, None
  with os.fdopen(read_fd, errors='replace') as pipe:
    for line in pipe:
      lines.append(line)
      if line.startswith('Resumed from'):
        resumed = int(line.rsplit('(step ', 1)[1].split(')')[0])
      if line.startswith('step ') and stop_at is not None and stopped_at is None:
        step = int(line.split()[1].split('/')[0])
        if step >= stop_at:
          stopped_at = step
          os.kill(pid, signum)
          if signum == signal.SIGKILL:
            break
  _, status = os.waitpid(pid, 0)
  code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
  return {'code': code, 'resumed': resumed, 'stopped_at': stopped_at,
          'tail': ''.join(lines[-5:])}


def main(spec: dict) -> int:
  sys.modules['tensorflow'] = None  # the exported-array path, without TensorFlow
  sys.modules['seqio'] = None
  from padir import train  # pylint: disable=g-import-not-at-top
  steps = spec['steps']
  flags = lambda d: [*spec['flags'], f"--gin.MODEL_DIR='{d}'", f'--gin.TRAIN_STEPS={steps}']
  summary = {'straight': _attempt(train.main, flags(spec['straight']))}
  rng = random.Random(spec['seed'])
  targets = sorted(rng.sample(range(1, steps - 1), spec['kills']))
  summary['kills'] = [_attempt(train.main, flags(spec['chaos']), t) for t in targets]
  summary['ctrl_c'] = _attempt(train.main, flags(spec['chaos']), targets[-1] + 1, signal.SIGINT)
  summary['final'] = _attempt(train.main, flags(spec['chaos']))
  summary['targets'] = targets
  print(json.dumps(summary))
  return 0


if __name__ == '__main__':
  sys.exit(main(json.loads(sys.argv[1])))
