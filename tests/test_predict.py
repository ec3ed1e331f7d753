"""Predictions from a trained run (``dept.load``, ``python -m dept predict``) on the demo: one CoOp + DePT
run of one epoch, then its predictions against its own evaluation, the command's CSV and JSON, an
unreadable image skipped, an unfinished run refused."""
import csv
import json
import os
import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.dassl


def dept(cwd, *args, ok=True):
    env = dict(os.environ)
    env.pop("DATA", None)  # the demo
    proc = subprocess.run([sys.executable, "-m", "dept", *args], cwd=str(cwd), env=env, capture_output=True,
                          text=True, timeout=900)
    assert (proc.returncode == 0) == ok, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(cwd, the training run's folder, the digits' data folder)."""
    cwd = tmp_path_factory.mktemp("predict")
    dept(cwd, "base2new", "--trainers", "CoOpDePT", "--seeds", "1", "--output", "out", "--", "OPTIM.MAX_EPOCH", "1")
    base = cwd / "out" / "base2new" / "train_base" / "digits" / "shots_16" / "CoOpDePT"
    (variant,) = os.listdir(base)
    return cwd, base / variant / "seed1", cwd / "out" / "demo" / "data" / "digits"


def base_test_images(data, classes):
    with open(data / "split_zhou_Digits.json") as f:
        test = json.load(f)["test"]
    return [(str(data / "images" / path), name) for path, _, name in test if name in classes]


def test_load_predicts_the_runs_classes_as_its_evaluation_did(run):
    import dept

    _, run_dir, data = run
    clf = dept.load(str(run_dir))
    assert clf.classes == ["zero", "one", "two", "three", "four"]  # the base classes it was trained on
    assert clf.mode == "fused (logits)"  # DePT: (1-λ)·ITM + λ·CAT
    images = base_test_images(data, clf.classes)
    predictions = clf.predict([path for path, _ in images], top_k=3)
    assert all(len(p) == 3 and p[0][1] >= p[1][1] >= p[2][1] for p in predictions)
    accuracy = 100 * sum(p[0][0] == name for p, (_, name) in zip(predictions, images)) / len(images)
    with open(run_dir / "dept_run.json") as f:
        result = json.load(f)["result"]
    assert result["split"] == "test" and accuracy == pytest.approx(result["accuracy"], abs=1e-9)
    # a PIL image and a path give the same answer; the features have the CLIP's width
    from PIL import Image

    path = images[0][0]
    assert clf.predict(Image.open(path))[0][0][0] == clf.predict(path)[0][0][0]
    assert tuple(clf.encode_image([path, path]).shape) == (2, 64) and tuple(clf.encode_text().shape) == (5, 64)


def test_the_command_writes_top_k_rows_and_lists_unreadable_images(run):
    cwd, run_dir, data = run
    (cwd / "broken.png").write_text("not an image")
    folder = data / "images" / "three"
    proc = dept(cwd, "predict", "--model-dir", str(run_dir), str(folder), "broken.png", "--top-k", "2",
                "--out", "preds.csv")
    with open(cwd / "preds.csv") as f:
        rows = list(csv.DictReader(f))
    n = len([p for p in os.listdir(folder) if p.endswith(".png")])
    assert len(rows) == 2 * n and [r["rank"] for r in rows[:2]] == ["1", "2"]
    assert set(rows[0]) == {"path", "rank", "class", "probability"}
    assert sum(r["class"] == "three" for r in rows if r["rank"] == "1") > n / 2
    assert "broken.png" not in {r["path"] for r in rows}
    assert "skipped 1 unreadable image(s)" in proc.stderr and "broken.png" in proc.stderr

    dept(cwd, "predict", "--model-dir", str(run_dir), str(folder / "three_0003.png"), "broken.png", "--top-k", "5",
         "--out", "preds.json")
    with open(cwd / "preds.json") as f:
        out = json.load(f)
    assert [r["rank"] for r in out["predictions"]] == [1, 2, 3, 4, 5]
    assert abs(sum(r["probability"] for r in out["predictions"]) - 1) < 1e-4
    assert [s["path"] for s in out["skipped"]] == ["broken.png"]


def test_an_unfinished_run_is_refused_before_any_compute(run, tmp_path):
    cwd, run_dir, data = run
    copy = tmp_path / "running"
    shutil.copytree(run_dir, copy)
    with open(copy / "dept_run.json") as f:
        record = json.load(f)
    record["status"] = "running"
    with open(copy / "dept_run.json", "w") as f:
        json.dump(record, f)
    proc = dept(cwd, "predict", "--model-dir", str(copy), str(data / "images" / "zero"), ok=False)
    assert "the run is not finished (status running)" in proc.stderr
    assert "Evaluating" not in proc.stdout + proc.stderr  # nothing was built


def test_another_class_list_gets_the_learned_prompts_by_itm_as_the_new_class_evaluation(run, tmp_path):
    """``--classes``: the run's prompts on names it never saw are the paper's new-class path, so on the
    digits' new classes they give exactly the accuracy of the runner's own new-class evaluation."""
    import dept as package

    cwd, run_dir, data = run
    new = ["five", "six", "seven", "eight", "nine"]
    clf = package.load(str(run_dir), classes=new)
    assert clf.classes == new and clf.mode == "itm"  # the CAT head never saw these classes
    images = base_test_images(data, new)
    predictions = clf.predict([path for path, _ in images])
    accuracy = 100 * sum(p[0][0] == name for p, (_, name) in zip(predictions, images)) / len(images)
    test_new = str(run_dir).replace(os.sep + "train_base" + os.sep, os.sep + "test_new" + os.sep)
    with open(os.path.join(test_new, "dept_run.json")) as f:
        assert accuracy == pytest.approx(json.load(f)["result"]["accuracy"], abs=1e-9)
    # its own classes by name keep the fused prediction (the head was trained on each of them)
    assert package.load(str(run_dir), classes=["two", "zero"]).mode == "fused (logits)"

    names = tmp_path / "names.txt"
    names.write_text("# my classes\nseven\n\neight\n")
    proc = dept(cwd, "predict", "--model-dir", str(run_dir), "--classes", str(names), str(data / "images" / "seven"),
                "--out", str(tmp_path / "p.json"))
    with open(tmp_path / "p.json") as f:
        out = json.load(f)
    assert out["classes"] == ["seven", "eight"] and out["mode"] == "itm", proc.stderr
    names.write_text("# nothing\n\n")
    assert "holds no class name" in dept(cwd, "predict", "--model-dir", str(run_dir), "--classes", str(names),
                                         str(data / "images" / "seven"), ok=False).stderr
    with pytest.raises(ValueError, match="more than once"):
        package.load(str(run_dir), classes=["seven", "seven"])


def test_an_export_is_one_plain_file_that_predicts_as_the_run_without_its_dataset(run, tmp_path):
    import torch

    import dept as package
    from dept.analysis.loaded import RunError
    from dept.core.testing import save_tiny_clip

    cwd, run_dir, data = run
    out = tmp_path / "coop_dept.pt"
    proc = dept(cwd, "export", "--model-dir", str(run_dir), str(out))
    assert "CoOpDePT, 5 classes" in proc.stdout and "DePT head on 5 classes" in proc.stdout
    content = torch.load(out, weights_only=True)  # plain tensors, strings and lists: nothing runs
    assert content["classes"] == ["zero", "one", "two", "three", "four"] == content["head_classes"]
    tensors = content["state_dict"]
    assert "prompt_learner.ctx" in tensors and any(k.startswith("dept_head.") for k in tensors)
    assert len(content["clip"]["sha256"]) == 64 and "OUTPUT_DIR" in content["config"]

    images = [path for path, _ in base_test_images(data, content["classes"])][:40]
    expected = package.load(str(run_dir)).probabilities(images)
    hidden = data.parent / "digits-moved-away"
    os.rename(data, hidden)  # the export needs no dataset
    try:
        readable = [str(p).replace(str(data), str(hidden)) for p in images]
        clf = package.load(str(out))
        assert clf.classes == content["classes"] and clf.mode == "fused (logits)"
        assert torch.equal(clf.probabilities(readable), expected)
        assert package.load(str(out), classes=["five", "six"]).mode == "itm"
    finally:
        os.rename(hidden, data)

    other = save_tiny_clip(str(tmp_path / "other_clip.pt"), seed=7)
    with pytest.raises(RunError, match="is another file"):
        package.load(str(out), clip=other)
    (tmp_path / "not_export.pt").write_bytes(b"\x80\x04K\x01.")  # pickle of the int 1
    with pytest.raises(RunError, match="not a dept export"):
        package.load(str(tmp_path / "not_export.pt"))
