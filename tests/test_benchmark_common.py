"""benchmarks/_common.py: the alternating order of timed runs and the merging into results.json."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def common():
    spec = importlib.util.spec_from_file_location("bench_common", REPO / "benchmarks" / "_common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_alternating_rounds_reverse_the_order_every_other_round(common) -> None:
    calls: list[tuple[int, str]] = []

    def run(name: str):
        def measure(r: int) -> float:
            calls.append((r, name))
            return 10.0 * r

        return measure

    out = common.alternating_rounds({n: run(n) for n in ("a", "b", "c")}, 3)
    assert [n for _, n in calls] == ["a", "b", "c", "c", "b", "a", "a", "b", "c"]
    assert [r for r, _ in calls] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert out == {"a": [0.0, 10.0, 20.0], "b": [0.0, 10.0, 20.0], "c": [0.0, 10.0, 20.0]}
    assert common.median(out["a"]) == 10.0


def test_record_result_merges_and_replaces_entries(common, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(common, "RESULTS", tmp_path / "results.json")
    common.record_result("one", {"result": "x1"})
    common.record_result("two", {"result": "x2"})
    common.record_result("one", {"result": "x3"})
    data = json.loads((tmp_path / "results.json").read_text())
    assert sorted(data) == ["one", "two"]
    assert data["one"]["result"] == "x3" and data["two"]["result"] == "x2"
    assert "load average" in data["one"]["machine"] and data["one"]["measured_at"].endswith("Z")
