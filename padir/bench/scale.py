r"""The pod-scale table: `padir.plan` over models x objectives x slices, as markdown and JSON.

  python -m padir.bench scale --sizes=base,large,xl --objectives=padir,ar \
      --targets=v4-32,v5e-64,v5e-256,8xh100 --output=benchmarks/results/scale_plan

Every cell (size, objective, target) is one ``padir plan`` run in its own subprocess (its own
simulated device count, and its compiler memory is returned when it ends), with the paper
setting's batch and lengths and ``--mesh=auto`` unless ``--mesh`` is given. Each cell's JSON is
kept in ``--cells_dir``, so an interrupted table resumes where it stopped; a cell that fails or
runs past ``--cell_timeout`` is listed as not compiled, with the reason. ``--largest_batch``
and ``--decode_batch_size`` add compiles per cell (a second batch size, the decode step).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from typing import Any, Sequence

import numpy as np

from padir import plan as plan_lib
from padir import plan_cli

GIB = plan_lib.GIB


def cell_name(size: str, objective: str, target: str) -> str:
  return f'{size}_{objective}_{target}'


def _run_plan(name: str, flags: list[str], devices: int, path: str,
              args: argparse.Namespace) -> dict[str, Any]:
  """Runs ``padir.plan`` with ``flags`` in a subprocess (or reuses ``path``)."""
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  if args.cached_only:
    return {'error': 'not compiled in this run (compile time on the machine that made the '
                     'table)'}
  cmd = [sys.executable, '-m', 'padir.plan_cli', *flags, f'--json={path}']
  start = time.perf_counter()
  print(f'[{name}] {" ".join(cmd[1:])}', flush=True)
  try:
    proc = subprocess.run(cmd, env=plan_cli.subprocess_env(devices), capture_output=True,
                          text=True, timeout=args.cell_timeout, check=False)
  except subprocess.TimeoutExpired:
    result = {'error': f'not compiled within {args.cell_timeout:.0f} s on this machine'}
  else:
    if proc.returncode == 0 and os.path.exists(path):
      with open(path, encoding='utf-8') as f:
        result = json.load(f)
      result['wall_seconds'] = time.perf_counter() - start
      # XLA's SPMD partitioner warns when it must replicate a tensor to reshard it.
      result['spmd_full_rematerializations'] = proc.stderr.count(
          'Involuntary full rematerialization')
    else:
      tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ['no output']
      result = {'error': f'exit {proc.returncode}: {tail[0][:200]}'}
  with open(path, 'w', encoding='utf-8') as f:
    json.dump(result, f, indent=1)
  print(f'[{name}] done in {time.perf_counter() - start:.0f} s', flush=True)
  return result


def run_cell(size: str, objective: str, target: str, args: argparse.Namespace,
             cells_dir: str) -> dict[str, Any]:
  """Runs (or reuses) one cell: its train plan and, when asked, the decode step on its mesh.

  Returns:
    the train plan (with ``decode`` / ``decode_fits`` merged in) or ``{'error': ...}``.
  """
  name = cell_name(size, objective, target)
  _, devices = plan_lib.TARGETS[target]
  common = [f'--size={size}', f'--objective={objective}', f'--target={target}',
            f'--input_length={args.input_length}', f'--target_length={args.target_length}',
            f'--dtype={args.dtype}', f'--stages={args.stages}', f'--headroom={args.headroom}']
  result = _run_plan(name, common + [f'--batch_size={args.batch_size}', f'--mesh={args.mesh}',
                                     f'--largest_batch={args.largest_batch}'],
                     devices, os.path.join(cells_dir, name + '.json'), args)
  if args.decode_batch_size and 'train' in result:
    mesh = ','.join(str(m) for m in result['train']['mesh'])
    decode = _run_plan(name + '_decode', common + [
        '--train=false', f'--mesh={mesh}', f'--decode_batch_size={args.decode_batch_size}',
        f'--decode_iterations={args.decode_iterations}'], devices,
                       os.path.join(cells_dir, name + '_decode.json'), args)
    result = dict(result)
    if 'decode' in decode:
      result['decode'], result['decode_fits'] = decode['decode'], decode['decode_fits']
    else:
      result['decode_error'] = decode.get('error', 'no decode step')
  return result


def data_parallel_fits(cells: list[tuple[str, str, str, dict[str, Any]]]
                       ) -> dict[tuple[str, str], tuple[float, float]]:
  """(size, objective) -> (fixed bytes, bytes per example) of the data-parallel train step.

  A data-parallel step's per-device program depends only on the per-device batch, so the
  compiled data-parallel rows of one model on slices of different sizes are points of one line
  (peak against examples per device); a model needs two distinct points.
  """
  points: dict[tuple[str, str], dict[int, int]] = {}
  for size, objective, _, cell in cells:
    for key in ('train', 'train_second_batch'):
      step = cell.get(key)
      if not step or step['mesh'][1] != 1 or step['mesh'][2] != 1:
        continue
      per_device = step['batch_size'] // step['mesh'][0]
      points.setdefault((size, objective), {})[per_device] = step['peak_bytes']
  fits = {}
  for model, by_batch in points.items():
    if len(by_batch) < 2:
      continue
    slope, fixed = np.polyfit(list(by_batch), list(by_batch.values()), 1)
    fits[model] = (float(fixed), float(slope))
  return fits


def _largest_text(size: str, objective: str, target: str, cell: dict[str, Any],
                  fits: dict[tuple[str, str], tuple[float, float]]) -> str:
  largest = cell.get('largest_batch')
  if largest is not None:
    return 'not memory-bound' if largest < 0 else f'{largest:,}'
  mesh = cell['train']['mesh']
  if (size, objective) not in fits or mesh[1] != 1 or mesh[2] != 1:
    return '-'
  fixed, slope = fits[(size, objective)]
  per_device = int((cell['budget_bytes'] - fixed) // slope) if slope > 0 else 0
  return f'{max(per_device, 0) * mesh[0]:,} †'


def _remat_note(cell: dict[str, Any]) -> str:
  count = cell.get('spmd_full_rematerializations', 0)
  return f'; XLA replicated {count} tensor(s) to reshard them' if count else ''


def _gib(value: float) -> str:
  return f'{value / GIB:.2f}'


def _collectives(step: dict[str, Any]) -> str:
  parts = []
  for kind, stats in step['collectives'].items():
    if stats['count']:
      parts.append(f"{kind} {stats['count']} ({stats['bytes'] / GIB:.2f})")
  return ', '.join(parts) or 'none'


def table_rows(cells: list[tuple[str, str, str, dict[str, Any]]]) -> list[str]:
  """Markdown rows of the training table (one per cell)."""
  fits = data_parallel_fits(cells)
  rows = []
  for size, objective, target, cell in cells:
    device, devices = plan_lib.TARGETS[target]
    head = f'| {size} | {objective} | {target} ({devices} x {plan_lib.DEVICES[device]:.0f} GiB) |'
    if 'error' in cell:
      rows.append(head + f" {cell['error']} |" + ' |' * 9)
      continue
    train = cell['train']
    largest_text = _largest_text(size, objective, target, cell, fits)
    flops = f"{train['flops'] / 1e12:.1f}" if train['flops'] else 'n/a'
    rows.append(
        head + f" {tuple(train['mesh'])} | {cell['num_params'] / 1e6:,.0f}M | "
        f"{_gib(train['params_bytes'])} | {train['opt_state_bytes'] / GIB:.3f} | "
        f"{_gib(train['memory']['temp'])} | **{_gib(train['peak_bytes'])}** | "
        f"{'yes' if cell['fits'] else '**no**'} | {largest_text} | {flops} | "
        f"{_collectives(train)}{_remat_note(cell)} |")
  return rows


def decode_rows(cells: list[tuple[str, str, str, dict[str, Any]]]) -> list[str]:
  rows = []
  for size, objective, target, cell in cells:
    if 'decode_error' in cell:
      rows.append(f"| {size} | {objective} | {target} | {cell['decode_error']} |" + ' |' * 7)
    if 'decode' not in cell:
      continue
    step = cell['decode']
    flops = f"{step['flops'] / 1e12:.2f}" if step['flops'] else 'n/a'
    rows.append(f"| {size} | {objective} | {target} | {tuple(step['mesh'])} | "
                f"{step['batch_size']} | {_gib(step['params_bytes'])} | "
                f"{_gib(step['memory']['temp'])} | {_gib(step['peak_bytes'])} | "
                f"{'yes' if cell['decode_fits'] else '**no**'} | {flops} | "
                f'{_collectives(step)} |')
  return rows


def render(cells: list[tuple[str, str, str, dict[str, Any]]], args: argparse.Namespace,
           command: str) -> str:
  """The markdown report."""
  now = datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d')
  any_cell = next((c for *_, c in cells if 'spec' in c), None)
  jax_version = any_cell['jax_version'] if any_cell else '?'
  lines = [
      '# Pod-scale plan: T5.1.1 base / large / xl on TPU and GPU slices', '',
      f'Compiled {now} (jax {jax_version}) on simulated CPU devices, on a machine with '
      f'{os.cpu_count()} CPU cores, with:', '', '```',
      command, '```', '',
      *(['The XLA flags only lower the optimisation of the generated CPU machine code, to '
         'compile faster; the partitioning and the buffer assignment do not depend on them.',
         ''] if 'xla_backend_optimization_level' in command else []),
      f'Every row compiles the real train step (`padir.trainer.Trainer`: the model\'s loss, '
      f'Adafactor, state donated) from abstract shapes; nothing is allocated. Global batch '
      f'{args.batch_size} x ({args.input_length} + {args.target_length}) tokens, '
      f'{args.dtype} activations, float32 parameters, vocabulary 32,128 rows, PaDIR with '
      f'{args.stages} unrolled stages. Mesh `{args.mesh}`: '
      + ('the smallest tensor-parallel degree, then the smallest FSDP degree, whose compiled '
         'step fits; data parallel for the rest. ' if args.mesh == 'auto' else '')
      + f'"Fits" means peak <= {args.headroom:.0%} of the device memory.', '',
      'Per-device GiB. params / opt state: from the shardings (exact). temp / peak: XLA:CPU\'s '
      'buffer assignment of the partitioned program (peak = arguments + outputs - donated + '
      'temporaries). TPU and GPU compilers fuse and schedule differently, so read temp and peak '
      'as estimates; the shardings and the collectives are those of the same partitioned '
      'program. TFLOP: XLA\'s count for one device and one step. Collectives: count per step '
      '(GiB of results per device); in a data-parallel step they are the gradient all-reduces '
      '(and a few scalars for the metrics).', '',
      '| model | objective | slice | mesh (data, fsdp, tensor) | params | params GiB | '
      'opt state GiB | temp GiB | peak GiB | fits | largest batch | TFLOP/device | '
      'collectives |',
      '|---|---|---|---|---:|---:|---:|---:|---:|---|---:|---:|---|',
  ]
  lines += table_rows(cells)
  decode = decode_rows(cells)
  if decode:
    lines += ['', f'Decode step (`predict_batch_with_aux`: PaDIR refinement, '
              f'{args.decode_iterations} iterations, length beam 1; AR greedy), global batch '
              f'{args.decode_batch_size}, on the train step\'s mesh, parameters sharded as in '
              'training. The decode loop stops early, so its trip count is not known when '
              'compiling: collectives and FLOPs inside it are counted for one iteration (plus '
              'the encoder and the rest of the program once).', '',
              '| model | objective | slice | mesh | batch | params GiB | temp GiB | peak GiB | '
              'fits | TFLOP/device | collectives |',
              '|---|---|---|---|---:|---:|---:|---:|---|---:|---|']
    lines += decode
  lines += ['', 'Largest batch: the largest global batch (a multiple of data x fsdp) whose peak '
            'fits, from a straight line through peaks compiled at two batch sizes on the same '
            'mesh; † marks a data-parallel row whose line goes through the data-parallel rows of '
            'the same model on the other slices (a data-parallel program depends only on the '
            'examples per device). "-": no second compiled point.']
  return '\n'.join(lines) + '\n'


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m padir.bench scale', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--sizes', default='base,large,xl')
  parser.add_argument('--objectives', default='padir,ar')
  parser.add_argument('--targets', default='v4-32,v5e-64,v5e-256,8xh100')
  parser.add_argument('--batch_size', type=int, default=512)
  parser.add_argument('--input_length', type=int, default=128)
  parser.add_argument('--target_length', type=int, default=128)
  parser.add_argument('--dtype', default='bfloat16', choices=('bfloat16', 'float32'))
  parser.add_argument('--stages', type=int, default=2)
  parser.add_argument('--mesh', default='auto')
  parser.add_argument('--headroom', type=float, default=0.9)
  parser.add_argument('--largest_batch', default='false', choices=('true', 'false'))
  parser.add_argument('--decode_batch_size', type=int, default=0)
  parser.add_argument('--decode_iterations', type=int, default=4)
  parser.add_argument('--cell_timeout', type=float, default=1800.0,
                      help='seconds per cell before it is reported as not compiled')
  parser.add_argument('--cached_only', action='store_true',
                      help='render the cells already in --cells_dir; compile nothing')
  parser.add_argument('--cells_dir', default=os.path.join(tempfile.gettempdir(),
                                                          'padir_scale_plan'),
                      help='per-cell JSON (reused when present: delete to recompile)')
  parser.add_argument('--output', default=None,
                      help='write OUTPUT.md and OUTPUT.json (e.g. benchmarks/results/scale_plan)')
  args = parser.parse_args(argv)
  for target in args.targets.split(','):
    if target not in plan_lib.TARGETS:
      parser.error(f'--targets: unknown {target!r}; choose from {sorted(plan_lib.TARGETS)}')
  for objective in args.objectives.split(','):
    if objective not in plan_lib.OBJECTIVES:
      parser.error(f'--objectives: unknown {objective!r}; choose from {plan_lib.OBJECTIVES}')
  os.makedirs(args.cells_dir, exist_ok=True)
  command = 'python -m padir.bench scale ' + ' '.join(
      shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])
      if not a.startswith(('--cells_dir', '--cached_only')))
  if os.environ.get('XLA_FLAGS'):  # e.g. faster LLVM code generation; kept in the record
    command = f"XLA_FLAGS={shlex.quote(os.environ['XLA_FLAGS'])} {command}"
  cells = []
  for size in args.sizes.split(','):
    for objective in args.objectives.split(','):
      for target in args.targets.split(','):
        cells.append((size, objective, target,
                      run_cell(size, objective, target, args, args.cells_dir)))
  report = render(cells, args, command)
  print(report)
  if args.output:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)) or '.', exist_ok=True)
    with open(args.output + '.md', 'w', encoding='utf-8') as f:
      f.write(report)
    with open(args.output + '.json', 'w', encoding='utf-8') as f:
      json.dump({'command': command,
                 'cells': [{'size': s, 'objective': o, 'target': t, **c}
                           for s, o, t, c in cells]}, f, indent=1)
  return 0
