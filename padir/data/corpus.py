"""Parallel text in TSV files: a tolerant reader, a writer, and the embedded Bible corpus.

TensorFlow-free: this module needs only the standard library.

Lines end at ``\n`` only (`padir.data.textfile`); a trailing ``\r`` and a byte order mark are
removed, and blank lines are skipped without being counted. Bad rows do not stop a run. A row
with the wrong number of columns, an empty field in a column that is used, or bytes that are
not UTF-8 is skipped and counted; one warning names the file and the line numbers (1-based,
the header is line 1). When more than ``max_bad_fraction`` of the rows
are bad the file is more likely wrong than dirty (wrong delimiter, wrong column names, a binary
file), and reading fails with :class:`BadInputError`.
"""

from __future__ import annotations

import collections
import dataclasses
import gzip
import logging
import os
import pathlib
from typing import Iterable, Sequence

from padir.data import textfile

_LOG = logging.getLogger(__name__)

ASSETS_DIR = pathlib.Path(__file__).resolve().parent / 'assets'

# The embedded corpus (see assets/bible_es_en/PROVENANCE.md for provenance and licence).
BIBLE_DIR = ASSETS_DIR / 'bible_es_en'
BIBLE_COLUMNS = ('ref', 'es', 'en', 'en_kjv')
BIBLE_FILES = {'train': 'train.tsv.gz', 'validation': 'dev.tsv.gz', 'test': 'test.tsv.gz'}
BIBLE_NUM_EXAMPLES = {'train': 28281, 'validation': 964, 'test': 913}

# What `padir.distill` writes and distilled tasks read: the source and the teacher's output.
DISTILLED_COLUMNS = ('source', 'teacher')

DEFAULT_MAX_BAD_FRACTION = 0.01
_MAX_LINES_NAMED = 10  # line numbers listed per reason in a warning or error

WRONG_COLUMN_COUNT = 'wrong column count'
EMPTY_FIELD = 'empty field'
INVALID_UTF8 = 'invalid UTF-8'


class BadInputError(ValueError):
  """A data file is unreadable or has too many bad rows."""


@dataclasses.dataclass
class ReadReport:
  """What reading one file found.

  Attributes:
    path: the file.
    num_rows: data rows seen (the header excluded).
    num_kept: rows returned.
    bad_lines: reason -> 1-based line numbers of the rows skipped for it.
  """

  path: str
  num_rows: int = 0
  num_kept: int = 0
  bad_lines: dict[str, list[int]] = dataclasses.field(
      default_factory=lambda: collections.defaultdict(list))

  @property
  def num_bad(self) -> int:
    return self.num_rows - self.num_kept

  def describe(self) -> str:
    """One line: how many rows were skipped, why, and on which lines."""
    parts = []
    for reason, lines in sorted(self.bad_lines.items()):
      shown = ', '.join(str(n) for n in lines[:_MAX_LINES_NAMED])
      more = f' and {len(lines) - _MAX_LINES_NAMED} more' if len(lines) > _MAX_LINES_NAMED else ''
      parts.append(f'{len(lines)} with {reason} (lines {shown}{more})')
    return (f'{self.path}: skipped {self.num_bad} of {self.num_rows} rows: ' + '; '.join(parts))


def _open_binary(path: str | os.PathLike[str]):
  path = os.fspath(path)
  with open(path, 'rb') as f:
    magic = f.read(2)
  return gzip.open(path, 'rb') if magic == b'\x1f\x8b' else open(path, 'rb')


def read_tsv(path: str | os.PathLike[str],
             columns: Sequence[str],
             *,
             header: bool | Sequence[str] = True,
             max_bad_fraction: float = DEFAULT_MAX_BAD_FRACTION) -> tuple[dict[str, list[str]],
                                                                           ReadReport]:
  """Reads the named columns of a tab-separated file (plain or gzip'd), skipping bad rows.

  Args:
    path: the file; gzip is detected from its first bytes.
    columns: the columns to return, by name.
    header: True when the first line names the columns; otherwise the names of the columns in
      order (the file then has no header line).
    max_bad_fraction: fail when more than this fraction of the rows is bad.

  Returns:
    ``({column: [field, ...]}, report)``; fields are stripped of surrounding whitespace.

  Raises:
    BadInputError: the file is missing or empty, a requested column is not in it, or too many
      rows are bad.
  """
  path = os.fspath(path)
  if not 0.0 <= max_bad_fraction <= 1.0:
    raise ValueError(f'max_bad_fraction={max_bad_fraction} must be in [0, 1].')
  if not os.path.isfile(path):
    raise BadInputError(f'{path}: no such file.')
  report = ReadReport(path=path)
  out: dict[str, list[str]] = {c: [] for c in columns}
  with _open_binary(path) as f:
    lines = iter(f)
    first_line = 1
    if header is True:
      raw = next(lines, None)
      if raw is None:
        raise BadInputError(f'{path}: the file is empty; expected a header line.')
      try:
        names = raw.decode('utf-8-sig').rstrip('\r\n').split('\t')
      except UnicodeDecodeError as e:
        raise BadInputError(f'{path}: the header line is not UTF-8 ({e}).') from None
      names = [n.strip() for n in names]
      first_line = 2
    else:
      names = list(header)
    missing = [c for c in columns if c not in names]
    if missing:
      where = 'its header' if header is True else 'the column names given'
      raise BadInputError(f'{path}: column(s) {missing} not in {where} {names}.')
    index = [names.index(c) for c in columns]
    for line_no, raw in enumerate(lines, start=first_line):
      try:
        text = textfile.decode_line(raw, path, line_no)
      except textfile.TextFileError:
        report.num_rows += 1
        report.bad_lines[INVALID_UTF8].append(line_no)
        continue
      if not text.strip():
        continue  # a blank line (a trailing one, say) holds no row: skipped, not counted
      report.num_rows += 1
      fields = text.split('\t')
      if len(fields) != len(names):
        report.bad_lines[WRONG_COLUMN_COUNT].append(line_no)
        continue
      values = [fields[i].strip() for i in index]
      if not all(values):
        report.bad_lines[EMPTY_FIELD].append(line_no)
        continue
      for c, v in zip(columns, values):
        out[c].append(v)
      report.num_kept += 1
  report.bad_lines = dict(report.bad_lines)
  _check_report(report, max_bad_fraction)
  return out, report


def _check_report(report: ReadReport, max_bad_fraction: float) -> None:
  if report.num_kept == 0:
    detail = f' {report.describe()}' if report.num_bad else ''
    raise BadInputError(f'{report.path}: no usable rows.{detail}')
  if not report.num_bad:
    return
  fraction = report.num_bad / report.num_rows
  if fraction > max_bad_fraction:
    raise BadInputError(
        f'{report.describe()}. That is {fraction:.1%} of the rows, more than '
        f'max_bad_fraction={max_bad_fraction:g}: check the delimiter (tabs), the column names '
        'and the encoding (UTF-8), or raise max_bad_fraction.')
  _LOG.warning('%s', report.describe())


def write_tsv(path: str | os.PathLike[str], columns: Sequence[str],
              rows: Iterable[Sequence[str]]) -> int:
  """Writes a TSV with a header line; gzip'd when the name ends in ``.gz``.

  Tabs and line breaks inside a field become spaces, so every row reads back whole.

  Returns:
    The number of rows written.
  """
  path = os.fspath(path)
  table = str.maketrans({'\t': ' ', '\n': ' ', '\r': ' '})
  opener = gzip.open if path.endswith('.gz') else open
  n = 0
  with opener(path, 'wt', encoding='utf-8', newline='\n') as f:
    f.write('\t'.join(columns) + '\n')
    for row in rows:
      if len(row) != len(columns):
        raise ValueError(f'row {n} has {len(row)} fields, expected {len(columns)}: {row!r}')
      f.write('\t'.join(str(v).translate(table) for v in row) + '\n')
      n += 1
  return n


def write_distilled_tsv(path: str | os.PathLike[str], sources: Sequence[str],
                        teacher_outputs: Sequence[str]) -> int:
  """Writes (source, teacher output) pairs in the format distilled tasks read."""
  if len(sources) != len(teacher_outputs):
    raise ValueError(
        f'{len(sources)} sources but {len(teacher_outputs)} teacher outputs.')
  return write_tsv(path, DISTILLED_COLUMNS, zip(sources, teacher_outputs))


def bible_path(split: str) -> pathlib.Path:
  """The file of one split of the embedded corpus ('train', 'validation' or 'test')."""
  if split not in BIBLE_FILES:
    raise ValueError(f'Unknown split {split!r}; the Bible corpus has {sorted(BIBLE_FILES)}.')
  return BIBLE_DIR / BIBLE_FILES[split]


def read_bible(split: str) -> dict[str, list[str]]:
  """All four columns of one split of the embedded Spanish-English corpus."""
  rows, _ = read_tsv(bible_path(split), BIBLE_COLUMNS, max_bad_fraction=0.0)
  return rows

