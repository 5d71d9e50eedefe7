r"""Vocabularies: descriptions, TensorFlow-free tokenizers, fingerprints and special ids.

TensorFlow-free. seqio is imported only inside :func:`seqio_vocabulary`.

A vocabulary is described by a :class:`VocabularySpec` (what to load) and used through a
:class:`Tokenizer` (encode / decode with the ``sentencepiece`` library or plain UTF-8 bytes, no
TensorFlow). Both follow the T5 / seqio id layout: pad 0, EOS 1, UNK 2, then the real pieces, then
``extra_ids`` extra ids from which padir takes [MASK], [BOS] and [LENGTH]
(:mod:`padir.special_ids`). A spec can be written as a string, which is what gin files and
command lines use:

* ``'bible'``: the shipped joint Spanish-English unigram model (8,000 pieces, 100 extra ids);
* ``'byte'`` or ``'byte:N'``: seqio's ByteVocabulary (UTF-8 bytes) with 100 or N extra ids;
* ``'PATH.model'`` or ``'sentencepiece:PATH[:N]'``: any local SentencePiece model (T5, mT5, your
  own) with 100 or N extra ids appended by seqio.

SentencePiece models whose last pieces already are ``<extra_id_N>`` (mT5's
``mc4.250000.100extra``) are recognised: those pieces count as extra ids, never as real pieces.

The sha256 of the model file identifies a SentencePiece vocabulary; checkpoints and exported
arrays record :meth:`Tokenizer.fingerprint` and :func:`check_fingerprint` compares them.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import hashlib
import os
import pathlib
import re
from typing import Any, Mapping, Sequence

from padir import special_ids as special_ids_lib

ASSETS_DIR = pathlib.Path(__file__).resolve().parent / 'assets'
BIBLE_VOCAB_PATH = ASSETS_DIR / 'vocab' / 'bible_es_en_8k.model'
# sha256 of the shipped model; `python -m padir.data.train_vocab` reproduces it byte for byte.
BIBLE_VOCAB_SHA256 = 'ffde9ce259030bdf93e8fe5305214a95a33f47cc6d809702cb3dde05d1fc902a'
DEFAULT_EXTRA_IDS = 100

SENTENCEPIECE = 'sentencepiece'
BYTE = 'byte'
_EXTRA_ID_PIECE = re.compile(r'^\u2581?<extra_id_\d+>$')
_NUM_BYTE_SPECIALS = 3  # pad, eos, unk come before the 256 byte ids (seqio.ByteVocabulary)


@dataclasses.dataclass(frozen=True)
class VocabularySpec:
  """What vocabulary to load.

  Attributes:
    kind: 'sentencepiece' or 'byte'.
    path: the SentencePiece model file (None for 'byte').
    extra_ids: extra ids appended after the real pieces (seqio's ``extra_ids``).
  """

  kind: str
  path: str | None = None
  extra_ids: int = DEFAULT_EXTRA_IDS

  def __post_init__(self):
    if self.kind not in (SENTENCEPIECE, BYTE):
      raise ValueError(f'Unknown vocabulary kind {self.kind!r}; use {SENTENCEPIECE!r} or {BYTE!r}.')
    if self.kind == SENTENCEPIECE and not self.path:
      raise ValueError('A sentencepiece vocabulary needs the path of its .model file.')
    if self.kind == BYTE and self.path is not None:
      raise ValueError('A byte vocabulary takes no path.')
    if not isinstance(self.extra_ids, int) or self.extra_ids < 0:
      raise ValueError(f'extra_ids={self.extra_ids!r} must be an integer >= 0.')

  def __str__(self) -> str:
    if self.kind == BYTE:
      return BYTE if self.extra_ids == DEFAULT_EXTRA_IDS else f'{BYTE}:{self.extra_ids}'
    if self.path == str(BIBLE_VOCAB_PATH) and self.extra_ids == DEFAULT_EXTRA_IDS:
      return 'bible'
    return f'{SENTENCEPIECE}:{self.path}:{self.extra_ids}'


def bible_vocabulary() -> VocabularySpec:
  """The shipped joint Spanish-English SentencePiece vocabulary with 100 extra ids."""
  return VocabularySpec(SENTENCEPIECE, str(BIBLE_VOCAB_PATH), DEFAULT_EXTRA_IDS)


def _parse_extra(text: str, what: str) -> int:
  try:
    value = int(text)
  except ValueError:
    raise ValueError(f'{what}: extra ids {text!r} is not an integer.') from None
  return value


def parse_vocabulary(value: Any) -> VocabularySpec:
  """Turns a spec string, a VocabularySpec or a seqio vocabulary into a VocabularySpec.

  Args:
    value: see the module docstring for the string forms; a ``seqio.SentencePieceVocabulary``
      or ``seqio.ByteVocabulary`` is described by its file and extra ids.

  Returns:
    The VocabularySpec.

  Raises:
    ValueError: for an unknown form, with the accepted forms in the message.
  """
  if isinstance(value, VocabularySpec):
    return value
  if isinstance(value, os.PathLike):
    value = os.fspath(value)
  if isinstance(value, str):
    text = value.strip()
    if text in ('bible', 'bible_es_en_8k'):
      return bible_vocabulary()
    if text == BYTE:
      return VocabularySpec(BYTE, None, DEFAULT_EXTRA_IDS)
    if text.startswith(BYTE + ':'):
      return VocabularySpec(BYTE, None, _parse_extra(text[len(BYTE) + 1:], text))
    if text.startswith(SENTENCEPIECE + ':'):
      rest = text[len(SENTENCEPIECE) + 1:]
      head, sep, tail = rest.rpartition(':')
      if sep and tail.isdigit() and head:
        return VocabularySpec(SENTENCEPIECE, head, int(tail))
      return VocabularySpec(SENTENCEPIECE, rest, DEFAULT_EXTRA_IDS)
    if text.endswith('.model'):
      return VocabularySpec(SENTENCEPIECE, text, DEFAULT_EXTRA_IDS)
    raise ValueError(
        f'Cannot read vocabulary {value!r}. Use "bible", "byte", "byte:N", a path ending in '
        '".model", or "sentencepiece:PATH[:EXTRA_IDS]".')
  # A seqio vocabulary (duck-typed so that this module does not import seqio).
  model_file = getattr(value, 'sentencepiece_model_file', None)
  extra_ids = getattr(value, 'extra_ids', None)
  if model_file is not None and extra_ids is not None:
    return VocabularySpec(SENTENCEPIECE, str(model_file), int(extra_ids))
  if type(value).__name__ == 'ByteVocabulary' and extra_ids is not None:
    return VocabularySpec(BYTE, None, int(extra_ids))
  raise ValueError(
      f'Cannot use {type(value).__name__} as a vocabulary; padir supports SentencePiece models '
      'and seqio.ByteVocabulary.')


def file_sha256(path: str | os.PathLike[str]) -> str:
  """Hex sha256 of a file."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


class Tokenizer(abc.ABC):
  """Encodes and decodes text without TensorFlow; same ids as the matching seqio vocabulary.

  Attributes:
    spec: the VocabularySpec.
    num_real_pieces: ids below the extra ids (pad, eos and unk included).
    extra_ids: all extra ids (appended ones plus any ``<extra_id_N>`` pieces in the model).
    vocab_size: ``num_real_pieces + extra_ids`` (seqio's ``vocab_size``).
    sha256: sha256 of the model file, or None for the byte vocabulary.
  """

  spec: VocabularySpec
  num_real_pieces: int
  extra_ids: int
  sha256: str | None

  @property
  def vocab_size(self) -> int:
    return self.num_real_pieces + self.extra_ids

  @abc.abstractmethod
  def encode(self, text: str) -> list[int]:
    """Token ids of ``text`` (no EOS)."""

  @abc.abstractmethod
  def _decode_real(self, ids: list[int]) -> str:
    """Text of ids that are all real pieces (or UNK)."""

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ``ids`` up to the first EOS; pad, unk-free special and extra ids are dropped."""
    out = []
    for i in ids:
      i = int(i)
      if i == special_ids_lib.EOS_ID:
        break
      if special_ids_lib.FIRST_REAL_PIECE <= i < self.num_real_pieces or (
          i == special_ids_lib.UNK_ID):
        out.append(i)
    return self._decode_real(out)

  def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
    return [self.encode(t) for t in texts]

  def decode_batch(self, rows: Sequence[Sequence[int]]) -> list[str]:
    """Decodes each row of a [B, L] array or list of id lists."""
    return [self.decode(r) for r in rows]

  def special_ids(self,
                  model_vocab_size: int | None = None,
                  mask_range_length: int = 0) -> special_ids_lib.SpecialIds:
    """padir's special ids for this vocabulary (fails clearly if there are too few extra ids)."""
    return special_ids_lib.special_ids(
        num_real_pieces=self.num_real_pieces,
        extra_ids=self.extra_ids,
        model_vocab_size=model_vocab_size,
        mask_range_length=mask_range_length)

  def fingerprint(self) -> dict[str, Any]:
    """What identifies this vocabulary, JSON-serialisable (saved with checkpoints and exports)."""
    return {
        'kind': self.spec.kind,
        'sha256': self.sha256,
        'num_real_pieces': self.num_real_pieces,
        'extra_ids': self.extra_ids,
        'vocab_size': self.vocab_size,
        'spec': str(self.spec),
    }


class SentencePieceTokenizer(Tokenizer):
  """A SentencePiece model used through the ``sentencepiece`` library."""

  def __init__(self, path: str | os.PathLike[str], extra_ids: int = DEFAULT_EXTRA_IDS):
    import sentencepiece as spm  # pylint: disable=g-import-not-at-top

    path = os.fspath(path)
    if '://' in path:
      raise ValueError(
          f'{path}: padir reads vocabularies from local files; copy the model to this machine '
          '(e.g. gsutil cp or a Hugging Face download) and pass its local path.')
    if not os.path.isfile(path):
      raise ValueError(f'SentencePiece model {path} does not exist.')
    self.spec = VocabularySpec(SENTENCEPIECE, path, extra_ids)
    with open(path, 'rb') as f:
      model = f.read()
    self.sha256 = hashlib.sha256(model).hexdigest()
    self.processor = spm.SentencePieceProcessor()
    try:
      self.processor.LoadFromSerializedProto(model)
    except RuntimeError as e:
      raise ValueError(f'{path} is not a SentencePiece model ({e}).') from None
    sp = self.processor
    if (sp.pad_id(), sp.eos_id(), sp.unk_id()) != (special_ids_lib.PAD_ID,
                                                  special_ids_lib.EOS_ID,
                                                  special_ids_lib.UNK_ID):
      raise ValueError(
          f'{path} has pad={sp.pad_id()}, eos={sp.eos_id()}, unk={sp.unk_id()}; padir (like T5 '
          'and seqio) needs pad=0, eos=1, unk=2. Retrain it with pad_id=0 eos_id=1 unk_id=2 '
          'bos_id=-1 (python -m padir.data.train_vocab does this).')
    size = sp.get_piece_size()
    embedded = 0
    while embedded < size - 1 and _EXTRA_ID_PIECE.match(sp.id_to_piece(size - 1 - embedded)):
      embedded += 1
    self.num_real_pieces = size - embedded
    self.extra_ids = embedded + extra_ids

  def encode(self, text: str) -> list[int]:
    return self.processor.encode(text, out_type=int)

  def _decode_real(self, ids: list[int]) -> str:
    return self.processor.decode(ids)

  def piece(self, token_id: int) -> str:
    """The piece of a real id, or a bracketed name for pad/eos and extra ids."""
    if 0 <= token_id < self.num_real_pieces:
      return self.processor.id_to_piece(token_id)
    if self.num_real_pieces <= token_id < self.vocab_size:
      return f'<extra_id_{self.vocab_size - 1 - token_id}>'
    raise ValueError(f'id {token_id} is outside the vocabulary [0, {self.vocab_size}).')


class ByteTokenizer(Tokenizer):
  """UTF-8 bytes shifted by 3 (seqio.ByteVocabulary's layout)."""

  def __init__(self, extra_ids: int = DEFAULT_EXTRA_IDS):
    self.spec = VocabularySpec(BYTE, None, extra_ids)
    self.sha256 = None
    self.num_real_pieces = _NUM_BYTE_SPECIALS + 256
    self.extra_ids = extra_ids

  def encode(self, text: str) -> list[int]:
    return [b + _NUM_BYTE_SPECIALS for b in text.encode('utf-8')]

  def _decode_real(self, ids: list[int]) -> str:
    data = bytes(i - _NUM_BYTE_SPECIALS for i in ids if i >= _NUM_BYTE_SPECIALS)
    return data.decode('utf-8', errors='ignore')


@functools.lru_cache(maxsize=16)
def _load_cached(spec: VocabularySpec, mtime_ns: int) -> Tokenizer:
  del mtime_ns  # part of the cache key only: a rewritten file is loaded again
  if spec.kind == BYTE:
    return ByteTokenizer(spec.extra_ids)
  return SentencePieceTokenizer(spec.path, spec.extra_ids)


def load_tokenizer(vocabulary: Any = 'bible') -> Tokenizer:
  """A (cached) TensorFlow-free Tokenizer for any form :func:`parse_vocabulary` accepts."""
  spec = parse_vocabulary(vocabulary)
  mtime = 0
  if spec.kind == SENTENCEPIECE:
    try:
      mtime = os.stat(spec.path).st_mtime_ns
    except OSError:
      mtime = -1
  return _load_cached(spec, mtime)


def check_available(vocabulary: Any) -> VocabularySpec:
  """Fails with a clear message when a SentencePiece vocabulary file is missing."""
  spec = parse_vocabulary(vocabulary)
  if spec.kind == SENTENCEPIECE and not os.path.isfile(spec.path):
    raise ValueError(
        f'The vocabulary file {spec.path} does not exist. Train one with '
        '`python -m padir.data.train_vocab --output=' + spec.path + ' ...` (see docs/data.md) '
        'or point the task at an existing SentencePiece model.')
  return spec


def check_fingerprint(expected: Mapping[str, Any], tokenizer: Tokenizer,
                      what: str = 'the checkpoint') -> None:
  """Raises ValueError when ``tokenizer`` differs from a saved fingerprint.

  The model file's sha256 (or the byte kind), the number of real pieces and the extra ids must
  match; the path may differ (the same file on another machine).
  """
  actual = tokenizer.fingerprint()
  keys = ('kind', 'sha256', 'num_real_pieces', 'extra_ids')
  diffs = [f'{k}: {expected.get(k)!r} there, {actual[k]!r} here' for k in keys
           if expected.get(k) != actual[k]]
  if diffs:
    raise ValueError(
        f'The vocabulary differs from the one {what} was made with ({"; ".join(diffs)}; '
        f'it used {expected.get("spec")!r}, this run uses {actual["spec"]!r}). Use the same '
        'vocabulary file and extra_ids.')


def seqio_vocabulary(vocabulary: Any):
  """The seqio vocabulary for a spec (imports seqio and TensorFlow)."""
  import seqio  # pylint: disable=g-import-not-at-top

  spec = parse_vocabulary(vocabulary)
  if spec.kind == BYTE:
    return seqio.ByteVocabulary(extra_ids=spec.extra_ids)
  return _cached_sentencepiece_vocabulary(spec.path, spec.extra_ids)


@functools.lru_cache(maxsize=16)
def _cached_sentencepiece_vocabulary(path: str, extra_ids: int):
  import seqio  # pylint: disable=g-import-not-at-top
  return seqio.SentencePieceVocabulary(path, extra_ids=extra_ids)
