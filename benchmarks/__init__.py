"""Speed benchmarks: tables, never timed assertions (see run.py)."""
