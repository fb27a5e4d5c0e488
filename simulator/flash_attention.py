"""Whether llama.cpp's flash-attention "auto" turns the fused kernel on (pure).

llama-bench, llama-server and llama-cli default to ``-fa auto`` (``LLAMA_FLASH_ATTN_TYPE_AUTO``:
tools/llama-bench/llama-bench.cpp ``cmd_params_defaults``; common/common.h ``flash_attn_type``,
ggml-org/llama.cpp 001d906a). The context resolves it when it reserves its graphs
(src/llama-context.cpp, ``auto_fa``): it builds a one-token graph with flash attention and
keeps it only if every ``FLASH_ATTN_EXT`` node is placed on the device that holds its layer,
i.e. if that device's backend ``supports_op`` the node; otherwise the op would fall back to the
CPU and auto turns flash attention off. What a backend supports depends on the attention's head
sizes (K and V) and the cache types, which is what :func:`supported` checks per backend:

* CUDA and ROCm (one ggml-cuda code base; ggml/src/ggml-cuda/fattn.cu
  ``ggml_cuda_get_best_fattn_kernel``): K = V head sizes 40, 64, 72, 80, 96, 112, 128, 256, 512,
  and the (K, V) pairs (192, 128), (320, 256) and (576, 512) (DeepSeek MLA); cache types
  f16, bf16, q8_0, q4_0, K and V of one type (q4_1 / q5_x only in GGML_CUDA_FA_ALL_QUANTS
  builds). The GQA-ratio conditions of the 192 / 320 / 512 / 576 kernels are not checked.
* Metal (ggml/src/ggml-metal/ggml-metal-device.m ``supports_op``): K head sizes 32, 40, 48, 64,
  72, 80, 96, 112, 128, 192, 256, 320, 512, 576; K and V of one type among f16, bf16, q8_0,
  q4_0 (and q4_1 / q5_x); every Apple GPU in the catalogue has simdgroup matrices.
* Vulkan (ggml/src/ggml-vulkan/ggml-vulkan.cpp ``supports_op``): K and V head sizes multiples
  of 8; K and V of one type among f16, bf16, q8_0, q4_0 (and q4_1 / q5_x).
* the CPU (layers left on the host, ``-ngl`` below the layer count) runs every shape.

A backend not listed (SYCL) keeps flash attention off under auto: the simulator has no source
for its kernels.
"""

from __future__ import annotations

from simulator.model import ModelSpec

# (K head size, V head size) pairs with a CUDA / ROCm flash-attention kernel
_CUDA_HEADS = frozenset(
    [(d, d) for d in (40, 64, 72, 80, 96, 112, 128, 256, 512)]
    + [(192, 128), (320, 256), (576, 512)]
)
_METAL_HEADS_K = frozenset((32, 40, 48, 64, 72, 80, 96, 112, 128, 192, 256, 320, 512, 576))
# llama.cpp cache types (engine.kv_cache_dtype) each backend's kernels read
_KV_TYPES = {
    "cuda": frozenset(("f16", "bf16", "q8_0", "q4_0")),
    "rocm": frozenset(("f16", "bf16", "q8_0", "q4_0")),
    "metal": frozenset(("f16", "bf16", "q8_0", "q4_0")),
    "vulkan": frozenset(("f16", "bf16", "q8_0", "q4_0")),
}


def head_sizes(m: ModelSpec) -> tuple[int, int]:
    """The K and V head sizes of the attention kernel: MLA runs on the compressed latent
    (K = kv_lora_rank + qk_rope_head_dim, V = kv_lora_rank), others on head_dim."""
    if m.kv_lora_rank > 0:
        return m.kv_lora_rank + m.qk_rope_head_dim, m.kv_lora_rank
    return m.head_dim, m.head_dim


def supported(backend: str, m: ModelSpec, kv_dtype: str) -> bool:
    """Whether ``backend`` runs llama.cpp's FLASH_ATTN_EXT for ``m`` with a ``kv_dtype`` cache
    (K and V share the type: the simulator has one ``engine.kv_cache_dtype``)."""
    if backend == "cpu":
        return True
    types = _KV_TYPES.get(backend)
    if types is None or kv_dtype not in types:
        return False
    k, v = head_sizes(m)
    if backend in ("cuda", "rocm"):
        return (k, v) in _CUDA_HEADS
    if backend == "metal":
        return k in _METAL_HEADS_K
    return k % 8 == 0 and v % 8 == 0  # vulkan


def resolve_auto(backends: list[str], m: ModelSpec, kv_dtype: str) -> bool:
    """``-fa auto``: on when every device holding layers supports the kernel (the context
    turns it off if any FLASH_ATTN_EXT node would leave its layer's device)."""
    return all(supported(b, m, kv_dtype) for b in backends)
