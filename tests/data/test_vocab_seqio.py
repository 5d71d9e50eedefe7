"""Vocabularies as the tasks use them: ids agree with seqio, special ids fit the layout."""

import os

import pytest

seqio = pytest.importorskip('seqio')

from padir.data import corpus  # pylint: disable=wrong-import-position
from padir.data import tasks  # pylint: disable=wrong-import-position
from padir.data import vocab  # pylint: disable=wrong-import-position

SEQIO_SPM = os.path.join(os.path.dirname(seqio.__file__), 'test_data', 'sentencepiece',
                         'sentencepiece.model')


def test_shipped_vocabulary_file_is_the_recorded_one():
  assert vocab.file_sha256(vocab.BIBLE_VOCAB_PATH) == vocab.BIBLE_VOCAB_SHA256
  task_vocab = tasks.get_task('bible_es_en').output_features['targets'].vocabulary
  assert task_vocab.vocab_size == 8100 and task_vocab.extra_ids == 100
  assert vocab.load_tokenizer(task_vocab).fingerprint()['sha256'] == vocab.BIBLE_VOCAB_SHA256


@pytest.mark.parametrize('spec', ['bible', 'byte', f'sentencepiece:{SEQIO_SPM}:10'])
def test_tf_free_tokenizer_matches_seqio(spec):
  seqio_vocab = vocab.seqio_vocabulary(spec)
  tok = vocab.load_tokenizer(spec)
  assert tok.vocab_size == seqio_vocab.vocab_size
  texts = corpus.read_bible('test')['es'][:20] + corpus.read_bible('test')['en'][:20]
  if 'sentencepiece:' in spec:
    texts = ['this is a test', 'that test is the best']
  for text in texts:
    ids = seqio_vocab.encode(text)
    assert tok.encode(text) == ids
    assert tok.decode(ids) == seqio_vocab.decode(ids)


@pytest.mark.parametrize('spec,real', [('bible', 8000), ('byte', 259)])
def test_special_ids_are_distinct_extra_ids_and_random_tokens_are_real_pieces(spec, real):
  seqio_vocab = vocab.seqio_vocabulary(spec)
  ids = vocab.load_tokenizer(spec).special_ids(mask_range_length=64)
  named = [ids.mask, ids.bos, ids.length]
  block = [ids.mask_i(i) for i in range(64)]
  assert len(set(named + block)) == 67
  assert all(real <= i < seqio_vocab.vocab_size for i in named + block)
  assert ids.mask == seqio_vocab.vocab_size - 1  # T5's first sentinel, <extra_id_0>
  assert ids.random_token_range == (3, real)
  if spec == 'bible':
    assert seqio_vocab.tokenizer.id_to_piece(real - 1) not in ('<pad>', '</s>', '<unk>')
    assert seqio_vocab.decode([ids.mask]) == '<extra_id_0>'  # a sentinel, not a real piece


def test_too_few_extra_ids_fail_with_the_fix():
  with pytest.raises(ValueError, match=r'has 2 extra ids but padir needs 3.*extra_ids >= 3'):
    vocab.load_tokenizer(f'sentencepiece:{SEQIO_SPM}:2').special_ids()


def test_model_file_with_embedded_extra_ids(tmp_path):
  # seqio writes the extra ids into the model proto: such a file is laid out like mT5's.
  embedded = tmp_path / 'embedded.model'
  embedded.write_bytes(seqio.SentencePieceVocabulary(SEQIO_SPM, extra_ids=10).sp_model)
  tok = vocab.load_tokenizer(f'sentencepiece:{embedded}:0')
  assert (tok.num_real_pieces, tok.extra_ids) == (26, 10)
  assert tok.vocab_size == vocab.seqio_vocabulary(f'sentencepiece:{embedded}:0').vocab_size
  assert tok.special_ids().random_token_range == (3, 26)
