"""docs/benchmarks.md is what bench/results.json renders to: no figure on the page that the
results do not hold (the page is generated; a hand edit fails here)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import report  # noqa: E402
from bench.lib import RESULTS, read_results  # noqa: E402


def test_benchmarks_page_is_the_rendering_of_the_committed_results() -> None:
    records = read_results(RESULTS)
    expected = report.markdown(records, report.plotted(records))
    assert report.DOC.read_text() == expected, (
        "docs/benchmarks.md is stale or edited: run python -m bench --report"
    )


def test_every_plot_the_page_links_is_committed() -> None:
    records = read_results(RESULTS)
    for name in report.plotted(records).values():
        assert (report.IMAGES / name).is_file(), (
            f"docs/images/{name} is missing: run python -m bench --report"
        )
        assert f"(images/{name})" in report.DOC.read_text()


def test_every_group_of_the_committed_results_has_one_baseline_beside_a_figure() -> None:
    groups: dict[tuple[str, str], list[bool]] = {}
    for r in read_results(RESULTS):
        groups.setdefault((r.member, r.group), []).append(r.baseline)
    for key, baselines in groups.items():
        assert baselines.count(True) == 1, f"{key}: expected one baseline, found {baselines.count(True)}"
        assert len(baselines) >= 2, f"{key}: a figure with no yardstick or peer beside it"
