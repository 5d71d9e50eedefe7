"""Times Hugging Face transformers' T5 ``generate`` (PyTorch) for `padir.bench.decode`.

It runs in its own process (``python -m padir.bench.hf_generate`` reading a JSON request on
stdin, writing JSON timings on stdout) so that JAX's thread pool never competes with
PyTorch's. The model has the sizes of the padir network, random weights, and decodes exactly
``length`` new tokens (``min_new_tokens = max_new_tokens``) with the KV cache.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from typing import Any


def build_model(network: dict[str, Any], seed: int):
  """A randomly initialised ``T5ForConditionalGeneration`` with the given padir sizes."""
  import torch  # pylint: disable=g-import-not-at-top
  import transformers  # pylint: disable=g-import-not-at-top
  gated = len(network['mlp_activations']) == 2
  cfg = transformers.T5Config(
      vocab_size=network['vocab_size'], d_model=network['emb_dim'], d_kv=network['head_dim'],
      d_ff=network['mlp_dim'], num_layers=network['num_encoder_layers'],
      num_decoder_layers=network['num_decoder_layers'], num_heads=network['num_heads'],
      relative_attention_num_buckets=network['relative_attention_num_buckets'],
      relative_attention_max_distance=network['relative_attention_max_distance'],
      dropout_rate=0.0, layer_norm_epsilon=network['layer_norm_epsilon'],
      feed_forward_proj='gated-gelu' if gated else 'relu', tie_word_embeddings=False,
      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
  torch.manual_seed(seed)
  return transformers.T5ForConditionalGeneration(cfg).eval()


def time_generate(request: dict[str, Any]) -> dict[str, Any]:
  """Median / min wall time of ``generate`` after one warm-up call.

  Request keys: network (padir T5Config fields), sources ([B, S] ints), num_beams, length,
  length_penalty, budget_s, min_repeats, max_repeats, seed. The reply names the PyTorch
  thread count used (the faster of 1 and all cores).
  """
  import torch  # pylint: disable=g-import-not-at-top
  model = build_model(request['network'], request.get('seed', 0))
  src = torch.tensor(request['sources'], dtype=torch.long)
  mask = (src > 0).long()
  length = int(request['length'])

  def run():
    with torch.inference_mode():
      out = model.generate(input_ids=src, attention_mask=mask, max_new_tokens=length,
                           min_new_tokens=length, num_beams=int(request['num_beams']),
                           do_sample=False, use_cache=True,
                           length_penalty=float(request.get('length_penalty', 1.0)))
    return out

  # OpenMP threads that spin on a busy machine can make 2 threads far slower than 1: use the
  # faster of 1 and all cores (each warmed up once, then timed once).
  trials = {}
  first = 0.0
  for threads in sorted({1, torch.get_num_threads()}):
    torch.set_num_threads(threads)
    start = time.perf_counter()
    out = run()
    first = max(first, time.perf_counter() - start)
    start = time.perf_counter()
    run()
    trials[threads] = time.perf_counter() - start
  torch.set_num_threads(min(trials, key=trials.get))
  times: list[float] = []
  budget = float(request.get('budget_s', 5.0))
  while len(times) < int(request.get('max_repeats', 20)) and (
      len(times) < int(request.get('min_repeats', 2)) or sum(times) < budget):
    start = time.perf_counter()
    run()
    times.append(time.perf_counter() - start)
  return dict(median_ms=1e3 * statistics.median(times), min_ms=1e3 * min(times),
              runs=len(times), first_call_s=first, output_tokens=int(out.shape[1]) - 1,
              torch_threads=torch.get_num_threads())


def main() -> int:
  request = json.load(sys.stdin)
  json.dump(time_generate(request), sys.stdout)
  return 0


if __name__ == '__main__':
  sys.exit(main())
