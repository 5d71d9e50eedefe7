"""Speed benchmarks: ``python -m padir.bench <name> [flags]`` (or ``padir bench <name>``).

Each benchmark is a module with a ``main(argv)`` function: ``decode`` times AR and refinement
decoding (`padir.bench.decode`), ``train`` the training step and its MFU (`padir.bench.train`),
``data`` the input pipeline (`padir.bench.data`), ``ops`` the kernel time of the main job's
decoders per source function (`padir.bench.ops`), ``scale`` the pod-scale plan table
(`padir.bench.scale`, compiled on simulated devices by `padir.plan`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import Sequence

from padir import errors

# name -> (module, what it measures)
BENCHMARKS = {
    'decode': ('padir.bench.decode',
               'latency (batch 1) and throughput (batch 64) of AR and PaDIR decoding'),
    'train': ('padir.bench.train', 'training tokens/s and MFU against a measured matmul peak'),
    'data': ('padir.bench.data', 'input pipeline examples/s (arrays and seqio)'),
    'ops': ('padir.bench.ops',
            "where the main job's batch-1 decoding time goes, per source function"),
    'scale': ('padir.bench.scale',
              'pod-scale plan table: padir plan over sizes x objectives x TPU / GPU slices'),
}


def available() -> dict[str, str]:
  """Benchmarks whose module is present in this version of padir."""
  return {name: text for name, (module, text) in BENCHMARKS.items()
          if importlib.util.find_spec(module) is not None}


def _usage() -> str:
  lines = ['usage: python -m padir.bench <benchmark> [flags]', '', 'benchmarks:']
  lines += [f'  {name:<8} {text}' for name, text in available().items()]
  return '\n'.join(lines)


@errors.command('padir bench')
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
  module = importlib.import_module(BENCHMARKS[name][0])
  return int(module.main(rest) or 0)
