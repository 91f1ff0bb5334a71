"""Fixtures of the CUDA backend tests (tests/cuda only)."""

import pytest

from _cuda_cases import layout_plan


@pytest.fixture(autouse=True)
def _cuda_target(request):
    """Tests marked ``cudasim`` need the Numba CUDA simulator or a real GPU."""
    if request.node.get_closest_marker("cudasim") is None:
        return
    from bandsolve.cuda._env import missing_requirement

    missing = missing_requirement()
    if missing is not None:
        pytest.skip("launches CUDA kernels: run with NUMBA_ENABLE_CUDASIM=1 "
                    f"(make test-cudasim) or on a GPU ({missing[1]})")


@pytest.fixture
def use_layout(monkeypatch):
    """Make the CUDA backend launch a given kernel layout ("default", "global", "single")."""

    def use(kind):
        from bandsolve.cuda import _backend

        monkeypatch.setattr(_backend, "plan_for",
                            lambda dtype, k, w: layout_plan(kind, dtype, k, w))

    return use
