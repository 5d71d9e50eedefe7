"""Start a model from another model's weights: a padir checkpoint (AR or PaDIR) or a HF T5.

``CheckpointConfig.init_from`` names where a new run's parameters come from when its
``MODEL_DIR`` has no checkpoint yet. `init_params` copies every parameter the source has into
the new model's freshly initialised tree and keeps the fresh values of the parameters the
source lacks. The typical use is the paper's: a PaDIR student starts from its AR teacher (or a
pretrained T5): the encoder, the decoder layers and the embeddings are shared by both decoder
modes, and only PaDIR's length head (and positional attention, if enabled) starts fresh. The
other way round (PaDIR -> AR) the length head is dropped.

Sources:

* a padir model dir or step dir (``MODEL_DIR`` or ``MODEL_DIR/<step>``): params only, the
  vocabulary fingerprint checked;
* a Hugging Face T5 / T5.1.1 / mT5 directory (``config.json`` + weights), via `padir.hf`.

A parameter present in both with different shapes is an error naming it (another model size or
vocabulary), never silently re-initialised.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from padir.network import DECODER_MODES

Params = Any


@dataclasses.dataclass(frozen=True)
class InitSummary:
  """What `init_params` did.

  Attributes:
    source: the path it read.
    kind: 'padir' or 'huggingface'.
    step: the checkpoint step (None for a HF directory).
    copied: number of parameters copied.
    fresh: paths of the parameters kept at their fresh initialisation.
    dropped: paths of source parameters the model does not have.
    adapted: paths of the decoder's relative-position tables re-read for the model's decoder
      mode (`adapt_relative_positions`; a causal source into a bidirectional model or back).
  """
  source: str
  kind: str
  step: int | None
  copied: int
  fresh: tuple[str, ...]
  dropped: tuple[str, ...]
  adapted: tuple[str, ...] = ()

  def describe(self) -> str:
    """One line for the log."""
    where = f'{self.source} (step {self.step})' if self.step is not None else self.source
    parts = [f'Initialised params from {where}: {self.copied} copied']
    if self.fresh:
      parts.append(f'{len(self.fresh)} new ({", ".join(self.fresh)})')
    if self.dropped:
      parts.append(f'{len(self.dropped)} not used ({", ".join(self.dropped)})')
    if self.adapted:
      parts.append(f'relative positions re-read for the decoder mode ({", ".join(self.adapted)})')
    return '; '.join(parts) + '.'


def is_hf_directory(path: str) -> bool:
  """Whether ``path`` is a Hugging Face model directory (config.json + weights)."""
  if not os.path.isdir(path) or not os.path.isfile(os.path.join(path, 'config.json')):
    return False
  names = set(os.listdir(path))
  return bool(names & {'model.safetensors', 'model.safetensors.index.json',
                       'pytorch_model.bin'})


def _flat(tree: Any) -> dict[str, Any]:
  return {jax.tree_util.keystr(p, simple=True, separator='/'): leaf
          for p, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


# T5Config fields a HF checkpoint fixes: the model must have the same, or the copied weights
# would compute something else (an ungated MLP read as gated, a tied head as untied, ...).
_HF_ARCHITECTURE = ('vocab_size', 'emb_dim', 'num_heads', 'head_dim', 'mlp_dim',
                    'num_encoder_layers', 'num_decoder_layers', 'mlp_activations',
                    'logits_via_embedding', 'relative_attention_num_buckets',
                    'relative_attention_max_distance')


def check_hf_architecture(path: str, source: Any, model: Any) -> None:
  """Refuses a model whose architecture differs from the HF checkpoint's (T5Configs).

  Raises:
    ValueError: naming each differing field with both values.
  """
  diffs = [f'{name}: {getattr(source, name)!r} in the checkpoint, {getattr(model, name)!r} in '
           'the model' for name in _HF_ARCHITECTURE
           if getattr(source, name) != getattr(model, name)]
  if diffs:
    raise ValueError(
        f'init_from={path!r}: the model is not the checkpoint\'s architecture ('
        + '; '.join(diffs) + '). Use the model gin of the checkpoint\'s size (gin/models/base.gin '
        'is t5-v1_1-base) and its vocabulary (its spiece.model).')


def check_hf_vocabulary(path: str, vocabulary: Any) -> None:
  """Refuses a run vocabulary that is not the HF checkpoint's ``spiece.model``.

  The embedding rows of a pretrained T5 belong to its SentencePiece model: another vocabulary of
  the same size would load without a shape error and mean nothing.

  Raises:
    ValueError: naming the checkpoint's vocabulary file and the fix.
  """
  spm = os.path.join(path, 'spiece.model')
  if vocabulary is None or not os.path.isfile(spm):
    return
  from padir.data import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  if getattr(vocabulary, 'sha256', None) != vocab_lib.file_sha256(spm):
    raise ValueError(
        f'init_from={path!r}: the run\'s vocabulary ({vocabulary.spec}) is not the checkpoint\'s '
        f'{spm}, so its embeddings would be rows of other pieces. Set --gin.VOCABULARY="\'{spm}\'".')


def read_source(path: str, vocabulary: Any = None, network_config: Any = None
                ) -> tuple[Params, str, int | None, str | None]:
  """The source's params on the host: (params, kind, step, decoder mode).

  The decoder mode is 'causal' for a HF T5, a padir checkpoint's from its metadata (None
  when the metadata does not say).

  Args:
    path: a padir model/step dir or a HF T5 directory.
    vocabulary: the run's vocabulary (a `padir.data.vocab.Tokenizer`): checked against a padir
      checkpoint's fingerprint or a HF directory's ``spiece.model``.
    network_config: the model's `padir.network.T5Config`: checked against a HF checkpoint's
      architecture.

  Raises:
    ValueError: a path that is neither a padir checkpoint nor a HF directory, or a checkpoint of
      another vocabulary or (HF) architecture.
  """
  path = os.path.expanduser(path)
  if is_hf_directory(path):
    from padir import hf  # pylint: disable=g-import-not-at-top
    check_hf_vocabulary(path, vocabulary)
    source_config, params = hf.load_t5(path)
    if network_config is not None:
      check_hf_architecture(path, source_config, network_config)
    return params, 'huggingface', None, 'causal'
  if not os.path.exists(path):
    raise ValueError(f'init_from={path!r} does not exist; give a padir MODEL_DIR (or '
                     'MODEL_DIR/<step>) or a Hugging Face T5 directory.')
  from padir import checkpoints  # pylint: disable=g-import-not-at-top
  params, meta, step = checkpoints.load_params(path, None, vocabulary=vocabulary)
  mode = ((meta or {}).get('network_config') or {}).get('decoder_mode')
  return params, 'padir', step, mode


def merge_params(source: Params, fresh: Params, where: str = 'init_from'
                 ) -> tuple[Params, int, tuple[str, ...], tuple[str, ...]]:
  """Copies ``source`` leaves into ``fresh`` (same paths); returns (params, copied, new, dropped).

  Each copied leaf takes the dtype and sharding of the fresh leaf it replaces.

  Raises:
    ValueError: a parameter whose shapes differ, naming it and both shapes.
  """
  src = _flat(source)
  fresh_flat = _flat(fresh)
  mismatched = [(k, tuple(src[k].shape), tuple(v.shape)) for k, v in fresh_flat.items()
                if k in src and tuple(src[k].shape) != tuple(v.shape)]
  if mismatched:
    details = ', '.join(f'{k}: {a} in the source vs {b} in the model'
                        for k, a, b in mismatched[:4])
    raise ValueError(
        f'{where}: {len(mismatched)} parameter(s) differ in shape ({details}). The source is '
        'another model size or vocabulary; start from a checkpoint of the same network sizes '
        'and vocabulary.')
  if not set(src) & set(fresh_flat):
    raise ValueError(f'{where}: the source shares no parameter with the model (source has '
                     f'{sorted(src)[:3]}...); is it a T5 checkpoint?')

  def pick(path, new):
    key = jax.tree_util.keystr(path, simple=True, separator='/')
    old = src.get(key)
    if old is None:
      return new
    value = jnp.asarray(old, dtype=new.dtype)
    sharding = getattr(new, 'sharding', None)
    return jax.device_put(value, sharding) if sharding is not None else value

  merged = jax.tree_util.tree_map_with_path(pick, fresh)
  new = tuple(sorted(k for k in fresh_flat if k not in src))
  dropped = tuple(sorted(k for k in src if k not in fresh_flat))
  return merged, len(fresh_flat) - len(new), new, dropped


def adapt_relative_positions(table: Any, source_bidirectional: bool, bidirectional: bool,
                             max_distance: int) -> np.ndarray:
  """A relative-position bias table re-read for another decoder mode's bucketing.

  A causal decoder's buckets all measure distances into the past; a bidirectional one spends
  half of them on the future (`padir.layers.relative_position_bucket`). Copied as is, a causal
  table would give a bidirectional decoder the teacher's far-past biases for its nearest
  future positions. Instead every bucket of the new mode takes the source's bias for the
  nearest relative position that falls into it, the sign dropped when the source saw only
  the past (so the future mirrors the past).

  Args:
    table: [H, N] the source's biases.
    source_bidirectional: whether the source bucketed both directions.
    bidirectional: whether the new model does.
    max_distance: ``relative_attention_max_distance`` of both.

  Returns:
    [H, N] the biases for the new bucketing.
  """
  from padir import layers  # pylint: disable=g-import-not-at-top
  table = np.asarray(table)
  n = table.shape[-1]
  rel = np.arange(-4 * max_distance, 4 * max_distance + 1)
  rel = rel[np.argsort(np.abs(rel), kind='stable')]  # nearest first: 0, -1, 1, -2, 2, ...
  target = np.asarray(layers.relative_position_bucket(rel, bidirectional, n, max_distance))
  read = rel if source_bidirectional else -np.abs(rel)
  source = np.asarray(layers.relative_position_bucket(read, source_bidirectional, n,
                                                      max_distance))
  pick = np.arange(n)  # a bucket no position reaches keeps its own bias
  seen = np.zeros((n,), bool)
  for t, s in zip(target, source):
    if not seen[t]:
      pick[t], seen[t] = s, True
  return table[..., pick]


def init_params(path: str, fresh: Params, vocabulary: Any = None,
                network_config: Any = None) -> tuple[Params, InitSummary]:
  """The new model's params started from ``path`` (see the module docstring).

  Args:
    path: a padir model/step dir or a HF T5 directory.
    fresh: the model's freshly initialised params (their shardings are kept).
    vocabulary: the run's vocabulary, checked against the source's (see `read_source`).
    network_config: the model's T5Config, checked against a HF checkpoint's architecture.

  Returns:
    (params, `InitSummary`).
  """
  source, kind, step, mode = read_source(path, vocabulary, network_config)
  adapted = ()
  if network_config is not None and mode in DECODER_MODES and mode != network_config.decoder_mode:
    source, adapted = _adapt_decoder_positions(source, mode == 'bidirectional',
                                               network_config)
  merged, copied, new, dropped = merge_params(source, fresh, where=f'init_from={path!r}')
  return merged, InitSummary(path, kind, step, copied, new, dropped, adapted)


def _adapt_decoder_positions(source: Params, source_bidirectional: bool, network_config: Any
                             ) -> tuple[Params, tuple[str, ...]]:
  """``source`` with its decoder's relative-position tables re-read for the model's mode."""
  adapted = []

  def adapt(path, leaf):
    key = jax.tree_util.keystr(path, simple=True, separator='/')
    if not (key.startswith('decoder/') and key.endswith('relpos_bias/rel_embedding')):
      return leaf
    adapted.append(key)
    return adapt_relative_positions(leaf, source_bidirectional,
                                    network_config.decoder_mode == 'bidirectional',
                                    network_config.relative_attention_max_distance)

  source = jax.tree_util.tree_map_with_path(adapt, source)
  return source, tuple(adapted)


InitFn = Callable[[str, Params, Any], tuple[Params, InitSummary]]
