"""Benchmark suite settings: smoke mode by default, large sizes opt-in, BLAS recorded.

Modes
-----
* **Smoke** (the default, and what ``--benchmark-disable`` asks for): every
  benchmark runs its operation once, untimed, and checks the result (shape,
  finite values). Sizes marked ``large`` are skipped unless ``--bench-large``.
  This is what ``python -m pytest`` (the README's and CI's command) runs, so
  the suite stays within a few minutes of CI time.
* **Measure**: ``--benchmark-enable`` (or ``--benchmark-only``,
  ``--benchmark-json``, ``--benchmark-save``, ``--benchmark-autosave``) runs
  pytest-benchmark's timing loop on every size, large ones included.

For the interleaved scaling report with memory and ratios, run
``python benchmarks/report.py`` instead.
"""

import pytest

MEASURE_OPTIONS = ("benchmark_enable", "benchmark_only", "benchmark_json", "benchmark_save",
                   "benchmark_autosave", "benchmark_compare")


def pytest_addoption(parser):
    group = parser.getgroup("fastjac benchmarks")
    group.addoption("--bench-large", action="store_true", default=False,
                    help="in smoke mode, also run the large sizes (N=1,000,000, wide N=40,000) "
                         "and the slow runs (dense 100-step training, every cold compile)")


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    config.addinivalue_line("markers", "large: a large size or slow run; in smoke mode runs "
                                       "only with --bench-large")
    # Before pytest-benchmark reads its options (its hook is trylast).
    if not any(config.getoption(o, None) for o in MEASURE_OPTIONS):
        config.option.benchmark_disable = True


def smoke_mode(config):
    """True when benchmarks run once, untimed (see the module docstring)."""
    return bool(config.getoption("benchmark_disable", False)) and not config.getoption(
        "benchmark_enable", False)


def pytest_collection_modifyitems(config, items):
    if not smoke_mode(config) or config.getoption("bench_large"):
        return
    skip = pytest.mark.skip(reason="large size or slow run: smoke mode runs it only with "
                                   "--bench-large (measure mode always runs it)")
    for item in items:
        if item.get_closest_marker("large") is not None:
            item.add_marker(skip)


def blas_summary():
    """One line per BLAS/OpenMP library loaded: API, version, kernel (architecture), threads."""
    from threadpoolctl import threadpool_info

    return [f"{i.get('internal_api')} {i.get('version')} kernel={i.get('architecture', '-')} "
            f"threads={i.get('num_threads')} ({i.get('prefix')})" for i in threadpool_info()]


def pytest_report_header(config):
    import numba
    import numpy  # noqa: F401  (loads the BLAS threadpoolctl reports)

    mode = ("smoke (each benchmark once, untimed; --benchmark-enable to measure)"
            if smoke_mode(config) else "measure")
    large = "on" if (config.getoption("bench_large") or not smoke_mode(config)) else \
        "skipped (--bench-large)"
    return [f"fastjac benchmarks: {mode}; large sizes: {large}",
            f"numba threads: {numba.get_num_threads()}; " + "; ".join(blas_summary())]


def pytest_benchmark_update_machine_info(config, machine_info):
    import numba
    import numpy
    from threadpoolctl import threadpool_info

    machine_info["threadpoolctl"] = threadpool_info()
    machine_info["numba_threads"] = numba.get_num_threads()
    machine_info["versions"] = {"numpy": numpy.__version__, "numba": numba.__version__}


@pytest.fixture
def warmed():
    """``warmed(fn, *args)``: call once outside the timed loop (compile, caches); return fn."""

    def warm(fn, *args):
        fn(*args)
        return fn

    return warm
