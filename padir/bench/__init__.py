"""Speed benchmarks: ``python -m padir.bench <name> [flags]`` (or ``padir bench <name>``).

Each benchmark is a module ``padir.bench.<name>`` with a ``main(argv)`` function; ``decode``
times AR and refinement decoding (`padir.bench.decode`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Sequence

BENCHMARKS = {
    'decode': 'latency (batch 1) and throughput (batch 64) of AR and PaDIR decoding',
}


def available() -> dict[str, str]:
  """Benchmarks whose module is present in this version of padir."""
  found = dict(BENCHMARKS)
  return {name: text for name, text in found.items()
          if importlib.util.find_spec(f'padir.bench.{name}') is not None}


def _usage() -> str:
  lines = ['usage: python -m padir.bench <benchmark> [flags]', '', 'benchmarks:']
  lines += [f'  {name:<8} {text}' for name, text in available().items()]
  return '\n'.join(lines)


def main(argv: Sequence[str] | None = None) -> int:
  """Runs the benchmark named by ``argv[0]`` with the remaining flags."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if not argv or argv[0] in ('-h', '--help', 'help'):
    print(_usage())
    return 0
  name, rest = argv[0], argv[1:]
  if name not in available():
    print(f'padir.bench: unknown benchmark {name!r}.\n\n{_usage()}', file=sys.stderr)
    return 2
  module = importlib.import_module(f'padir.bench.{name}')
  return int(module.main(rest) or 0)
