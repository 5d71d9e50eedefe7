"""Tests of padir.data.textfile: lines end at \\n only."""

import pytest

from padir.data import textfile


def test_lines_split_at_newline_only(tmp_path):
  path = tmp_path / 'in.txt'
  path.write_bytes(textfile.BOM + 'one\r\ntwo\u2028still two\u2029\x85\x0c\x0b\n\n  \nlast'
                   .encode('utf-8'))
  assert textfile.read_lines(path) == ['one', 'two\u2028still two\u2029\x85\x0c\x0b', '', '  ',
                                       'last']
  path.write_bytes(b'a\nb\n')
  assert textfile.read_lines(path) == ['a', 'b']  # a final line end adds no empty line
  path.write_bytes(b'')
  assert textfile.read_lines(path) == []


def test_non_utf8_names_the_line_and_column(tmp_path):
  path = tmp_path / 'in.txt'
  path.write_bytes(b'fine\nbad \xe9 here\n')
  with pytest.raises(textfile.TextFileError,
                     match=r'in.txt, line 2: not UTF-8 \(byte 0xe9 at column 5\)'):
    textfile.read_lines(path)
  with pytest.raises(textfile.TextFileError, match='no such file'):
    textfile.read_lines(tmp_path / 'missing.txt')
