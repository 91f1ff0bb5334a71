"""Shared fixtures: the backend under test, seeded RNGs, hypothesis profiles.

Two pytest processes run the suite (see the Makefile):

* ``pytest tests -m "not cudasim"``: the ``backend`` fixture yields ``"cpu"``;
* ``NUMBA_ENABLE_CUDASIM=1 pytest tests -m cudasim``: it yields ``"cuda"``,
  marked ``cudasim``, so the same tests drive the CUDA kernels through the
  Numba simulator (NumPy input, ``backend="cuda"`` copies to the device and
  back). The simulator is chosen when numba.cuda is first imported, hence the
  separate process. Sizes come from :func:`_helpers.sized` (tiny there).
"""

import os
import sys
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

sys.path.insert(0, os.path.dirname(__file__))

from _helpers import CUDASIM  # noqa: E402

# Numba compiles on first use (seconds); hypothesis must not count that
# against an example, and the suite has to stay short on a 2-core machine.
settings.register_profile(
    "default",
    deadline=None,
    max_examples=40,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "cudasim",
    deadline=None,
    max_examples=8,
    suppress_health_check=[HealthCheck.too_slow],
    print_blob=True,
)
settings.register_profile(
    "thorough",
    deadline=None,
    max_examples=500,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "cudasim" if CUDASIM else "default"))

_BACKENDS = [pytest.param("cuda", marks=pytest.mark.cudasim)] if CUDASIM else ["cpu"]


@pytest.fixture(params=_BACKENDS, scope="session")
def backend(request):
    """The bandsolve backend under test: "cpu", or "cuda" under the simulator."""
    return request.param


@pytest.fixture
def rng(request):
    """A generator seeded from the test's id, so every test is reproducible alone."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
