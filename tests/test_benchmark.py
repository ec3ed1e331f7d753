"""Smoke test of the benchmark (scripts/benchmark.py) on the tiny CLIP: it runs and reports; no timings asserted."""
import json

import pytest

from dept import benchmark


@pytest.mark.dassl
def test_quick_benchmark_reports_every_path_and_method(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert benchmark.main(["--quick", "--in-process", "--out", str(out)]) == 0
    report = capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    floor = results[0]
    assert floor["kind"] == "floor" and floor["test_img_s"] > 0
    ours = [r for r in results if r["kind"] == "ours"]
    assert {(r["method"], r["path"]) for r in ours} == {(m, p) for m in ("coop", "dept") for p in benchmark.PATHS}
    for r in ours:
        assert r["step_s"] > 0 and r["text_once_s"] > 0 and r["test_img_s"] > 0 and r["peak_total_bytes"] > 0
    for label in ("image encoder only", "CoOp+DePT", "full (77)", "truncated", "shared prefix"):
        assert label in report
    assert benchmark.main(["--report", str(out)]) == 0  # a saved run prints the same report
    assert capsys.readouterr().out == report


@pytest.mark.dassl
def test_each_configuration_runs_in_its_own_process(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert benchmark.main(["--quick", "--methods", "dept", "--paths", "shared_prefix", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["results"]
    assert [r["kind"] for r in results] == ["floor", "ours"]
    assert "error" not in results[1] and results[1]["memory_method"]
    assert "| 5 | CoOp+DePT | shared prefix |" in capsys.readouterr().out


def test_class_names(tmp_path):
    names = benchmark.default_classnames(300)
    assert len(set(names)) == 300 and names == benchmark.default_classnames(300)
    path = tmp_path / "classnames.txt"
    path.write_text("n01440764 tench\nn01443537 goldfish\n\nX-ray machine\n")
    assert benchmark.read_classnames(str(path)) == ["tench", "goldfish", "X-ray machine"]


def test_targets_say_met_or_missed():
    def row(kind, classes, step, mem=1.0, path="shared_prefix"):
        return dict(kind=kind, method="dept", path=path, classes=classes, step_s=step, peak_growth_bytes=mem)

    lines = benchmark.targets([row("ours", 500, 10, 0.2), row("official", 500, 90, 1.0, "full"),
                               row("ours", 50, 1), row("official", 50, 1.5, 1.0, "full")])
    assert "9.0× faster" in lines and "(target ≥ 6×): met" in lines
    assert "0.200 of the official" in lines and "1/3): met" in lines
    assert "1.5× faster than the official code (target ≥ 2×): MISSED" in lines
