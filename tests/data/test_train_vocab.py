"""The vocabulary training script (no TensorFlow)."""

import hashlib
import random

import sentencepiece as spm

from padir.data import corpus
from padir.data import train_vocab
from padir.data import vocab


def test_script_reproduces_the_shipped_vocabulary():
  model = train_vocab.train_sentencepiece(
      train_vocab.tsv_sentences([corpus.bible_path('train')]))
  assert hashlib.sha256(model).hexdigest() == vocab.BIBLE_VOCAB_SHA256


def test_script_on_user_data(tmp_path, capsys):
  tsv = tmp_path / 'train.tsv'
  rng = random.Random(0)
  word = lambda: ''.join(rng.choice('abcdefghijklmnopqrstuvwxyzäöü') for _ in range(5))
  words = [word() for _ in range(200)]
  sentence = lambda: ' '.join(rng.choice(words) for _ in range(8))
  corpus.write_tsv(tsv, ['de', 'en'], [(sentence(), sentence()) for _ in range(500)])
  out = tmp_path / 'x.model'
  assert train_vocab.main([f'--input={tsv}', '--columns=de,en', '--vocab_size=100',
                           f'--output={out}']) == 0
  sp = spm.SentencePieceProcessor(model_file=str(out))
  assert sp.get_piece_size() == 100
  assert (sp.pad_id(), sp.eos_id(), sp.unk_id(), sp.bos_id()) == (0, 1, 2, -1)
  assert vocab.file_sha256(out) in capsys.readouterr().out
  assert vocab.load_tokenizer(str(out)).special_ids().mask == 199
