"""The only place unit constants live.

Decimal prefixes are used for rates and for sizes labelled GB (10**9 bytes), binary
prefixes only where the thing really is binary (GiB of DRAM chips, KiB in llama.cpp logs).
Simulated time is in seconds: one SimPy time unit is one second.
"""

from __future__ import annotations

# sizes
KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
KiB = 2.0**10
MiB = 2.0**20
GiB = 2.0**30

# rates
GBPS = 1e9  # bytes per second (GB/s, decimal as on every datasheet)
GBIT_PER_S = 1e9 / 8  # a network label's Gb/s in bytes per second
TFLOPS = 1e12  # floating-point operations per second, decimal (never 2**40)
TOPS = 1e12

# time
S = 1.0
MS = 1e-3
US = 1e-6
NS = 1e-9

BITS_PER_BYTE = 8
F32_BYTES = 4  # f32 activations, logits and attention scores
F16_BYTES = 2  # f16/bf16 activations between layers and GPUs
