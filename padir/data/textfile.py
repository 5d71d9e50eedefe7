"""Plain UTF-8 text files, one item per line: how every padir reader splits and decodes lines.

A line ends at ``\\n`` and only there: ``str.splitlines()`` would also break at U+2028,
U+2029, U+0085, form feeds and vertical tabs, which occur inside real sentences and would shift
every later row. A trailing ``\\r`` (Windows line ends) and a UTF-8 byte order mark at the start
of the file are removed. Bytes that are not UTF-8 are an error naming the file, the line and the
column. TensorFlow-free: this module needs only the standard library.
"""

from __future__ import annotations

import os
from typing import Iterable, Iterator

BOM = b'\xef\xbb\xbf'


class TextFileError(ValueError):
  """A text file that cannot be read as UTF-8 lines."""


def decode_line(raw: bytes, path: str | os.PathLike[str], line_no: int) -> str:
  """One line's text: UTF-8, without its ``\\n`` / ``\\r\\n`` end (and the BOM on line 1).

  Args:
    raw: the line's bytes, with or without its line end.
    path: the file, for the error message.
    line_no: the 1-based line number.

  Raises:
    TextFileError: the bytes are not UTF-8 (naming the line and column).
  """
  if line_no == 1 and raw.startswith(BOM):
    raw = raw[len(BOM):]
  if raw.endswith(b'\n'):
    raw = raw[:-1]
  if raw.endswith(b'\r'):
    raw = raw[:-1]
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as err:
    raise TextFileError(
        f'{os.fspath(path)}, line {line_no}: not UTF-8 (byte 0x{raw[err.start]:02x} at column '
        f'{err.start + 1}); save the file as UTF-8.') from None


def iter_lines(raw_lines: Iterable[bytes], path: str | os.PathLike[str],
               first_line: int = 1) -> Iterator[tuple[int, str]]:
  """(line number, text) of each ``\\n``-terminated line of a binary file object or list."""
  for line_no, raw in enumerate(raw_lines, start=first_line):
    yield line_no, decode_line(raw, path, line_no)


def read_lines(path: str | os.PathLike[str]) -> list[str]:
  """Every line of a UTF-8 text file (a final line end adds no empty line).

  Raises:
    TextFileError: a missing file, or bytes that are not UTF-8 (naming the line).
  """
  if not os.path.isfile(path):
    raise TextFileError(f'{os.fspath(path)}: no such file.')
  with open(path, 'rb') as f:  # binary: the file object splits at b'\n' only
    return [text for _, text in iter_lines(f, path)]
