"""Where a jitted call's time goes: the compiled kernels timed by the profiler, per source function.

``python -m padir.bench ops --run_dir=padir_quickstart [--sentences=20]``

:func:`op_profile` runs a jitted function under ``jax.profiler.trace`` and reads the trace the
profiler writes (``*.trace.json.gz``): every kernel (thunk) XLA runs is an event named after
its HLO instruction. The optimised HLO of the same compilation (``compiled.as_text()``) gives
each instruction its stack frame, that is the Python line that produced it, so each kernel's
time is charged to the innermost function of the chosen source files (by default the padir
package): ``greedy_choice``, ``MultiHeadAttention.__call__``, ``Decoder.__call__`` (the output
projection), ``remask`` and so on. Control flow (``while``, ``conditional``, ``call``) is not
counted itself, only the kernels it runs, so the rows add up to the time spent in kernels.
On a CPU, XLA runs independent kernels on several threads at once, so that sum can exceed the
wall time they cover (reported too): a kernel that overlaps others costs less than its share
(switch it off and measure to know). What the call takes beyond the kernels (dispatch,
argument handling, waiting) is reported apart.

The CLI profiles the main job's systems at batch 1 on validation sentences: the AR teacher
(greedy) and the PaDIR student with the decoding the select stage chose (``decoding.json``).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import functools
import glob
import gzip
import json
import math
import os
import re
import tempfile
import time
from typing import Any, Callable, Sequence

import jax

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CONTROL_FLOW = ('while', 'conditional', 'call')
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+([a-z][\w\-]*)\(')
_FRAME = re.compile(r'stack_frame_id=(\d+)')
_TABLE_ROW = re.compile(r'^(\d+) \{(.*)\}$')


@dataclasses.dataclass
class OpRow:
  """Kernel time charged to one source function, per profiled call."""
  function: str
  us_per_call: float
  kernels_per_call: float
  top_kernel: str  # the instruction of this function that took the most time, with its shape

  def to_json(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass
class OpProfile:
  """:func:`op_profile`'s result: rows sorted by time, and the totals per call."""
  rows: list[OpRow]
  wall_us_per_call: float
  kernel_us_per_call: float  # summed over kernels, also those that ran at the same time
  busy_us_per_call: float  # wall time during which at least one kernel ran

  def to_json(self) -> dict[str, Any]:
    return dict(rows=[r.to_json() for r in self.rows], wall_us_per_call=self.wall_us_per_call,
                kernel_us_per_call=self.kernel_us_per_call,
                busy_us_per_call=self.busy_us_per_call)

  def to_markdown(self, top: int = 12) -> str:
    lines = ['| function | us per call | share of kernel time | kernels per call | '
             'slowest kernel |', '|---|---|---|---|---|']
    total = max(self.kernel_us_per_call, 1e-9)
    for r in self.rows[:top]:
      lines.append(f'| {r.function} | {r.us_per_call:.0f} | {100 * r.us_per_call / total:.0f}% '
                   f'| {r.kernels_per_call:.1f} | `{r.top_kernel}` |')
    rest = self.rows[top:]
    if rest:
      us = sum(r.us_per_call for r in rest)
      lines.append(f'| {len(rest)} other functions | {us:.0f} | {100 * us / total:.0f}% | '
                   f'{sum(r.kernels_per_call for r in rest):.1f} | |')
    lines.append(f'| **kernels in all** | {self.kernel_us_per_call:.0f} | 100% | '
                 f'{sum(r.kernels_per_call for r in self.rows):.1f} | |')
    lines.append(f'| wall time with a kernel running (kernels on several threads overlap) | '
                 f'{self.busy_us_per_call:.0f} | | | |')
    lines.append(f'| call outside kernels (dispatch, arguments, waits) | '
                 f'{max(self.wall_us_per_call - self.busy_us_per_call, 0.0):.0f} | | | |')
    return '\n'.join(lines)


def _tables(hlo_text: str) -> tuple[dict[int, str], dict[int, str], dict[int, tuple], dict]:
  """The FileNames, FunctionNames, FileLocations and StackFrames tables of an HLO module."""
  tables: dict[str, dict[int, str]] = {}
  current = None
  for line in hlo_text.splitlines():
    if line in ('FileNames', 'FunctionNames', 'FileLocations', 'StackFrames'):
      current = tables.setdefault(line, {})
      continue
    if current is None:
      continue
    if not line.strip():
      current = None
      continue
    number, _, value = line.partition(' ')
    if number.isdigit():
      current[int(number)] = value.strip()
  names = {k: v.strip('"') for k, v in tables.get('FileNames', {}).items()}
  functions = {k: v.strip('"') for k, v in tables.get('FunctionNames', {}).items()}
  locations = {k: dict(re.findall(r'(\w+)=(\d+)', v))
               for k, v in tables.get('FileLocations', {}).items()}
  frames = {k: dict(re.findall(r'(\w+)=(\d+)', v)) for k, v in tables.get('StackFrames', {}).items()}
  return names, functions, locations, frames


def instruction_functions(hlo_text: str, source_dirs: Sequence[str]) -> dict[str, tuple[str, str]]:
  """HLO instruction name -> (innermost function under ``source_dirs``, opcode and shape).

  Instructions whose stack has no frame in those files map to ``'(other code)'``, and those
  XLA created without a stack frame (some plain ``dot`` kernels, copies) to
  ``'(<opcode>, no source line)'``.
  """
  names, functions, locations, frames = _tables(hlo_text)
  dirs = tuple(os.path.abspath(d) + os.sep for d in source_dirs)

  @functools.lru_cache(maxsize=None)  # many instructions share a stack frame
  def innermost(frame_id: int) -> str | None:
    seen = set()
    while frame_id and frame_id in frames and frame_id not in seen:
      seen.add(frame_id)
      frame = frames[frame_id]
      loc = locations.get(int(frame.get('file_location_id', 0)), {})
      path = names.get(int(loc.get('file_name_id', 0)), '')
      if os.path.abspath(path).startswith(dirs):
        return functions.get(int(loc.get('function_name_id', 0)), '?')
      parent = int(frame.get('parent_frame_id', 0))
      frame_id = parent if parent != frame_id else 0
    return None

  out = {}
  for line in hlo_text.splitlines():
    m = _INSTRUCTION.match(line)
    if not m:
      continue
    name, shape, opcode = m.groups()
    frame = _FRAME.search(line)
    if frame:
      function = innermost(int(frame.group(1))) or '(other code)'
    else:
      function = f'({opcode}, no source line)'
    out[name] = (function, f'{opcode} {shape}')
  return out


def _trace_events(log_dir: str) -> list[dict[str, Any]]:
  paths = glob.glob(os.path.join(log_dir, '**', '*.trace.json.gz'), recursive=True)
  if not paths:
    raise RuntimeError(f'jax.profiler.trace wrote no *.trace.json.gz under {log_dir}: this '
                       'jax build cannot profile kernels.')
  with gzip.open(max(paths, key=os.path.getmtime)) as f:
    return json.load(f).get('traceEvents', [])


def op_profile(fn: Callable[..., Any], arg_sets: Sequence[tuple[Any, ...]],
               source_dirs: Sequence[str] = (_PACKAGE_DIR,)) -> OpProfile:
  """Profiles one call of the jitted ``fn`` per argument tuple (after two warm-up calls).

  Args:
    fn: a ``jax.jit``-ed function (it must have ``lower``).
    arg_sets: the arguments of each profiled call, all of the same shapes (one compilation);
      times are per call.
    source_dirs: a kernel is charged to the innermost function defined in these directories.

  Returns:
    An `OpProfile`.
  """
  if not hasattr(fn, 'lower'):
    raise ValueError('op_profile needs a jax.jit-ed function (it reads its compiled HLO).')
  if not arg_sets:
    raise ValueError('op_profile needs at least one tuple of arguments.')
  calls = len(arg_sets)
  ops = instruction_functions(fn.lower(*arg_sets[0]).compile().as_text(), source_dirs)
  for i in range(2):
    jax.block_until_ready(fn(*arg_sets[i % calls]))
  with tempfile.TemporaryDirectory() as log_dir:
    with jax.profiler.trace(log_dir):
      start = time.perf_counter()
      for args in arg_sets:
        jax.block_until_ready(fn(*args))
      wall = time.perf_counter() - start
    events = _trace_events(log_dir)
  time_us: dict[str, float] = collections.Counter()
  count: dict[str, int] = collections.Counter()
  kernel_us: dict[tuple[str, str], float] = collections.Counter()
  intervals = []
  for e in events:
    if e.get('ph') != 'X' or e.get('name') not in ops:
      continue
    function, what = ops[e['name']]
    if what.split(' ', 1)[0] in _CONTROL_FLOW:
      continue
    time_us[function] += float(e.get('dur', 0.0))
    intervals.append((float(e.get('ts', 0.0)), float(e.get('ts', 0.0)) + float(e.get('dur', 0.0))))
    count[function] += 1
    kernel_us[(function, f'{e["name"]}: {what}')] += float(e.get('dur', 0.0))
  if not time_us:
    raise RuntimeError('The profiler recorded no kernel of this function: this jax build does '
                       'not trace XLA kernels on this backend.')
  rows = []
  for function, us in time_us.items():
    top = max((k for k in kernel_us if k[0] == function), key=kernel_us.get)[1]
    rows.append(OpRow(function, us / calls, count[function] / calls, top))
  rows.sort(key=lambda r: -r.us_per_call)
  return OpProfile(rows, 1e6 * wall / calls, sum(time_us.values()) / calls,
                   _union_length(intervals) / calls)


def _union_length(intervals: list[tuple[float, float]]) -> float:
  """Total length covered by at least one of the (start, end) intervals."""
  total, end = 0.0, -math.inf
  for a, b in sorted(intervals):
    if b > end:
      total += b - max(a, end)
      end = b
  return total


def profile_quickstart(run_dir: str, gin_files: Sequence[str] = (),
                       gin_bindings: Sequence[str] = (), sentences: int = 20
                       ) -> dict[str, OpProfile]:
  """Profiles the main job's AR teacher (greedy) and chosen PaDIR decoding at batch 1.

  Args:
    run_dir: a ``padir quickstart`` output directory whose select stage has finished.
    gin_files, gin_bindings: the ones the run was started with (after the default file).
    sentences: validation sentences decoded (the first ones), one call each.

  Returns:
    {'AR teacher, greedy': profile, 'PaDIR (<student>, <setting>)': profile}.
  """
  from padir import partitioning, quickstart, quickstart_eval as qs_eval, selection  # pylint: disable=g-import-not-at-top,g-multiple-import
  from padir import quickstart_select  # pylint: disable=g-import-not-at-top
  from padir.data import vocab  # pylint: disable=g-import-not-at-top
  files = [quickstart.DEFAULT_GIN_FILE, *gin_files]
  run = quickstart.Quickstart(quickstart.load_config(files, list(gin_bindings)), run_dir, files,
                              list(gin_bindings), progress=False)
  marker = run.stage_result('select')
  if not marker:
    raise ValueError(f'{run_dir} has no finished select stage: run `padir quickstart '
                     f'--output_dir={run_dir}` (at least up to --stages=select) first.')
  student_stage = marker['result']['student']
  setting = selection.DecodeSetting.from_json(marker['result']['chosen'])
  tokenizer = vocab.load_tokenizer(run.cfg.vocabulary)
  partitioner = partitioning.Partitioner()
  teacher = run.teacher_model()
  t_params = qs_eval.load_params(run, teacher, 'teacher', tokenizer, partitioner)[0]
  student = run.student_model(student_stage)
  s_params = qs_eval.load_params(run, student, student_stage, tokenizer, partitioner)[0]
  length = run.lengths['targets']
  sources = quickstart_select.validation_sources(run)[:sentences]
  device = jax.devices()[0]
  padir_params = (s_params, t_params) if setting.rerank else s_params
  systems = {
      'AR teacher, greedy': (qs_eval.ar_greedy_decoder(teacher, length), t_params),
      f'PaDIR ({student_stage}, {setting.label})': (
          selection.batch1_decoder(student, setting.refine_config(run.cfg.refine), length,
                                   teacher if setting.rerank else None), padir_params),
  }
  rng = jax.random.PRNGKey(0)
  out = {}
  for name, (decoder, params) in systems.items():
    params = jax.device_put(params, device)
    arg_sets = [(params, jax.numpy.asarray(row[None], jax.numpy.int32), rng) for row in sources]
    out[name] = op_profile(decoder.jitted(), arg_sets)
  return out


def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='python -m padir.bench ops', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('--run_dir', default='padir_quickstart',
                      help='a padir quickstart output directory (its select stage finished)')
  parser.add_argument('--gin_file', action='append', default=[],
                      help='gin files the run was started with (after the default one)')
  parser.add_argument('--gin', action='append', default=[], help='NAME=VALUE bindings of the run')
  parser.add_argument('--sentences', type=int, default=20, help='validation sentences profiled')
  parser.add_argument('--top', type=int, default=12, help='functions listed per system')
  parser.add_argument('--output', default=None, help='also write the profiles to this JSON file')
  args = parser.parse_args(argv)
  if args.sentences < 1:
    parser.error(f'--sentences={args.sentences} must be >= 1.')
  try:
    profiles = profile_quickstart(args.run_dir, args.gin_file, args.gin, args.sentences)
  except (ValueError, FileNotFoundError, RuntimeError) as e:
    print(f'padir.bench ops: {e}')
    return 2
  from padir.bench import decode  # pylint: disable=g-import-not-at-top
  print(f'Batch 1, the first {args.sentences} validation sentences of {args.run_dir}, one call '
        f'each; {decode.cpu_model()} ({os.cpu_count()} cores), jax {jax.__version__}.')
  for name, profile in profiles.items():
    print(f'\n### {name}: {profile.wall_us_per_call / 1e3:.2f} ms per sentence under the '
          f'profiler\n\n{profile.to_markdown(args.top)}')
  print('\nThe profiler adds a few microseconds to every kernel, more to a decoder that runs '
        'more of them (AR): compare shares within a system, and latencies with an unprofiled '
        'run (the quickstart report).')
  if args.output:
    with open(args.output, 'w') as f:
      json.dump({k: v.to_json() for k, v in profiles.items()}, f, indent=1)
  return 0
