r"""The pod-scale table: `padir.plan` over models x objectives x slices, as markdown and JSON.

  python -m padir.bench scale --sizes=base,large,xl --objectives=padir,ar \
      --targets=v4-32,v5e-64,v5e-256,8xh100 --output=benchmarks/results/scale_plan

Every cell (size, objective, target) is one ``padir plan`` run in its own subprocess (its own
simulated device count, and its compiler memory is returned when it ends), with the paper
setting's batch and lengths and ``--mesh=auto`` unless ``--mesh`` is given. Each cell's JSON is
kept in ``--cells_dir``, so an interrupted table resumes where it stopped; a cell that fails or
runs past ``--cell_timeout`` is listed as not compiled, with the reason. ``--largest_batch``
and ``--decode_batch_size`` add compiles per cell (a second batch size, the decode step).

``--scan_sizes=xl`` compiles those sizes (or single cells: ``large_padir_8xh100``) with
scanned layers (``T5Config.scan_layers``: one ``nn.scan`` layer body per stack, as T5X compiles
its large models) and ``--scan_remat_policy``. A scanned step compiles in seconds where the
unrolled step of a large model takes minutes per candidate mesh on a small CPU host (and the
auto mesh may try twenty). The first cell of the table (an unrolled one) is compiled scanned
too, without and with that remat policy, and the text gives the differences: without remat
the scanned step keeps every layer's residuals as loop outputs, so its peak is higher than the
unrolled step's; the collectives are the same. Scanned rows are marked ‡; their TFLOP are the
HLO's matmul FLOPs with the loop trip counts (XLA's cost analysis counts a loop body once).
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


def cell_name(size: str, objective: str, target: str, scan: bool = False,
              remat: str = 'none') -> str:
  return (f'{size}_{objective}_{target}' + ('_scan' if scan else '')
          + (f'_remat-{remat}' if remat != 'none' else ''))


def _scanned(size: str, objective: str, target: str, args: argparse.Namespace) -> bool:
  """Whether ``--scan_sizes`` names the size or the cell (``size_objective_target``)."""
  entries = getattr(args, 'scan_sizes', '').split(',')
  return size in entries or cell_name(size, objective, target) in entries


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
             cells_dir: str, scan: bool | None = None,
             remat: str | None = None) -> dict[str, Any]:
  """Runs (or reuses) one cell: its train plan and, when asked, the decode step on its mesh.

  Args:
    scan: compile with scanned layers (default: when ``size`` is in ``--scan_sizes``).
    remat: the remat policy (default: ``--scan_remat_policy`` for a scanned cell, else none).

  Returns:
    the train plan (with ``decode`` / ``decode_fits`` merged in, and ``scan_layers``) or
    ``{'error': ...}``.
  """
  scan = _scanned(size, objective, target, args) if scan is None else scan
  if remat is None:
    remat = args.scan_remat_policy if scan else 'none'
  name = cell_name(size, objective, target, scan, remat)
  _, devices = plan_lib.TARGETS[target]
  common = [f'--size={size}', f'--objective={objective}', f'--target={target}',
            f'--input_length={args.input_length}', f'--target_length={args.target_length}',
            f'--dtype={args.dtype}', f'--stages={args.stages}', f'--headroom={args.headroom}'
            ] + (['--scan_layers'] if scan else []) + (
                [f'--remat_policy={remat}'] if remat != 'none' else [])
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
  if 'error' not in result:
    result = dict(result, scan_layers=scan, remat_policy=remat)
  return result


def _fit_key(size: str, objective: str, cell: dict[str, Any]) -> tuple[Any, ...]:
  """Cells whose data-parallel peaks lie on one line: same model, same layer scan and remat."""
  if not cell.get('scan_layers') and cell.get('remat_policy', 'none') == 'none':
    return (size, objective)
  return (size, objective, bool(cell.get('scan_layers')), cell.get('remat_policy', 'none'))


def data_parallel_fits(cells: list[tuple[str, str, str, dict[str, Any]]]
                       ) -> dict[tuple[Any, ...], tuple[float, float]]:
  """_fit_key -> (fixed bytes, bytes per example) of the data-parallel train step.

  A data-parallel step's per-device program depends only on the per-device batch, so the
  compiled data-parallel rows of one model on slices of different sizes are points of one line
  (peak against examples per device); a model needs two distinct points.
  """
  points: dict[tuple[Any, ...], dict[int, int]] = {}
  for size, objective, _, cell in cells:
    for key in ('train', 'train_second_batch'):
      step = cell.get(key)
      if not step or step['mesh'][1] != 1 or step['mesh'][2] != 1:
        continue
      per_device = step['batch_size'] // step['mesh'][0]
      points.setdefault(_fit_key(size, objective, cell), {})[per_device] = step['peak_bytes']
  fits = {}
  for model, by_batch in points.items():
    if len(by_batch) < 2:
      continue
    slope, fixed = np.polyfit(list(by_batch), list(by_batch.values()), 1)
    fits[model] = (float(fixed), float(slope))
  return fits


def _largest_text(size: str, objective: str, target: str, cell: dict[str, Any],
                  fits: dict[tuple[Any, ...], tuple[float, float]]) -> str:
  largest = cell.get('largest_batch')
  if largest is not None:
    return 'not memory-bound' if largest < 0 else f'{largest:,}'
  mesh = cell['train']['mesh']
  key = _fit_key(size, objective, cell)
  if key not in fits or mesh[1] != 1 or mesh[2] != 1:
    return '-'
  fixed, slope = fits[key]
  per_device = int((cell['budget_bytes'] - fixed) // slope) if slope > 0 else 0
  return f'{max(per_device, 0) * mesh[0]:,} †'


def _remat_note(cell: dict[str, Any]) -> str:
  count = cell.get('spmd_full_rematerializations', 0)
  return f'; XLA replicated {count} tensor(s) to reshard them' if count else ''


def _flops(step: dict[str, Any], cell: dict[str, Any], digits: int) -> str:
  """XLA's FLOPs, or the matmul FLOPs with loop trip counts for a scanned step."""
  value = step.get('matmul_flops') if cell.get('scan_layers') else step['flops']
  return f'{value / 1e12:.{digits}f}' if value else 'n/a'


def scan_check_text(unrolled: dict[str, Any], scanned: dict[str, Any], label: str,
                    what: str = 'scanned') -> str:
  """One sentence comparing the same cell compiled unrolled and scanned."""
  what = what[0].upper() + what[1:]
  if 'train' not in unrolled or 'train' not in scanned:
    return (f'{what} against unrolled ({label}): not compiled '
            f"({unrolled.get('error') or scanned.get('error')}).")
  a, b = unrolled['train'], scanned['train']
  if a['mesh'] != b['mesh']:
    return f'{what} against unrolled ({label}): the two chose different meshes.'
  def coll(step):
    return sum(v['bytes'] for v in step['collectives'].values()) / GIB
  mm_a, mm_b = a.get('matmul_flops') or 0, b.get('matmul_flops') or 0
  return (
      f"{what} against unrolled, same cell ({label}, mesh {tuple(a['mesh'])}): peak "
      f"{_gib(b['peak_bytes'])} against {_gib(a['peak_bytes'])} GiB per device "
      f"({(b['peak_bytes'] / a['peak_bytes'] - 1):+.0%}; temporaries {_gib(b['memory']['temp'])} "
      f"against {_gib(a['memory']['temp'])}), parameters and optimizer state identical "
      f"({_gib(b['params_bytes'])} / {_gib(a['params_bytes'])} GiB), collectives "
      f"{coll(b):.2f} against {coll(a):.2f} GiB, matmul TFLOP {mm_b / 1e12:.2f} against "
      f"{mm_a / 1e12:.2f} (XLA's count of the unrolled step: {a['flops'] / 1e12:.2f}); "
      f"compiled in {b['compile_seconds']:.0f} s against {a['compile_seconds']:.0f} s.")


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
    flops = _flops(train, cell, 1)
    if cell.get('scan_layers'):
      head = head.replace(f'| {size} |', f'| {size} ‡ |', 1)
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
    flops = _flops(step, cell, 2)
    mark = ' ‡' if cell.get('scan_layers') else ''
    rows.append(f"| {size}{mark} | {objective} | {target} | {tuple(step['mesh'])} | "
                f"{step['batch_size']} | {_gib(step['params_bytes'])} | "
                f"{_gib(step['memory']['temp'])} | {_gib(step['peak_bytes'])} | "
                f"{'yes' if cell['decode_fits'] else '**no**'} | {flops} | "
                f'{_collectives(step)} |')
  return rows


def render(cells: list[tuple[str, str, str, dict[str, Any]]], args: argparse.Namespace,
           command: str, scan_check: str = '') -> str:
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
      *([f"‡: compiled with scanned layers (`--scan_sizes={getattr(args, 'scan_sizes', '')}`: "
         "`T5Config.scan_layers=True`, "
         f"`remat_policy='{getattr(args, 'scan_remat_policy', 'none')}'`): one layer body per "
         'stack in a loop, compiled in seconds where an unrolled step of these sizes takes '
         'minutes per candidate mesh (and the auto mesh may try twenty). TFLOP of a scanned '
         'row: the matmul FLOPs of the HLO with the loop trip counts. ' + scan_check, '']
        if getattr(args, 'scan_sizes', '') else []),
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
  parser.add_argument('--scan_sizes', default='',
                      help='sizes (or cells, size_objective_target) compiled with scanned '
                           'layers (T5Config.scan_layers), e.g. xl,large_padir_8xh100')
  parser.add_argument('--scan_remat_policy', default='none',
                      help='T5Config.remat_policy of the --scan_sizes cells')
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
  scan_check = ''
  if args.scan_sizes and cells and not _scanned(*cells[0][:3], args):
    # The first cell (an unrolled size) compiled once more with scanned layers.
    size, objective, target, unrolled = cells[0]
    label = f'{size} {objective} {target}'
    scanned = run_cell(size, objective, target, args, args.cells_dir, scan=True, remat='none')
    scan_check = scan_check_text(unrolled, scanned, label, 'scanned')
    if args.scan_remat_policy != 'none':
      remat = run_cell(size, objective, target, args, args.cells_dir, scan=True)
      scan_check += ' ' + scan_check_text(
          unrolled, remat, label, f'scanned with remat_policy={args.scan_remat_policy}')
  report = render(cells, args, command, scan_check)
  print(report)
  if args.output:
    os.makedirs(os.path.dirname(os.path.abspath(args.output)) or '.', exist_ok=True)
    with open(args.output + '.md', 'w', encoding='utf-8') as f:
      f.write(report)
    with open(args.output + '.json', 'w', encoding='utf-8') as f:
      json.dump({'command': command, 'scan_check': scan_check,
                 'cells': [{'size': s, 'objective': o, 'target': t, **c}
                           for s, o, t, c in cells]}, f, indent=1)
  return 0
