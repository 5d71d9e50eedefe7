"""Vocabulary specs, TF-free tokenizers and fingerprints (no TensorFlow)."""

import pytest
import sentencepiece as spm

from padir.data import corpus
from padir.data import train_vocab
from padir.data import vocab


@pytest.fixture(scope='module')
def tiny_model(tmp_path_factory):
  """A 150-piece SentencePiece model trained on a few Bible verses."""
  rows = corpus.read_bible('test')
  out = tmp_path_factory.mktemp('vocab') / 'tiny.model'
  out.write_bytes(train_vocab.train_sentencepiece(rows['en'][:200] + rows['es'][:200],
                                                  vocab_size=150))
  return out


def test_spec_strings():
  assert vocab.parse_vocabulary('bible') == vocab.bible_vocabulary()
  assert str(vocab.bible_vocabulary()) == 'bible'
  assert vocab.parse_vocabulary('byte') == vocab.VocabularySpec('byte', None, 100)
  assert vocab.parse_vocabulary('byte:7') == vocab.VocabularySpec('byte', None, 7)
  assert vocab.parse_vocabulary('a/b.model') == vocab.VocabularySpec('sentencepiece',
                                                                     'a/b.model', 100)
  assert vocab.parse_vocabulary('sentencepiece:a/b.model:5') == vocab.VocabularySpec(
      'sentencepiece', 'a/b.model', 5)
  spec = vocab.VocabularySpec('sentencepiece', 'x.model', 3)
  assert vocab.parse_vocabulary(str(spec)) == spec
  with pytest.raises(ValueError, match='Cannot read vocabulary'):
    vocab.parse_vocabulary('t5')
  with pytest.raises(ValueError, match='not an integer'):
    vocab.parse_vocabulary('byte:many')
  with pytest.raises(ValueError, match='does not exist'):
    vocab.load_tokenizer('missing.model')
  with pytest.raises(ValueError, match='local files'):
    vocab.load_tokenizer('gs://bucket/spm.model')


def test_shipped_tokenizer_round_trips_and_ids_follow_the_t5_layout():
  tok = vocab.load_tokenizer('bible')
  assert (tok.num_real_pieces, tok.extra_ids, tok.vocab_size) == (8000, 100, 8100)
  assert tok.sha256 == vocab.BIBLE_VOCAB_SHA256 == vocab.file_sha256(vocab.BIBLE_VOCAB_PATH)
  ids = tok.special_ids()
  assert (ids.pad, ids.eos, ids.unk, ids.mask, ids.bos, ids.length) == (0, 1, 2, 8099, 8098,
                                                                        8097)
  text = 'En el principio creó Dios los cielos y la tierra.'
  encoded = tok.encode(text)
  assert all(3 <= i < 8000 for i in encoded)
  assert tok.decode(encoded) == text
  # Decoding stops at EOS and drops pad and the special/extra ids.
  assert tok.decode([ids.mask] + encoded + [1, 5, 6]) == text
  assert tok.decode_batch([encoded + [1, 0, 0]]) == [text]
  assert tok.piece(ids.mask) == '<extra_id_0>'


def test_byte_tokenizer():
  tok = vocab.load_tokenizer('byte')
  assert (tok.num_real_pieces, tok.vocab_size, tok.sha256) == (259, 359, None)
  assert tok.encode('né') == [b + 3 for b in 'né'.encode('utf-8')]
  assert tok.decode(tok.encode('né') + [1, 70]) == 'né'
  assert tok.special_ids().random_token_range == (3, 259)


def test_models_without_the_t5_layout_are_refused(tmp_path):
  rows = corpus.read_bible('test')['en'][:200]
  path = tmp_path / 'default_ids.model'
  spm.SentencePieceTrainer.train(sentence_iterator=iter(rows), model_prefix=str(path)[:-6],
                                 vocab_size=120, minloglevel=2)  # unk 0, bos 1, eos 2
  with pytest.raises(ValueError, match='needs pad=0, eos=1, unk=2'):
    vocab.load_tokenizer(str(path))


def test_fingerprints(tiny_model):
  tok = vocab.load_tokenizer(str(tiny_model))
  print_ = tok.fingerprint()
  assert print_['sha256'] == vocab.file_sha256(tiny_model) and print_['vocab_size'] == 250
  vocab.check_fingerprint(print_, vocab.load_tokenizer(f'sentencepiece:{tiny_model}:100'))
  with pytest.raises(ValueError, match=r'extra_ids: 100 there, 10 here'):
    vocab.check_fingerprint(print_, vocab.load_tokenizer(f'sentencepiece:{tiny_model}:10'))
  with pytest.raises(ValueError, match='vocabulary differs from the one the checkpoint'):
    vocab.check_fingerprint(print_, vocab.load_tokenizer('bible'))


def test_too_few_extra_ids_fail_with_the_fix(tiny_model):
  with pytest.raises(ValueError, match=r'extra_ids >= 3'):
    vocab.load_tokenizer(f'sentencepiece:{tiny_model}:2').special_ids()
  with pytest.raises(ValueError, match=r'extra_ids >= 35'):
    vocab.load_tokenizer(f'sentencepiece:{tiny_model}:20').special_ids(mask_range_length=32)
