"""Where each part of the model lives: replicas x pipeline stages x tensor ranks, and the host.

Global GPU order is node-major (node0/gpu0, node0/gpu1, ..., node1/gpu0, ...). GPUs are handed
out replica by replica, stage by stage, tensor rank by tensor rank, so a tensor group sits on
consecutive GPUs (inside one machine whenever the degree divides the GPUs per machine).

Layers are assigned to stages exactly as llama.cpp does for ``--tensor-split`` (see
:func:`assign_layers`).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import lru_cache
from itertools import accumulate

from simulator.config import RunConfig
from simulator.expert_offload import offloaded_expert_layers
from simulator.hardware import GpuSpec


@dataclass(frozen=True)
class Device:
    """One GPU and its role in the strategy."""

    name: str  # "node0/gpu1"
    node: int
    local_index: int
    gpu: GpuSpec
    replica: int
    stage: int
    tensor_rank: int


@dataclass(frozen=True)
class Stage:
    """A pipeline stage: a tensor group of devices running a contiguous range of layers."""

    index: int
    first_layer: int
    last_layer: int  # exclusive
    devices: tuple[Device, ...]
    holds_embedding: bool
    holds_output: bool

    @property
    def layers(self) -> range:
        return range(self.first_layer, self.last_layer)


@dataclass(frozen=True)
class Placement:
    """The whole mapping of a config onto its hardware."""

    devices: tuple[Device, ...]
    replicas: tuple[tuple[Stage, ...], ...]
    cpu_layers: range  # layers offloaded to the host CPU (llama.cpp: the first ones)
    embedding_on_host: bool
    output_on_host: bool
    tensor: int
    cpu_expert_layers: tuple[int, ...] = ()  # GPU layers whose routed experts are on the host

    def stages(self, replica: int = 0) -> tuple[Stage, ...]:
        return self.replicas[replica]


def device_name(node: int, local_index: int) -> str:
    return f"node{node}/gpu{local_index}"


def assign_layers(n_layers: int, offload: int, ratios: list[float]) -> list[int]:
    """Stage index of each GPU layer, and of the output head as the last element.

    llama.cpp (``llama_model::load_tensors``): the first ``offload`` layers stay on the CPU;
    with cumulative normalised splits s_k, GPU layer il goes to the first stage k with
    (il - offload) / n_active < s_k, where n_active counts the output head as one more layer
    when every layer is on a GPU (-ngl > n_layer). The output head is placed by the same rule
    at il = n_layers, which is the CPU (-1 here) when some layers are offloaded.
    """
    return list(_assign_layers(n_layers, offload, tuple(ratios)))


@lru_cache(maxsize=1024)
def _assign_layers(n_layers: int, offload: int, ratios: tuple[float, ...]) -> tuple[int, ...]:
    """:func:`assign_layers`, memoised (every memory plan of every variant places again)."""
    gpu_layers = n_layers - offload
    n_active = gpu_layers + (1 if offload == 0 else 0)
    total = sum(ratios)
    cum = list(accumulate(r / total for r in ratios))
    out = []
    for il in range(offload, n_layers + 1):
        rel = il - offload
        if rel >= n_active:
            out.append(-1)
            continue
        k = bisect.bisect_right(cum, rel / n_active)
        out.append(min(k, len(ratios) - 1))
    return tuple(out)


# placements by what they are made of (see ``place``), at most this many
_PLACED: dict[tuple[object, ...], tuple[tuple[object, ...], Placement]] = {}
PLACEMENTS_KEPT = 1024


def place(cfg: RunConfig) -> Placement:
    """Map ``cfg``'s model onto its GPUs.

    Memoised: a placement depends only on the GPU specs, machines, parallel degrees, layer
    split, offloaded layers and experts, the model and whether the engine keeps the token
    embedding on the host; the specs (GPU, model) are keyed by identity, each entry holding
    them (one object per catalogue id and backend, so configs of one sweep share them)."""
    objects = (*cfg.gpus, cfg.model)
    key = (
        tuple(id(o) for o in objects),
        cfg.nodes,
        cfg.tensor,
        cfg.pipeline,
        cfg.replicas,
        cfg.layer_split,
        cfg.offload_layers,
        cfg.cpu_moe_layers,
        cfg.profile.token_embedding_on_host,
    )
    hit = _PLACED.get(key)
    if hit is not None and all(a is b for a, b in zip(hit[0], objects, strict=True)):
        return hit[1]
    placement = _place(cfg)
    if len(_PLACED) >= PLACEMENTS_KEPT:
        _PLACED.clear()
    _PLACED[key] = (objects, placement)
    return placement


def _place(cfg: RunConfig) -> Placement:
    t, p, r = cfg.tensor, cfg.pipeline, cfg.replicas
    n = cfg.gpus_per_node
    devices = []
    for g in range(cfg.total_gpus):
        rep, rest = divmod(g, p * t)
        stage, rank = divmod(rest, t)
        node, local = divmod(g, n)
        devices.append(
            Device(device_name(node, local), node, local, cfg.gpu_at(g), rep, stage, rank)
        )

    offload = cfg.offload_layers
    embed_on_host = cfg.profile.token_embedding_on_host or offload > 0
    replicas = []
    for rep in range(r):
        rep_devices = [d for d in devices if d.replica == rep]
        groups = [tuple(d for d in rep_devices if d.stage == s) for s in range(p)]
        if cfg.layer_split is not None:
            ratios = list(cfg.layer_split)
        else:  # llama.cpp's default: proportional to each device's memory
            ratios = [sum(d.gpu.usable_memory_bytes for d in grp) for grp in groups]
        stage_of = assign_layers(cfg.model.layers, offload, ratios)
        layer_stage, output_stage = stage_of[:-1], stage_of[-1]
        stages: list[Stage] = []
        for s in range(p):
            mine = [offload + i for i, k in enumerate(layer_stage) if k == s]
            first = mine[0] if mine else (stages[-1].last_layer if stages else offload)
            last = mine[-1] + 1 if mine else first
            stages.append(
                Stage(
                    index=s,
                    first_layer=first,
                    last_layer=last,
                    devices=groups[s],
                    holds_embedding=(s == 0 and not embed_on_host),
                    holds_output=(output_stage == s),
                )
            )
        replicas.append(tuple(stages))
    output_on_host = assign_layers(cfg.model.layers, offload, [1.0] * p)[-1] == -1
    return Placement(
        devices=tuple(devices),
        replicas=tuple(replicas),
        cpu_layers=range(0, offload),
        embedding_on_host=embed_on_host,
        output_on_host=output_on_host,
        tensor=t,
        cpu_expert_layers=offloaded_expert_layers(cfg),
    )
