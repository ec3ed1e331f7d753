"""Smoke test of the benchmark (benchmarks/benchmark.py) on the tiny CLIP: it runs and reports every
method; no timings asserted."""
import importlib.util
import json
import os
import subprocess
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("benchmark", os.path.join(ROOT, "benchmarks", "benchmark.py"))
benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(benchmark)


@pytest.mark.dassl
def test_quick_benchmark_reports_every_method(tmp_path, capsys):
    out = tmp_path / "results.json"
    assert benchmark.main(["--quick", "--in-process", "--out", str(out)]) == 0
    report = capsys.readouterr().out
    results = json.loads(out.read_text())["results"]
    floor = results[0]
    assert floor["kind"] == "floor" and floor["test_img_s"] > 0
    ours = [r for r in results if r["kind"] == "ours"]
    # every method at the benchmark's batch; CoCoOp (and its DePT variant) also at its config's batch 1
    assert {(r["method"], r["batch"]) for r in ours} == {(m, 4) for m in benchmark.METHODS} | {
        ("CoCoOp", 1), ("CoCoOpDePT", 1)}
    for r in ours:
        if r["method"] == "ZeroshotCLIP":  # evaluated as built: no training step to time
            assert r["no_training"] and "step_s" not in r and r["test_img_s"] > 0, r
        else:
            assert r["step_s"] > 0 and r["test_img_s"] > 0 and r["peak_total_bytes"] > 0, r
    # every training step has its floor: the method's image encoder alone, with backward exactly where
    # visual prompts train
    visual = {"MaPLe", "IVLP", "VPT", "PromptSRC"}
    for r in (r for r in ours if "step_s" in r):
        assert r["floor_step_s"] > 0 and r["floor_steps_timed"] == 1, r
        assert r["floor_backward"] == (r["method"].removesuffix("DePT") in visual), r
    assert "| floor s / step | × floor |" in report and "(fwd+bwd)" in report
    for r in (r for r in ours if r["batch"] == 4):  # text encoded once per evaluation, except per image
        assert (r["text_once_s"] == 0) == r["method"].startswith("CoCoOp"), r
    assert {r["test_from_batch"] for r in ours if r["batch"] == 1} == {4}  # test figures measured once
    for r in (r for r in ours if r["batch"] == 4):  # each evaluation beside its own image encoder's forward
        assert r["floor_test_batch_s"] > 0, r
        expected = r["test_img_s"] / (4 / r["floor_test_batch_s"])  # --quick's test batch: 4
        assert r["floor_fraction"] == pytest.approx(expected), r
    assert "over the method's own image encoder's forward" in report
    for label in ("CLIP image encoder alone (floor)", "| 5 | CoCoOpDePT | 1 | ours |", "| 5 | MaPLeDePT | 4 | ours |",
                  "| 5 | ZeroshotCLIP | 4 | ours | no training step |", "| 5 | PromptSRCDePT | 4 | ours |"):
        assert label in report
    assert benchmark.main(["--report", str(out)]) == 0  # a saved run prints the same report
    assert capsys.readouterr().out == report


@pytest.mark.dassl
def test_each_configuration_runs_in_its_own_process(tmp_path):
    """Through the scripts/ entry point, as the README says; each measurement in a worker process."""
    out = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "benchmark.py"), "--quick",
                           "--methods", "CoOpDePT", "--no-test", "--out", str(out)], capture_output=True, text=True,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    assert [r["kind"] for r in results] == ["floor", "ours"]
    assert "error" not in results[1] and results[1]["memory_method"] and results[1]["step_s"] > 0
    assert results[1]["floor_step_s"] > 0 and "test_batch_s" not in results[1]  # --no-test: training only
    assert "| 5 | CoOpDePT | 4 | ours |" in proc.stdout


def test_official_runtime_changes_are_undone():
    job = dict(weights="/nowhere/clip.pt", device="cpu", fp16=False)
    module = torch.nn.Linear(2, 2)
    originals = [torch.Tensor.half, torch.Tensor.cuda, torch.nn.Module.half, torch.nn.Module.cuda]
    with benchmark.official_runtime(job):
        assert torch.ones(1).half().dtype == torch.float32  # MaPLe's .half() calls: identity in fp32
        assert module.half().weight.dtype == torch.float32
        tensor = torch.ones(1)
        assert tensor.cuda() is tensor  # KgCoOp's .cuda() calls: nothing to move on CPU
    assert torch.ones(1).half().dtype == torch.float16 and module.half().weight.dtype == torch.float16
    assert [torch.Tensor.half, torch.Tensor.cuda, torch.nn.Module.half, torch.nn.Module.cuda] == originals
    assert "half" not in vars(torch.Tensor)  # inherited from torch._C.TensorBase, as before


def test_original_code_is_named_by_source(tmp_path):
    args = benchmark.parse_args(["--original-dir", f"promptsrc={tmp_path}", "--methods", "PromptSRC", "VPT"])
    settings = dict(official_dir="", original_dirs=args.original_dirs)
    assert benchmark.reference_code("PromptSRC", settings) == "original"  # muzairkhattak/PromptSRC
    assert benchmark.reference_code("VPT", settings) is None  # multimodal-prompt-learning not given
    assert benchmark.reference_code("PromptSRCDePT", settings) is None  # no original code exists
    assert benchmark.reference_code("CoOp", dict(settings, official_dir=str(tmp_path))) == "official"
    for bad in ("promptsrc", f"nosuch={tmp_path}", f"mpl={tmp_path / 'missing'}"):
        with pytest.raises(SystemExit):
            benchmark.parse_args(["--original-dir", bad])


def test_class_names(tmp_path):
    names = benchmark.default_classnames(300)
    assert len(set(names)) == 300 and names == benchmark.default_classnames(300)
    path = tmp_path / "classnames.txt"
    path.write_text("n01440764 tench\nn01443537 goldfish\n\nX-ray machine\n")
    assert benchmark.read_classnames(str(path)) == ["tench", "goldfish", "X-ray machine"]


def test_targets_say_met_or_missed():
    def row(kind, method, classes, step, mem=1.0, batch=4, **extra):
        return dict(kind=kind, method=method, path="auto" if kind == "ours" else "official", classes=classes,
                    batch=batch, step_s=step, peak_growth_bytes=mem, **extra)

    lines = benchmark.targets([
        row("ours", "MaPLe", 500, 10, 0.2), row("official", "MaPLe", 500, 90),
        row("ours", "MaPLeDePT", 50, 1), row("official", "MaPLeDePT", 50, 1.5),
        row("ours", "CoCoOp", 50, 1, test_img_s=2.5), row("official", "CoCoOp", 50, 5, test_img_s=0.5),
    ])
    assert "MaPLe, 500 classes, batch 4: training step 9.0× faster than the official code (target ≥ 10×): MISSED" \
        in lines
    assert "MaPLe, 500 classes, batch 4: peak memory growth 0.200 of the official code's (target ≤ 1/3): met" in lines
    assert "MaPLeDePT, 50 classes, batch 4: training step 1.5× faster than the official code (target ≥ 2×): MISSED" \
        in lines
    assert "CoCoOp, 50 classes, test 2.50 images/s, official 0.50 (target ≥ 2): met" in lines
    assert "CoCoOp, 50 classes, batch 4: training step 5.0× faster than the official code (target ≥ 4×): met" in lines


def _saved_run(path, rows):
    path.write_text(json.dumps({"settings": {}, "results": [{"kind": "floor", "floor_batch_s": 1.0}, *rows]}))
    return str(path)


def test_figure_from_saved_runs(tmp_path, caplog):
    """The figure reads saved runs only: each trained configuration measured beside its reference."""
    def row(kind, method, classes, step, mem, batch=4):
        return dict(kind=kind, method=method, classes=classes, batch=batch, step_s=step, peak_growth_bytes=mem,
                    path="auto" if kind == "ours" else "official")

    first = _saved_run(tmp_path / "a.json", [
        row("ours", "CoOp", 50, 1.0, 10), row("official", "CoOp", 50, 4.0, 100),
        row("ours", "CoOp", 500, 2.0, 10), row("official", "CoOp", 500, 80.0, 200),
        row("ours", "CoCoOp", 500, 3.0, 5, batch=1), row("official", "CoCoOp", 500, 30.0, 50, batch=1),
        row("ours", "CoOpDePT", 50, 1.0, 10),  # no reference: not drawn
        dict(kind="ours", method="ZeroshotCLIP", classes=50, batch=4, path="auto", no_training=True)])
    second = _saved_run(tmp_path / "b.json", [row("ours", "CoOp", 50, 9.0, 9), row("official", "CoOp", 50, 9.0, 9)])
    (tmp_path / "other.json").write_text(json.dumps({"rows": []}))  # another benchmark's file: skipped
    out = tmp_path / "speedups.png"
    assert benchmark.main(["--figure", str(out), "--figure-from", second, first, str(tmp_path / "other.json")]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = benchmark.sibling("speedup_figure").pairs([first, second])
    drawn = {(m, c, b): (ref["step_s"] / ours["step_s"], ours["peak_growth_bytes"] / ref["peak_growth_bytes"])
             for m, c, b, ours, ref, _ in rows}
    assert drawn == {("CoOp", 50, 4): (4.0, 0.1), ("CoOp", 500, 4): (40.0, 0.05), ("CoCoOp", 500, 1): (10.0, 0.1)}
    assert "in " + first in caplog.text  # CoOp at 50 twice: the first file's, the other named
    with pytest.raises(SystemExit, match="no saved run with rows of the official or original code"):
        benchmark.main(["--figure", str(out), "--figure-from", str(tmp_path / "other.json")])


def test_teacher_templates_cut_for_the_build_only(tmp_path):
    """--teacher-templates N: PromptSRC's teacher is the mean over the first N templates while the
    model is built (the figures measured read that one tensor), and the list is whole again after."""
    from clip.model import build_model

    from dept.core.prompts import tokenize

    weights = str(tmp_path / "clip.pt")
    benchmark.write_weights("tiny", 0, weights)
    job = dict(method="PromptSRC", path="auto", fp16=False, image_size=32, device="cpu", weights=weights,
               classnames=["dog", "cat", "red fox"], model="tiny", teacher_templates=2)
    module = benchmark._model_module(benchmark.trainer_class("PromptSRC"))
    templates = module.PROMPTSRC_TEMPLATES
    assert len(templates) == 60
    teacher = benchmark.build_ours(job, torch.device("cpu")).model.teacher_text
    assert module.PROMPTSRC_TEMPLATES is templates  # put back after the build
    clip_model = build_model(torch.load(weights, weights_only=True)).float().eval()
    with torch.no_grad():
        mean = torch.stack([clip_model.encode_text(tokenize([t.format(n) for n in job["classnames"]]))
                            for t in templates[:2]]).mean(0)
    torch.testing.assert_close(teacher, mean / mean.norm(dim=-1, keepdim=True))
    whole = benchmark.build_ours(dict(job, teacher_templates=0), torch.device("cpu")).model.teacher_text
    assert not torch.allclose(whole, teacher)  # all 60: another teacher
    dept_teacher = benchmark.build_ours(dict(job, method="PromptSRCDePT"), torch.device("cpu")).model.teacher_text
    assert torch.equal(dept_teacher, teacher)


def test_teacher_templates_of_the_original_code_are_cut_and_put_back(tmp_path):
    """The original PromptSRC reads IMAGENET_TEMPLATES from its module's globals when it builds: cut
    inside official_runtime, whole again after; other methods' modules are not touched."""
    import types

    module = types.ModuleType("trainers.promptsrc")
    module.IMAGENET_TEMPLATES = [f"template {i} of {{}}." for i in range(60)]
    cls = type("PromptSRC", (), {})
    benchmark._MODULES[cls] = module
    job = dict(method="PromptSRC", weights=str(tmp_path / "clip.pt"), device="cpu", fp16=False, teacher_templates=3)
    try:
        with benchmark.official_runtime(job, cls):
            assert module.IMAGENET_TEMPLATES == ["template 0 of {}.", "template 1 of {}.", "template 2 of {}."]
        assert len(module.IMAGENET_TEMPLATES) == 60
        with benchmark.official_runtime(dict(job, method="IVLP"), cls):  # not a teacher's list
            assert len(module.IMAGENET_TEMPLATES) == 60
    finally:
        del benchmark._MODULES[cls]
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--teacher-templates", "-2"])


def test_the_original_codes_test_figure_is_against_the_methods_own_floor():
    """'% of floor' of the original code's row: over our row's own image-encoder floor (the same
    prompted encoder), not the stock encoder's, so both rows of a method share one floor."""
    results = [{"kind": "floor", "floor_batch_s": 10.0},
               {"kind": "ours", "method": "PromptSRC", "classes": 50, "batch": 4, "path": "auto",
                "text_once_s": 0.0, "test_batch_s": 12.0, "floor_test_batch_s": 12.0},
               {"kind": "official", "method": "PromptSRC", "classes": 50, "batch": 4, "path": "original",
                "text_once_s": 0.0, "test_batch_s": 24.0}]
    benchmark.add_throughput(results, {"test_batch": 100, "test_images_per_class": 2})
    assert results[1]["floor_fraction"] == pytest.approx(1.0)
    assert results[2]["floor_fraction"] == pytest.approx(0.5)  # twice its floor's time, not 10/24 of the stock one
