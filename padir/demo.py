"""``padir demo``: tiny AR and PaDIR forward passes on sentences of the embedded corpus.

The models are freshly initialised (untrained), so their predictions are random: the demo
shows the data path (TF-free tokenisation, special ids, encoder with length head, causal and
bidirectional decoders) and how long one jitted pass takes on this machine.
"""

from __future__ import annotations

import argparse
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from padir import errors
from padir.data import corpus, vocab
from padir.network import T5Config, Transformer, check_tokens, top_k_lengths


def _pad(rows: list[list[int]], length: int) -> np.ndarray:
  out = np.zeros((len(rows), length), np.int32)
  for i, row in enumerate(rows):
    row = row[:length - 1] + [1]  # truncate, then EOS
    out[i, :len(row)] = row
  return out


def run(num_sentences: int = 4, preset: str = 'tiny', max_length: int = 64) -> dict[str, float]:
  """Runs the demo and returns the measured timings (milliseconds)."""
  tok = vocab.load_tokenizer('bible')
  data = corpus.read_bible('test')
  sources = data['es'][:num_sentences]
  targets = data['en'][:num_sentences]
  enc = _pad(tok.encode_batch(sources), max_length)
  tgt = _pad(tok.encode_batch(targets), max_length)
  model_vocab = -(-tok.vocab_size // 128) * 128  # round up to a multiple of 128, like T5
  ids = tok.special_ids(model_vocab_size=model_vocab)
  check_tokens('encoder_input_tokens', enc, model_vocab)
  print(f'vocabulary: {tok.num_real_pieces} pieces + {tok.extra_ids} extra ids '
        f'(sha256 {tok.sha256[:12]}...), [MASK]={ids.mask} [LENGTH]={ids.length}')
  timings = {}
  for mode in ('causal', 'bidirectional'):
    cfg = T5Config.preset(preset, vocab_size=model_vocab, decoder_mode=mode,
                          length_id=ids.length, max_target_length=max_length, dropout_rate=0.0)
    model = Transformer(cfg)
    if mode == 'causal':
      dec = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)  # shifted targets
    else:
      dec = np.where(tgt > 0, ids.mask, 0).astype(np.int32)  # fully masked canvas
    params = nn.unbox(model.init({'params': jax.random.key(0)}, enc, dec,
                                 enable_dropout=False)['params'])
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(params))
    fwd = jax.jit(lambda p, e, d: model.apply({'params': p}, e, d, enable_dropout=False,
                                             method=Transformer.encode_and_decode))
    logits, length_logits = fwd(params, enc, dec)
    jax.block_until_ready(logits)
    start = time.perf_counter()
    for _ in range(5):
      jax.block_until_ready(fwd(params, enc, dec))
    ms = (time.perf_counter() - start) / 5 * 1000
    timings[mode] = ms
    print(f'\n{mode} decoder ({preset}, {n_params / 1e6:.2f}M params): logits '
          f'{tuple(logits.shape)} {logits.dtype}, one forward pass {ms:.1f} ms '
          f'(batch {enc.shape[0]}, length {max_length}, {jax.devices()[0].platform})')
    if length_logits is not None:
      predicted = np.asarray(top_k_lengths(length_logits, 1))[:, 0]
      gold = (tgt > 0).sum(axis=1)
      print(f'  length head (untrained): predicted {predicted.tolist()} vs gold {gold.tolist()}')
    first = tok.decode(np.asarray(jnp.argmax(logits[0], -1)))
    print(f'  source: {sources[0]}\n  argmax of untrained logits: {first[:80]!r}')
  return timings


@errors.command('padir demo')
def main(argv: Sequence[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog='padir demo', description=__doc__.splitlines()[0])
  parser.add_argument('--num_sentences', type=int, default=4)
  parser.add_argument('--preset', default='tiny', help='T5Config preset: tiny, small, base, ...')
  parser.add_argument('--max_length', type=int, default=64)
  args = parser.parse_args(argv)
  run(args.num_sentences, args.preset, args.max_length)
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
