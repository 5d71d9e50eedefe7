"""TSV reading with bad-row accounting, writing, and the embedded corpus (no TensorFlow)."""

import logging

import pytest

from padir.data import corpus


def test_bible_splits_have_documented_sizes_and_all_columns():
  for split, n in corpus.BIBLE_NUM_EXAMPLES.items():
    rows = corpus.read_bible(split)
    assert set(rows) == set(corpus.BIBLE_COLUMNS)
    assert all(len(v) == n for v in rows.values())
  dev = corpus.read_bible('validation')
  assert dev['ref'][0] == 'Genesis 1:19'
  assert dev['es'][0].startswith('Y fué la tarde')
  assert dev['en'][0].startswith('There was evening')
  assert dev['en_kjv'][0].startswith('And the evening')


def test_bible_splits_are_disjoint():
  refs = {s: set(corpus.read_bible(s)['ref']) for s in corpus.BIBLE_FILES}
  assert not refs['train'] & refs['validation']
  assert not refs['train'] & refs['test']
  assert not refs['validation'] & refs['test']


def test_unknown_bible_split():
  with pytest.raises(ValueError, match='validation'):
    corpus.bible_path('dev')


@pytest.mark.parametrize('gz', [False, True])
def test_bad_rows_are_skipped_counted_and_named(tmp_path, caplog, gz, write_lines):
  lines = [b'source\ttarget'] + [f's{i}\tt{i}'.encode() for i in range(200)]
  lines.insert(5, b'only one column')  # line 6
  lines.insert(10, b'a\t  ')  # line 11: empty target
  lines.insert(20, b'caf\xe9\tbad bytes')  # line 21: latin-1, not UTF-8
  lines.insert(30, b'a\tb\tc')  # line 31
  path = write_lines(tmp_path / ('x.tsv.gz' if gz else 'x.tsv'), lines, gz=gz)
  with caplog.at_level(logging.WARNING, logger='padir.data.corpus'):
    rows, report = corpus.read_tsv(path, ['source', 'target'], max_bad_fraction=0.05)
  assert len(rows['source']) == 200 and rows['target'][-1] == 't199'
  assert report.num_rows == 204 and report.num_kept == 200 and report.num_bad == 4
  assert report.bad_lines == {
      corpus.WRONG_COLUMN_COUNT: [6, 31],
      corpus.EMPTY_FIELD: [11],
      corpus.INVALID_UTF8: [21],
  }
  message = caplog.text
  assert str(path) in message
  assert 'lines 6, 31' in message and 'lines 11' in message and 'lines 21' in message


def test_only_used_columns_must_be_non_empty(tmp_path, write_lines):
  path = write_lines(tmp_path / 'x.tsv', [b'a\tnote\tb', b'x\t\ty', b'u\tn\tv'])
  rows, report = corpus.read_tsv(path, ['a', 'b'], max_bad_fraction=0.0)
  assert rows == {'a': ['x', 'u'], 'b': ['y', 'v']} and report.num_bad == 0


def test_too_many_bad_rows_is_an_error_naming_the_file(tmp_path, write_lines):
  lines = [b'source\ttarget'] + [b'good\trow'] * 10 + [b'comma,separated'] * 3
  path = write_lines(tmp_path / 'x.tsv', lines)
  with pytest.raises(corpus.BadInputError, match=r'x\.tsv.*3 of 13.*max_bad_fraction=0\.1'):
    corpus.read_tsv(path, ['source', 'target'], max_bad_fraction=0.1)
  rows, _ = corpus.read_tsv(path, ['source', 'target'], max_bad_fraction=0.5)
  assert len(rows['source']) == 10


def test_missing_column_missing_file_and_empty_file(tmp_path, write_lines):
  path = write_lines(tmp_path / 'x.tsv', [b'a\tb', b'1\t2'])
  with pytest.raises(corpus.BadInputError, match=r"\['c'\] not in its header"):
    corpus.read_tsv(path, ['a', 'c'])
  with pytest.raises(corpus.BadInputError, match='no such file'):
    corpus.read_tsv(tmp_path / 'nope.tsv', ['a'])
  (tmp_path / 'empty.tsv').write_bytes(b'')
  with pytest.raises(corpus.BadInputError, match='empty'):
    corpus.read_tsv(tmp_path / 'empty.tsv', ['a'])
  with pytest.raises(corpus.BadInputError, match='no usable rows'):
    corpus.read_tsv(write_lines(tmp_path / 'h.tsv', [b'a\tb']), ['a'])


def test_headerless_file_with_given_names(tmp_path, write_lines):
  path = write_lines(tmp_path / 'x.tsv', [b'1\t2', b'3\t4'])
  rows, _ = corpus.read_tsv(path, ['tgt'], header=['src', 'tgt'])
  assert rows == {'tgt': ['2', '4']}


def test_blank_lines_bom_and_crlf_are_not_bad_rows(tmp_path):
  # 50 rows and a trailing blank line (plus one in the middle) pass the 1% bad-row limit.
  lines = ['\ufeffsrc\ttgt'] + [f's{i}\tt {i}\u2028x' for i in range(50)]
  lines.insert(20, '   ')
  path = tmp_path / 'x.tsv'
  path.write_bytes(('\r\n'.join(lines) + '\r\n\r\n').encode('utf-8'))
  rows, report = corpus.read_tsv(path, ['src', 'tgt'])
  assert report.num_rows == report.num_kept == 50 and not report.bad_lines
  assert rows['tgt'][:2] == ['t 0\u2028x', 't 1\u2028x']  # U+2028 does not end a line
  headerless = tmp_path / 'y.tsv'
  headerless.write_bytes(b'\xef\xbb\xbfa\tb\n\n')
  rows, _ = corpus.read_tsv(headerless, ['src'], header=['src', 'tgt'], max_bad_fraction=0.0)
  assert rows == {'src': ['a']}  # the byte order mark is not part of the first field


def test_write_tsv_round_trips_and_flattens_tabs_and_newlines(tmp_path):
  path = tmp_path / 'd.tsv.gz'
  n = corpus.write_distilled_tsv(path, ['uno\tdos', 'tres'], ['one\ntwo', 'three'])
  assert n == 2
  rows, report = corpus.read_tsv(path, corpus.DISTILLED_COLUMNS, max_bad_fraction=0.0)
  assert rows == {'source': ['uno dos', 'tres'], 'teacher': ['one two', 'three']}
  assert report.num_bad == 0
  with pytest.raises(ValueError, match='2 sources but 1'):
    corpus.write_distilled_tsv(path, ['a', 'b'], ['c'])
