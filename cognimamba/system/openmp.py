"""How idle OpenMP workers wait, set for this process before torch loads (libgomp reads it once, at start).

Workers sleep when idle (OMP_WAIT_POLICY=PASSIVE): where other programs keep the cores busy, a worker that spins
takes the CPU its lagging partner needs (a 2-thread prefill beside a training job ran many times slower,
benchmarks/RESULTS.md). But then every parallel operation first wakes a sleeping worker, and a large model's
decoding step is some forty of them a few microseconds apart: on two Zen 3 cores the 4gb shape's int8 step took
9.0-10.7 ms asleep against 5.4-6.4 spinning briefly first. So a worker spins GOMP_SPINCOUNT times before it
sleeps (libgomp counts about 100,000 a millisecond): long enough to span the gap between one step's operations,
short enough to give the core up soon when another program wants it. Beside a 2-thread training job the same
step took 7.8-8.0 ms asleep, 9.7-11.3 spinning 1,000 times and 32 spinning 10,000, so the count stays short.
Values the user exported win, and a user's own OMP_WAIT_POLICY keeps libgomp's spin count for it.
"""

from __future__ import annotations

import os

SPIN_COUNT = 1_000  # some microseconds of spinning before a worker sleeps (figures in benchmarks/RESULTS.md)


def set_openmp_waiting() -> None:
    """OMP_WAIT_POLICY=PASSIVE with a short spin first, unless the environment says otherwise."""
    if "OMP_WAIT_POLICY" not in os.environ:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
        os.environ.setdefault("GOMP_SPINCOUNT", str(SPIN_COUNT))
