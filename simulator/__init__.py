"""Performance simulator for multi-GPU LLM inference.

Does a model fit on a set of GPUs, how many tokens per second will it give for one user and
for many, and where is the bottleneck? See README.md and DESIGN.md.
"""

__version__ = "0.1.0"
