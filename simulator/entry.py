"""The ``sim`` console script (``[project.scripts]``): :func:`simulator.cli.main` in a process
that starts and ends without the garbage collector's start-up and shut-down passes.

* While the modules load, the collector is off: importing numpy, simpy and the simulator
  allocates hundreds of thousands of objects and would trigger ~60 collections that find
  nothing to free (module objects live as long as the process). Once loaded they are frozen
  (``gc.freeze``: moved to a generation no collection visits) and the collector is turned back
  on, so the run collects its own garbage as before, without re-visiting the modules.
* Before the process exits, what the run left is frozen too: the interpreter's final
  collections would otherwise visit every object once more (~30-40 ms of CPU per process
  here). Exit handlers, ``with`` blocks and stream flushes all still run.

Nothing here changes what is computed. ``cli.main`` called in a process of its own (tests,
``python -m simulator.cli``) behaves the same without it.
"""

from __future__ import annotations

import gc


def main() -> int:
    gc.disable()
    try:
        from simulator import cli
    finally:
        gc.freeze()
        gc.enable()
    code = cli.main()
    gc.freeze()
    return code
