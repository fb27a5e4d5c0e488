"""MoE expert offload (llama.cpp ``--n-cpu-moe N`` / ``--cpu-moe`` / ``-ot exps=CPU``), pure.

What llama.cpp does (source read at ggml-org/llama.cpp, 2025-2026 builds):

* ``common/arg.cpp``: ``--n-cpu-moe N`` adds the tensor-buffer override
  ``blk\\.i\\.ffn_(up|down|gate|gate_up)_(ch|)exps`` -> CPU buffer for i = 0..N-1 (the first N
  *layers*, whether or not each is MoE); ``--cpu-moe`` matches every layer. Only the routed
  experts move: attention, norms, the router (``ffn_gate_inp``), shared experts and the KV
  cache stay on the GPUs.
* Decode (a micro-batch of fewer than 32 tokens): the expert matmuls (MUL_MAT_ID) run on the
  CPU backend. The graph splits at every offloaded layer: the normed hidden state and the
  router's choice cross PCIe to the host, the CPU reads the *hit* experts from RAM, and the
  result comes back. GPU and CPU parts of a layer run one after the other.
* Prompt (32 tokens or more): ``ggml_backend_sched`` offloads an op whose weight sits in host
  memory to the first GPU backend that wants it (``op_offload``, on by default); the CUDA
  backend wants every op whose batch size is >= 32 (``ggml_backend_cuda_device_offload_op``:
  ``get_op_batch_size(op) >= min_batch_size``, ``min_batch_size = 32``; for MUL_MAT_ID the
  batch is ``op->ne[2]``, the tokens). So each micro-batch copies the offloaded layers' whole
  expert tensors over PCIe and the GPU computes them: prompt speed is bounded by PCIe, not
  by the CPU.

Two fitted parameters of the engine profile price the host side: ``expert_host_efficiency``
(share of host-memory bandwidth the CPU's expert kernels stream at) and
``expert_layer_overhead_s`` (per offloaded layer per step: the graph split's synchronisation,
waking the CPU threads, the router output's copy).
"""

from __future__ import annotations

from simulator import model as mm
from simulator.config import RunConfig
from simulator.profiles import EngineProfile

# ggml-cuda.cu ggml_backend_cuda_device_offload_op: min_batch_size = 32 (also the Metal
# backend's op_offload_min_batch_size); recent builds read GGML_OP_OFFLOAD_MIN_BATCH.
OP_OFFLOAD_MIN_BATCH_TOKENS = 32


def offloaded_expert_layers(cfg: RunConfig) -> tuple[int, ...]:
    """Decoder layers on a GPU whose routed experts live in host memory.

    Layers 0..N-1 match the override; dense layers have no experts to move, and layers already
    offloaded whole (``offload_layers``, the first ones) are on the CPU anyway.
    """
    n = min(cfg.cpu_moe_layers, cfg.model.layers)
    m = cfg.model
    return tuple(i for i in range(cfg.offload_layers, n) if m.layer_is_moe(i))


def experts_copied_to_gpu(micro_batch_tokens: int) -> bool:
    """Whether llama.cpp copies offloaded experts to the GPU for this micro-batch (op offload)
    rather than running them on the CPU."""
    return micro_batch_tokens >= OP_OFFLOAD_MIN_BATCH_TOKENS


def offloaded_expert_bytes(cfg: RunConfig, layers: tuple[int, ...]) -> float:
    """Bytes of the routed experts of ``layers`` (what leaves VRAM and lands in host RAM)."""
    return sum(mm.routed_expert_bytes(cfg.model, cfg.quant, i) for i in layers)


def copy_buffer_bytes(cfg: RunConfig, layers: tuple[int, ...]) -> float:
    """VRAM the op-offload copies need: the scheduler starts a new split at each weight on
    another backend so that the copy's memory is reused, so one expert tensor (of gate, up,
    down: a third of a layer's experts) is resident at a time."""
    if not layers:
        return 0.0
    return max(mm.routed_expert_bytes(cfg.model, cfg.quant, i) for i in layers) / 3


def host_expert_seconds(
    weight_bytes: float,
    layers: int,
    host_bandwidth_bytes_per_s: float,
    crossing_s: float,
    profile: EngineProfile,
) -> float:
    """CPU time of the offloaded experts of ``layers`` layers in one decode step.

    ``weight_bytes``: the hit experts' bytes (read once from host RAM at the host bandwidth x
    ``expert_host_efficiency``); ``crossing_s``: one PCIe copy of the activations, paid twice
    per layer (to the host and back); plus ``expert_layer_overhead_s`` per layer.
    """
    if layers == 0:
        return 0.0
    eff = profile.num("expert_host_efficiency")
    per_layer = profile.num("expert_layer_overhead_s") + 2 * crossing_s
    return weight_bytes / (host_bandwidth_bytes_per_s * eff) + layers * per_layer
