"""Special token ids, computed in one place.

padir follows the T5 / seqio vocabulary layout:

* ids ``0, 1, 2`` are pad, EOS and UNK;
* ids ``[3, num_real_pieces)`` are real SentencePiece pieces (or bytes);
* ids ``[num_real_pieces, num_real_pieces + extra_ids)`` are seqio's extra ids (sentinels);
* ids up to ``model_vocab_size`` are padding rows of the embedding (T5 pads 32100 to 32128).

The PaDIR special tokens are carved out of the extra ids, counting down from the last one
(T5's sentinel convention), and never overlap each other or a real piece::

    [MASK]   = V_s - 1
    [BOS]    = V_s - 2
    [LENGTH] = V_s - 3
    [MASK_i] = V_s - 4 - max_target_length + i   for i in [0, max_target_length)  (optional)

where ``V_s = num_real_pieces + extra_ids``. The reference implementation let the [MASK_i]
block overlap [BOS] and [LENGTH], and drew random corruption tokens from a range that included
the special ids; here random tokens come only from ``[3, num_real_pieces)``.
"""

from __future__ import annotations

import dataclasses

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2
FIRST_REAL_PIECE = 3
NUM_NAMED_SPECIALS = 3  # [MASK], [BOS], [LENGTH]


@dataclasses.dataclass(frozen=True)
class SpecialIds:
  """The special token ids of one vocabulary.

  Attributes:
    num_real_pieces: number of ids below the extra ids (pad/eos/unk included).
    extra_ids: number of seqio extra ids appended after the real pieces.
    model_vocab_size: rows of the embedding table (>= num_real_pieces + extra_ids).
    mask: the [MASK] id.
    bos: the [BOS] id.
    length: the [LENGTH] id (prepended to the encoder input for the length head).
    mask_range_start: first id of the [MASK_i] block, or None when not reserved.
    mask_range_size: number of [MASK_i] ids (max_target_length) or 0.
    pad, eos, unk: the fixed T5 ids.
  """

  num_real_pieces: int
  extra_ids: int
  model_vocab_size: int
  mask: int
  bos: int
  length: int
  mask_range_start: int | None = None
  mask_range_size: int = 0
  pad: int = PAD_ID
  eos: int = EOS_ID
  unk: int = UNK_ID

  @property
  def random_token_range(self) -> tuple[int, int]:
    """Half-open range ``[lo, hi)`` of ids that random corruption may draw (real pieces only)."""
    return FIRST_REAL_PIECE, self.num_real_pieces

  def mask_i(self, position: int) -> int:
    """The position-specific [MASK_i] id for ``position``."""
    if self.mask_range_start is None:
      raise ValueError(
          'No [MASK_i] ids were reserved: build SpecialIds with '
          'special_ids(..., mask_range_length=max_target_length).')
    if not 0 <= position < self.mask_range_size:
      raise ValueError(
          f'[MASK_i] position {position} is outside [0, {self.mask_range_size}).')
    return self.mask_range_start + position

  def is_special(self, token_id: int) -> bool:
    """True for pad/eos/unk and every id at or above the first extra id."""
    return token_id < FIRST_REAL_PIECE or token_id >= self.num_real_pieces


def special_ids(num_real_pieces: int,
                extra_ids: int,
                model_vocab_size: int | None = None,
                mask_range_length: int = 0) -> SpecialIds:
  """Derives the special ids of a vocabulary and checks that they fit.

  Args:
    num_real_pieces: ids below the extra ids; for a seqio SentencePieceVocabulary this is
      ``vocab.vocab_size - vocab.extra_ids`` (the SentencePiece model's own size).
    extra_ids: how many extra ids the vocabulary appends (seqio's ``extra_ids``).
    model_vocab_size: embedding rows of the network; defaults to
      ``num_real_pieces + extra_ids``.
    mask_range_length: reserve this many position-specific [MASK_i] ids (set it to the
      decoder length to use the MASK_RANGE canvas); 0 reserves none.

  Returns:
    The SpecialIds.

  Raises:
    ValueError: when the vocabulary has too few extra ids or the model vocabulary is too small,
      with the fix in the message.
  """
  if num_real_pieces <= FIRST_REAL_PIECE:
    raise ValueError(
        f'num_real_pieces={num_real_pieces}: a vocabulary needs pad, eos, unk and at least one '
        'real piece.')
  if mask_range_length < 0:
    raise ValueError(f'mask_range_length={mask_range_length} must be >= 0.')
  needed = NUM_NAMED_SPECIALS + mask_range_length
  if extra_ids < needed:
    what = '[MASK], [BOS], [LENGTH]'
    if mask_range_length:
      what += f' and {mask_range_length} [MASK_i] ids'
    raise ValueError(
        f'The vocabulary has {extra_ids} extra ids but padir needs {needed} ({what}). '
        f'Build the vocabulary with extra_ids >= {needed} (T5 vocabularies use 100), or reserve '
        'fewer [MASK_i] ids (decoder_input_scheme other than mask_range).')
  seqio_size = num_real_pieces + extra_ids
  if model_vocab_size is None:
    model_vocab_size = seqio_size
  if model_vocab_size < seqio_size:
    raise ValueError(
        f'model vocab_size={model_vocab_size} is smaller than the vocabulary '
        f'({num_real_pieces} pieces + {extra_ids} extra ids = {seqio_size}); set '
        f'T5Config.vocab_size >= {seqio_size} (T5 rounds it up to a multiple of 128).')
  mask = seqio_size - 1
  bos = seqio_size - 2
  length = seqio_size - 3
  start = seqio_size - 3 - mask_range_length if mask_range_length else None
  return SpecialIds(
      num_real_pieces=num_real_pieces,
      extra_ids=extra_ids,
      model_vocab_size=model_vocab_size,
      mask=mask,
      bos=bos,
      length=length,
      mask_range_start=start,
      mask_range_size=mask_range_length)
