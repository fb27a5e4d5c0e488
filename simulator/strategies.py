"""The parallel strategies, each registered once.

One engine runs them all: a strategy is a way of mapping the model onto the hardware
(``placement``) and the traffic that mapping implies (``phases``, ``topology``). This registry
names them, says which apply to a config, and gives each a small example config so one
contract test can check every strategy the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulator.config import RunConfig


@dataclass(frozen=True)
class Strategy:
    id: str
    name: str
    description: str
    applies: Callable[[RunConfig], bool]
    example: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, Strategy] = {}


def register(s: Strategy) -> Strategy:
    if s.id in _REGISTRY:
        raise ValueError(f"strategy {s.id} registered twice")
    _REGISTRY[s.id] = s
    return s


def registry() -> dict[str, Strategy]:
    return dict(_REGISTRY)


def strategies_of(cfg: RunConfig) -> list[str]:
    """Ids of every registered strategy the config uses."""
    return [s.id for s in _REGISTRY.values() if s.applies(cfg)]


def _base(**sections: dict[str, Any]) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "hardware": {"gpus": ["rtx4090", "rtx4090"], "gpu_link": "pcie4-x16"},
        "model": {"name": "llama-3.1-8b", "quant": "Q4_K_M"},
        "parallel": {"tensor": 1, "pipeline": 1, "replicas": 1},
        "engine": {"profile": "llama.cpp"},
        "workload": {"prompt_tokens": 1024, "output_tokens": 16},
    }
    for k, v in sections.items():
        cfg[k] = {**cfg.get(k, {}), **v}
    return cfg


register(
    Strategy(
        "single-gpu",
        "One GPU",
        "the whole model on one GPU: no links involved",
        lambda c: c.total_gpus == 1 and not c.gpus[0].unified_memory,
        _base(hardware={"gpus": ["rtx4090"]}),
    )
)
register(
    Strategy(
        "layer-split",
        "Pipeline / layer split (llama.cpp -sm layer)",
        "contiguous layers per GPU by layer_split ratios; decode runs the stages one after "
        "another, prompt micro-batches overlap across stages",
        lambda c: c.pipeline > 1 and c.tensor == 1,
        _base(parallel={"pipeline": 2}, workload={"prompt_tokens": 2048}),
    )
)
register(
    Strategy(
        "tensor",
        "Tensor parallel (Megatron: vLLM -tp, llama.cpp -sm row)",
        "every layer's weights and KV heads sharded over the GPUs; two all-reduces per layer",
        lambda c: c.tensor > 1 and c.pipeline == 1,
        _base(parallel={"tensor": 2}, engine={"profile": "vllm"}, model={"quant": "AWQ-INT4"}),
    )
)
register(
    Strategy(
        "replica",
        "Replicas (data parallel, e.g. Ray Serve)",
        "independent copies; requests spread round robin; no traffic between copies",
        lambda c: c.replicas > 1,
        _base(parallel={"replicas": 2}, workload={"requests": 4, "concurrency": 2}),
    )
)
register(
    Strategy(
        "hybrid",
        "Tensor x pipeline",
        "tensor-parallel groups as pipeline stages",
        lambda c: c.tensor > 1 and c.pipeline > 1,
        _base(
            hardware={"gpus": ["rtx4090"] * 4},
            parallel={"tensor": 2, "pipeline": 2},
            engine={"profile": "vllm"},
            model={"quant": "AWQ-INT4"},
        ),
    )
)
register(
    Strategy(
        "multi-node",
        "Several machines",
        "stages or tensor groups on several identical machines joined by node_link",
        lambda c: c.nodes > 1,
        _base(hardware={"nodes": 2, "node_link": "eth-10g"}, parallel={"pipeline": 4}),
    )
)
register(
    Strategy(
        "cpu-offload",
        "CPU offload (llama.cpp -ngl < layers)",
        "the first offload_layers layers stay in host memory and run on the CPU at host-memory "
        "bandwidth; prompt micro-batches copy them to the GPU",
        lambda c: c.offload_layers > 0,
        _base(
            hardware={"gpus": ["rtx4090"], "host_memory": "ddr5-6000-2ch"},
            parallel={"offload_layers": 8},
        ),
    )
)
register(
    Strategy(
        "unified-memory",
        "Unified memory",
        "one GPU per machine sharing the system's memory (Apple silicon, DGX Spark, Ryzen AI "
        "Max): the share the driver lets the GPU map",
        lambda c: any(g.unified_memory for g in c.gpus),
        _base(hardware={"gpus": ["m3-max"]}, engine={"profile": "mlx"}, model={"quant": "Q4_0"}),
    )
)
