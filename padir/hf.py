"""Imports Hugging Face T5 / T5.1.1 / mT5 checkpoints from a local directory.

``load_t5(path)`` reads ``config.json`` and the weights (``model.safetensors``, a sharded
``model.safetensors.index.json``, or ``pytorch_model.bin``) and returns ``(T5Config, params)``
for a causal padir `Transformer` with identical outputs. ``adapt_params`` reuses those
params for another config of the same sizes, typically the PaDIR decoder: parameters that the
checkpoint lacks (the length head, positional attention) start from a fresh initialisation.

No network access: ``path`` must be a local directory.
"""

from __future__ import annotations

import json
import os
import re
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from padir.network import T5Config, Transformer

Params = dict[str, Any]

# feed_forward_proj of a HF T5 config -> padir mlp_activations. HF's 'gated-gelu' uses the tanh
# approximation (gelu_new), plain 'gelu' the exact function.
_ACTIVATIONS = {
    'relu': ('relu',),
    'gelu': ('gelu_exact',),
    'gelu_new': ('gelu',),
    'silu': ('silu',),
    'gated-relu': ('relu', 'linear'),
    'gated-gelu': ('gelu', 'linear'),
    'gated-gelu_new': ('gelu', 'linear'),
    'gated-silu': ('silu', 'linear'),
}


def config_from_hf(hf_config: dict[str, Any], **overrides: Any) -> T5Config:
  """Builds a causal T5Config from the fields of a HF T5 ``config.json``."""
  proj = hf_config.get('feed_forward_proj', 'relu')
  if proj not in _ACTIVATIONS:
    raise ValueError(f'Unsupported feed_forward_proj={proj!r} in config.json; padir supports '
                     f'{sorted(_ACTIVATIONS)}.')
  try:
    fields = dict(
        vocab_size=hf_config['vocab_size'],
        emb_dim=hf_config['d_model'],
        num_heads=hf_config['num_heads'],
        head_dim=hf_config['d_kv'],
        mlp_dim=hf_config['d_ff'],
        num_encoder_layers=hf_config['num_layers'],
        num_decoder_layers=hf_config.get('num_decoder_layers') or hf_config['num_layers'],
        mlp_activations=_ACTIVATIONS[proj],
        dropout_rate=hf_config.get('dropout_rate', 0.1),
        logits_via_embedding=_scales_decoder_outputs(hf_config),
        relative_attention_num_buckets=hf_config.get('relative_attention_num_buckets', 32),
        relative_attention_max_distance=hf_config.get('relative_attention_max_distance', 128),
        layer_norm_epsilon=hf_config.get('layer_norm_epsilon', 1e-6),
        decoder_mode='causal',
    )
  except KeyError as e:
    raise ValueError(f'config.json lacks the T5 field {e.args[0]!r}; is this a T5 checkpoint?'
                     ) from None
  fields.update(overrides)
  return T5Config(**fields)


def _scales_decoder_outputs(hf_config: dict[str, Any]) -> bool:
  """Whether the HF model multiplies the final decoder states by d_model**-0.5.

  Original T5 ties the head to the embedding and scales; T5.1.1 / mT5 have an untied head and no
  scaling. Older configs say so with ``tie_word_embeddings``; newer transformers releases write
  ``scale_decoder_outputs``.
  """
  return bool(hf_config.get('scale_decoder_outputs', hf_config.get('tie_word_embeddings', True)))


def _read_weights(path: str) -> dict[str, np.ndarray]:
  """Reads all tensors of a HF checkpoint directory into float32 numpy arrays."""
  single = os.path.join(path, 'model.safetensors')
  index = os.path.join(path, 'model.safetensors.index.json')
  torch_bin = os.path.join(path, 'pytorch_model.bin')
  if os.path.exists(single) or os.path.exists(index):
    from safetensors.numpy import load_file  # optional dependency, imported on use
    if os.path.exists(single):
      files = [single]
    else:
      with open(index, encoding='utf-8') as f:
        files = sorted({os.path.join(path, v) for v in json.load(f)['weight_map'].values()})
    tensors = {}
    for file in files:
      if not os.path.exists(file):
        raise FileNotFoundError(f'{index} names the shard {file}, which is missing.')
      try:
        tensors.update(load_file(file))
      except Exception as e:  # safetensors raises its own error types for bad headers
        raise ValueError(f'Cannot read {file}: {e}. Is the file complete?') from e
    return {k: np.asarray(v, np.float32) for k, v in tensors.items()}
  if os.path.exists(torch_bin):
    try:
      import torch  # optional dependency, imported on use
    except ImportError as e:
      raise ImportError(f'{torch_bin} is a PyTorch file: install torch to read it, or convert '
                        'the checkpoint to model.safetensors.') from e
    try:
      state = torch.load(torch_bin, map_location='cpu', weights_only=True)
    except Exception as e:
      raise ValueError(f'Cannot read {torch_bin}: {e}. Is the file complete?') from e
    return {k: v.float().numpy() for k, v in state.items()}
  raise FileNotFoundError(
      f'No weights in {path}: expected model.safetensors, model.safetensors.index.json or '
      'pytorch_model.bin (save a model with save_pretrained).')


def _convert(weights: dict[str, np.ndarray], cfg: T5Config, scale_outputs: bool) -> Params:
  """Maps HF tensor names to the padir parameter tree (kernels are transposed).

  ``cfg.logits_via_embedding`` is set only for a tied, scaled head (original T5). Every other
  combination becomes an explicit ``logits_dense`` kernel with the scale folded in.
  """
  used: set[str] = set()

  def get(name: str) -> np.ndarray:
    if name not in weights:
      raise ValueError(f'The checkpoint lacks tensor {name!r} that config.json implies; is the '
                       'config consistent with the weights?')
    used.add(name)
    return weights[name]

  def dense(name: str) -> dict[str, np.ndarray]:
    return {'kernel': get(name + '.weight').T}

  def attention(prefix: str) -> dict[str, Any]:
    return {'query': dense(prefix + '.q'), 'key': dense(prefix + '.k'),
            'value': dense(prefix + '.v'), 'out': dense(prefix + '.o')}

  def mlp(prefix: str) -> dict[str, Any]:
    if len(cfg.mlp_activations) == 1:
      out = {'wi': dense(prefix + '.wi')}
    else:
      out = {f'wi_{i}': dense(f'{prefix}.wi_{i}') for i in range(len(cfg.mlp_activations))}
    out['wo'] = dense(prefix + '.wo')
    return out

  def norm(name: str) -> dict[str, np.ndarray]:
    return {'scale': get(name + '.weight')}

  encoder_layers = []
  for i in range(cfg.num_encoder_layers):
    p = f'encoder.block.{i}.layer'
    encoder_layers.append({
        'pre_attention_layer_norm': norm(f'{p}.0.layer_norm'),
        'attention': attention(f'{p}.0.SelfAttention'),
        'pre_mlp_layer_norm': norm(f'{p}.1.layer_norm'),
        'mlp': mlp(f'{p}.1.DenseReluDense'),
    })
  decoder_layers = []
  for i in range(cfg.num_decoder_layers):
    p = f'decoder.block.{i}.layer'
    decoder_layers.append({
        'pre_self_attention_layer_norm': norm(f'{p}.0.layer_norm'),
        'self_attention': attention(f'{p}.0.SelfAttention'),
        'pre_cross_attention_layer_norm': norm(f'{p}.1.layer_norm'),
        'encoder_decoder_attention': attention(f'{p}.1.EncDecAttention'),
        'pre_mlp_layer_norm': norm(f'{p}.2.layer_norm'),
        'mlp': mlp(f'{p}.2.DenseReluDense'),
    })

  def stack(layer_list: list[dict[str, Any]]) -> dict[str, Any]:
    if cfg.scan_layers:
      return {'layers': jax.tree_util.tree_map(lambda *xs: np.stack(xs), *layer_list)}
    return {f'layers_{i}': layer for i, layer in enumerate(layer_list)}

  rel = 'SelfAttention.relative_attention_bias.weight'
  encoder = {
      **stack(encoder_layers),
      'relpos_bias': {'rel_embedding': get(f'encoder.block.0.layer.0.{rel}').T},
      'encoder_norm': norm('encoder.final_layer_norm'),
  }
  decoder = {
      **stack(decoder_layers),
      'relpos_bias': {'rel_embedding': get(f'decoder.block.0.layer.0.{rel}').T},
      'decoder_norm': norm('decoder.final_layer_norm'),
  }
  if not cfg.logits_via_embedding:
    head = weights['lm_head.weight'] if 'lm_head.weight' in weights else get('shared.weight')
    scale = cfg.emb_dim**-0.5 if scale_outputs else 1.0
    decoder['logits_dense'] = head.T * scale
  params = {'token_embedder': {'embedding': get('shared.weight')},
            'encoder': encoder, 'decoder': decoder}
  # Aliases of the shared embedding and the tied head carry no new information.
  aliases = {'encoder.embed_tokens.weight', 'decoder.embed_tokens.weight', 'lm_head.weight'}
  unused = sorted(set(weights) - used - aliases)
  if unused:
    raise ValueError(f'The checkpoint holds tensors padir does not map: {unused[:5]}'
                     f'{" ..." if len(unused) > 5 else ""}. Is it a plain T5 encoder-decoder?')
  return jax.tree_util.tree_map(lambda x: jnp.asarray(np.ascontiguousarray(x), jnp.float32),
                                params)


def load_t5(path: str | os.PathLike[str], **config_overrides: Any) -> tuple[T5Config, Params]:
  """Loads a local HF T5 / T5.1.1 / mT5 checkpoint directory.

  Args:
    path: a directory written by ``T5ForConditionalGeneration.save_pretrained``.
    **config_overrides: T5Config fields to change (e.g. dtype='bfloat16', dropout_rate=0.0,
      scan_layers=True). Architectural sizes must stay those of the checkpoint.

  Returns:
    (config, params): a causal T5Config and the unboxed float32 parameter tree.

  Raises:
    FileNotFoundError / ValueError: naming the missing or malformed file.
  """
  path = os.fspath(path)
  if re.match(r'^[a-z]+://', path) or not os.path.isdir(path):
    raise FileNotFoundError(
        f'{path!r} is not a local directory. padir reads checkpoints from disk only: download '
        'the model first (e.g. huggingface-cli download google/t5-v1_1-small --local-dir DIR).')
  config_file = os.path.join(path, 'config.json')
  if not os.path.exists(config_file):
    raise FileNotFoundError(f'{config_file} is missing; a HF checkpoint directory holds '
                            'config.json next to its weights.')
  try:
    with open(config_file, encoding='utf-8') as f:
      hf_config = json.load(f)
  except json.JSONDecodeError as e:
    raise ValueError(f'{config_file} is not valid JSON: {e}.') from e
  config_from_hf(hf_config, **config_overrides)  # reports config errors before reading weights
  weights = _read_weights(path)
  scale = _scales_decoder_outputs(hf_config)
  head = weights.get('lm_head.weight')
  tied = head is None or ('shared.weight' in weights and
                          np.array_equal(head, weights['shared.weight']))
  overrides = {'logits_via_embedding': tied and scale, **config_overrides}
  cfg = config_from_hf(hf_config, **overrides)
  return cfg, _convert(weights, cfg, scale)


def adapt_params(params: Params, config: T5Config, rng: jax.Array) -> Params:
  """Fits pretrained params to ``config`` (same sizes), initialising what they lack.

  Typical use: ``load_t5`` gives causal params; ``adapt_params(params,
  cfg.replace(decoder_mode='bidirectional', length_id=ids.length), rng)`` gives PaDIR params
  whose length head (and positional attention, if enabled) start fresh.

  Raises:
    ValueError: when a pretrained parameter's shape differs from the config's.
  """
  model = Transformer(config)
  dummy = jnp.ones((1, 4), jnp.int32)
  fresh = jax.jit(lambda r: nn.unbox(model.init({'params': r}, dummy, dummy,
                                                enable_dropout=False)['params']))(rng)
  flat_old = dict(jax.tree_util.tree_flatten_with_path(params)[0])
  def pick(path, new):
    old = flat_old.get(path)
    if old is None:
      return new
    if old.shape != new.shape:
      raise ValueError(f'Parameter {jax.tree_util.keystr(path)} has shape {old.shape} in the '
                       f'checkpoint but {new.shape} in the config; keep the checkpoint sizes.')
    return old
  return jax.tree_util.tree_map_with_path(pick, fresh)
