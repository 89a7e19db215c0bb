"""proctor's benchmark suite: ``python -m bench [--quick|--full] [--only NAME]``.

Every figure is measured beside a yardstick or a peer in the same run; see
``bench/__main__.py`` for the command line, :mod:`bench.lib` for the shared helpers and
:mod:`bench.suite` for the members. The results and what they mean:
``docs/benchmarks.md`` (generated from ``bench/results.json`` by :mod:`bench.report`).
"""
