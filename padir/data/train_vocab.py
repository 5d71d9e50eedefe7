r"""Trains a joint SentencePiece vocabulary on parallel TSV text.

TensorFlow-free. The shipped vocabulary was made with the defaults::

  python -m padir.data.train_vocab

which trains a unigram model with 8,000 pieces (pad 0, eos 1, unk 2, no BOS piece: the T5 /
seqio layout) on the Spanish and English columns of the embedded Bible corpus's train split and
writes ``padir/data/assets/vocab/bible_es_en_8k.model``. seqio appends the 100 extra ids at load
time (``SentencePieceVocabulary(path, extra_ids=100)``); padir's [MASK], [BOS] and [LENGTH] come
from those. Training is deterministic (one thread, every sentence used), so rerunning the command
reproduces the file byte for byte; its sha256 is ``padir.data.vocab.BIBLE_VOCAB_SHA256``.

For your own data, from TSV files or from any registered task's source text (this one imports
TensorFlow and seqio)::

  python -m padir.data.train_vocab --input=train.tsv --columns=de,en \
      --vocab_size=32000 --output=/path/de_en_32k.model
  python -m padir.data.train_vocab --task=wmt14_de_en --max_sentences=2000000 \
      --vocab_size=32000 --output=/path/de_en_32k.model
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
from typing import Iterable, Iterator, Sequence

from padir import errors
from padir.data import corpus

DEFAULT_OUTPUT = corpus.ASSETS_DIR / 'vocab' / 'bible_es_en_8k.model'
DEFAULT_COLUMNS = ('es', 'en')
DEFAULT_VOCAB_SIZE = 8000


def tsv_sentences(paths: Sequence[str | os.PathLike[str]],
                  columns: Sequence[str] = DEFAULT_COLUMNS) -> Iterator[str]:
  """Every field of the given columns of TSV files (with header lines)."""
  for path in paths:
    rows, _ = corpus.read_tsv(path, columns)
    for column in columns:
      yield from rows[column]


def task_sentences(task_name: str, split: str = 'train',
                   max_sentences: int | None = None) -> Iterator[str]:
  """Source and target text of a registered padir task (imports TensorFlow and seqio)."""
  from padir.data import tasks  # pylint: disable=g-import-not-at-top

  ds = tasks.get_task(task_name).source.get_dataset(split, shuffle=False)
  if max_sentences:
    ds = ds.take(-(-max_sentences // 2))
  for ex in ds.as_numpy_iterator():
    yield ex['inputs'].decode('utf-8')
    yield ex['targets'].decode('utf-8')


def train_sentencepiece(sentences: Iterable[str],
                        vocab_size: int = DEFAULT_VOCAB_SIZE,
                        model_type: str = 'unigram',
                        character_coverage: float = 1.0) -> bytes:
  """Trains a SentencePiece model on the sentences; returns the model bytes.

  Ids 0, 1, 2 are pad, eos and unk and there is no BOS piece, as seqio expects.
  """
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top

  if vocab_size <= 3:
    raise ValueError(f'vocab_size={vocab_size} must be > 3 (pad, eos, unk and real pieces).')
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(sentences),
      model_writer=model,
      vocab_size=vocab_size,
      model_type=model_type,
      character_coverage=character_coverage,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      input_sentence_size=0,  # use every sentence: no sampling, so no randomness
      shuffle_input_sentence=False,
      num_threads=1,
      max_sentence_length=100000,
      minloglevel=2)
  return model.getvalue()


@errors.command('python -m padir.data.train_vocab')
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(
      prog='python -m padir.data.train_vocab', description=__doc__.split('\n')[0])
  parser.add_argument('--input', action='append', default=None,
                      help='TSV file(s) with a header line; default: the Bible train split.')
  parser.add_argument('--task', help='train on this registered task\'s text instead')
  parser.add_argument('--split', default='train', help='the --task split (default: train)')
  parser.add_argument('--max_sentences', type=int, default=None,
                      help='with --task: read at most this many sentences')
  parser.add_argument('--columns', default=','.join(DEFAULT_COLUMNS),
                      help='comma-separated columns to train on (default: %(default)s).')
  parser.add_argument('--vocab_size', type=int, default=DEFAULT_VOCAB_SIZE)
  parser.add_argument('--model_type', default='unigram', choices=('unigram', 'bpe'))
  parser.add_argument('--output', default=str(DEFAULT_OUTPUT))
  args = parser.parse_args(argv)
  if args.task:
    sentences = task_sentences(args.task, args.split, args.max_sentences)
  else:
    sentences = tsv_sentences(args.input or [corpus.bible_path('train')], args.columns.split(','))
  model = train_sentencepiece(sentences, args.vocab_size, args.model_type)
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with open(args.output, 'wb') as f:
    f.write(model)
  print(f'wrote {args.output} ({len(model)} bytes, {args.vocab_size} pieces), '
        f'sha256 {hashlib.sha256(model).hexdigest()}')
  return 0


if __name__ == '__main__':
  sys.exit(main())
