"""What a compiled XLA program says about itself: memory, FLOPs and collectives.

``jax.jit(f).lower(...).compile()`` gives a ``Compiled`` object whose

* ``memory_analysis()`` is the buffer assignment of the partitioned (per-device) program:
  argument, output, aliased (donated) and temporary bytes;
* ``cost_analysis()`` counts the FLOPs of the per-device program (a while loop's body is counted
  once, whatever its trip count);
* ``as_text()`` is the optimised, partitioned HLO, in which every cross-device transfer is an
  explicit collective instruction (``all-reduce``, ``all-gather``, ``reduce-scatter``,
  ``all-to-all``, ``collective-permute``, or their ``-start`` / ``-done`` async halves).

:func:`collectives` parses that text: for each kind, how many collectives the program executes
and the bytes of their results per device. A collective inside a while loop whose trip count
XLA knows (``known_trip_count``, e.g. a scan over layers) counts that many times; one inside a
loop of unknown trip count (a decode loop that stops early) counts once per iteration and is
reported separately in ``per_loop_iteration``.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any

COLLECTIVE_KINDS = ('all-reduce', 'all-gather', 'reduce-scatter', 'all-to-all',
                    'collective-permute')

_DTYPE_BYTES = {
    'pred': 1, 's4': 1, 'u4': 1, 's8': 1, 'u8': 1, 'f8e4m3fn': 1, 'f8e5m2': 1,
    's16': 2, 'u16': 2, 'f16': 2, 'bf16': 2, 's32': 4, 'u32': 4, 'f32': 4,
    's64': 8, 'u64': 8, 'f64': 8, 'c64': 8, 'c128': 16,
}
# `%name = TYPE op(...)`: TYPE is one array type or a tuple of them.
_INSTRUCTION = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*?)\s+([a-z][\w\-]*)\(')
_ARRAY_TYPE = re.compile(r'\b([a-z]+\d*(?:e\d+m\d+(?:fn)?)?)\[([\d,]*)\]')
_COMPUTATION = re.compile(r'^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$')
_CALLEE = re.compile(r'\b(?:calls|to_apply|body|condition)=%?([\w.\-]+)')
_CALLEE_LIST = re.compile(r'\b(?:branch_computations|called_computations)=\{([^}]*)\}')
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_NAMED = re.compile(r'^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*(.*?)\s+[a-z][\w\-]*\(')
_OPERANDS = re.compile(r'\bdot\(\s*((?:[a-z]+\d*\[[\d,]*\]\S*\s+)?%?[\w.\-]+)')
_LHS_CONTRACTING = re.compile(r'lhs_contracting_dims=\{([\d,]*)\}')


@dataclasses.dataclass
class CollectiveStats:
  """Collectives of one kind in a per-device program.

  Attributes:
    count: how many execute per call of the program (loops of known trip count unrolled).
    bytes: bytes of their results per device, summed over those executions.
    per_loop_iteration: how many sit in loops of unknown trip count (counted once each above).
  """
  count: int = 0
  bytes: int = 0
  per_loop_iteration: int = 0


def array_bytes(type_text: str) -> list[int]:
  """Bytes of each array in an HLO type (``f32[8,128]{1,0}`` or a tuple of such)."""
  sizes = []
  for dtype, dims in _ARRAY_TYPE.findall(type_text):
    if dtype not in _DTYPE_BYTES:
      continue
    shape = [int(d) for d in dims.split(',') if d]
    sizes.append(_DTYPE_BYTES[dtype] * math.prod(shape))
  return sizes


def _split_computations(hlo_text: str) -> tuple[dict[str, list[str]], str | None]:
  """HLO module text -> ({computation name: instruction lines}, entry name)."""
  computations: dict[str, list[str]] = {}
  entry = None
  current = None
  for line in hlo_text.splitlines():
    if current is None:
      match = _COMPUTATION.match(line)
      if match and not line.lstrip().startswith('HloModule'):
        current = match.group(2)
        computations[current] = []
        if match.group(1):
          entry = current
      continue
    if line.strip() == '}':
      current = None
      continue
    computations[current].append(line)
  return computations, entry


def _callees(line: str) -> list[str]:
  names = _CALLEE.findall(line)
  for group in _CALLEE_LIST.findall(line):
    names += [n.strip().lstrip('%') for n in group.split(',') if n.strip()]
  return names


def _walk(hlo_text: str):
  """Yields (instruction line, executions per call, inside a loop of unknown trip count, names).

  Walks the call graph from the entry computation; a computation called from several places
  is visited once per call site, a while loop's body and condition ``known_trip_count`` times
  (once, flagged, when XLA does not know the trip count). ``names`` maps the instruction names
  of the line's computation to their types.
  """
  computations, entry = _split_computations(hlo_text)
  if entry is None:
    return
  types: dict[str, dict[str, str]] = {}
  # (computation, weight, inside a loop of unknown trip count)
  stack = [(entry, 1, False)]
  visits = 0
  while stack:
    name, weight, unknown_loop = stack.pop()
    visits += 1
    if visits > 100_000:
      raise ValueError('HLO call graph too large to walk (more than 100,000 call sites).')
    if name not in types:
      types[name] = {}
      for line in computations.get(name, ()):
        match = _NAMED.match(line)
        if match:
          types[name][match.group(1)] = match.group(2)
    for line in computations.get(name, ()):
      match = _INSTRUCTION.match(line)
      if not match:
        continue
      yield line, match.group(1), match.group(2), weight, unknown_loop, types[name]
      callees = _callees(line)
      if not callees:
        continue
      trips = 1
      loop_unknown = unknown_loop
      if match.group(2) == 'while':
        trip = _TRIP_COUNT.search(line)
        if trip:
          trips = int(trip.group(1))
        else:
          loop_unknown = True
      for callee in callees:
        if callee in computations:
          stack.append((callee, weight * trips, loop_unknown))


def collectives(hlo_text: str) -> dict[str, CollectiveStats]:
  """Count and result bytes of each collective kind in an optimised, partitioned HLO module.

  Args:
    hlo_text: ``compiled.as_text()`` of a jitted, sharded function.

  Returns:
    ``{kind: CollectiveStats}`` for every kind in `COLLECTIVE_KINDS` (zeros when absent).
  """
  stats = {kind: CollectiveStats() for kind in COLLECTIVE_KINDS}
  for _, type_text, op, weight, unknown_loop, _ in _walk(hlo_text):
    base = op[:-len('-start')] if op.endswith('-start') else op
    if base not in stats:
      continue
    sizes = array_bytes(type_text)
    if op.endswith('-start') and base in ('all-gather', 'collective-permute') and len(sizes) > 1:
      sizes = sizes[len(sizes) // 2:]  # (operands, results): keep the results
    entry_stats = stats[base]
    entry_stats.count += weight
    entry_stats.bytes += weight * sum(sizes)
    if unknown_loop:
      entry_stats.per_loop_iteration += 1
  return stats


def matmul_flops(hlo_text: str) -> float:
  """FLOPs of the ``dot`` instructions of one call of an optimised HLO module.

  2 x (result elements) x (contracted elements) per dot, counted as many times as it executes:
  unlike ``cost_analysis()``, a dot inside a while loop of known trip count (a scan over
  layers) counts that many times; in a loop of unknown trip count, once. Elementwise FLOPs are
  left out (a few percent of a transformer step).
  """
  total = 0.0
  for line, type_text, op, weight, _, names in _walk(hlo_text):
    if op != 'dot':
      continue
    result = _ARRAY_TYPE.search(type_text)
    operands = _OPERANDS.search(line)
    contracting = _LHS_CONTRACTING.search(line)
    if not (result and operands and contracting):
      continue
    # The operand's type is printed before its name in some dumps, else looked up by name.
    lhs_type = _ARRAY_TYPE.match(operands.group(1)) or _ARRAY_TYPE.search(
        names.get(operands.group(1).strip().lstrip('%'), ''))
    if not lhs_type:
      continue
    lhs_dims = [int(d) for d in lhs_type.group(2).split(',') if d]
    out_dims = [int(d) for d in result.group(2).split(',') if d]
    dims = [int(d) for d in contracting.group(1).split(',') if d]
    total += weight * 2.0 * math.prod(out_dims) * math.prod(lhs_dims[d] for d in dims)
  return total


@dataclasses.dataclass
class MemoryStats:
  """Per-device buffer sizes of a compiled program (bytes).

  ``peak`` = arguments + outputs - aliased (donated inputs reused as outputs) + temporaries:
  what the program needs on one device at once, by XLA's buffer assignment.
  """
  argument: int
  output: int
  alias: int
  temp: int
  generated_code: int

  @property
  def peak(self) -> int:
    return self.argument + self.output - self.alias + self.temp + self.generated_code


def memory_stats(compiled: Any) -> MemoryStats:
  """``compiled.memory_analysis()`` as a `MemoryStats`.

  Raises:
    ValueError: the backend reports no memory analysis.
  """
  analysis = compiled.memory_analysis()
  if analysis is None:
    raise ValueError('This backend reports no memory analysis for compiled programs.')
  return MemoryStats(argument=int(analysis.argument_size_in_bytes),
                     output=int(analysis.output_size_in_bytes),
                     alias=int(analysis.alias_size_in_bytes),
                     temp=int(analysis.temp_size_in_bytes),
                     generated_code=int(analysis.generated_code_size_in_bytes))


def flops(compiled: Any) -> float | None:
  """FLOPs of one call of the per-device program (XLA's cost analysis; None if absent)."""
  try:
    cost = compiled.cost_analysis()
  except Exception:  # pylint: disable=broad-except
    return None
  if isinstance(cost, (list, tuple)):
    cost = cost[0] if cost else None
  if not cost or 'flops' not in cost:
    return None
  return float(cost['flops'])
