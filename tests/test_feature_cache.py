"""The shared image features of evaluations (``dept.core.feature_cache``): exact, keyed, safe.

Every trainer whose record says ``frozen_image_encoder`` (taken from the registry, so a new method
is covered) gives the same accuracy and logits from cached features as from its images; the
others never touch the cache. Whatever the features depend on (an image file, the CLIP file, the
test transform, the precision) changes the file; a damaged file is named, recomputed and replaced;
racing processes compute once and agree.
"""
import json
import logging
import multiprocessing
import os
import subprocess
import sys

import pytest
import torch
from conftest import REPO, make_dtd

pytestmark = pytest.mark.dassl


def _trainers(frozen):
    try:
        from dept.core.methods import trainers
    except ModuleNotFoundError:  # no Dassl: the dassl marker skips these tests
        return ["CoOp"]
    return [name for name, cls in trainers().items() if cls.method.frozen_image_encoder == frozen]


FROZEN, PROMPTED = _trainers(True), _trainers(False)


@pytest.fixture(scope="module")
def data_and_clip(tmp_path_factory):
    from dept.core.testing import save_tiny_clip

    base = tmp_path_factory.mktemp("fcache")
    return make_dtd(str(base / "data"), per_split=(2, 1, 3)), save_tiny_clip(str(base / "clip.pt"))


def build(trainer, data_and_clip, cache, *extra, subsample="base", clip_file=None):
    from dassl.engine import build_trainer
    from dassl.utils import set_random_seed

    from dept.core.methods import trainers
    from dept.run.train import build_parser, setup_cfg

    root, default_clip = data_and_clip
    config = os.path.join(REPO, "configs", "trainers", trainer, f"{trainers()[trainer].method.demo_config}.yaml")
    args = build_parser().parse_args([
        "--root", root, "--trainer", trainer,
        "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"), "--config-file", config,
        "MODEL.BACKBONE.PATH", clip_file or default_clip, "DATASET.NUM_SHOTS", "2",
        "DATASET.SUBSAMPLE_CLASSES", subsample, "DATALOADER.TEST.BATCH_SIZE", "4",
        "DEPT.FEATURE_CACHE", str(cache), *extra])
    set_random_seed(1)
    t = build_trainer(setup_cfg(args))
    if getattr(t, "with_dept", False):
        t._head_trained = True  # a random head, fused in as a trained one would be: the path is what counts
    return t


def evaluate(t, cache=None):
    """(accuracy, the logits of every test image in order) of ``t.test()``, with ``cache`` as
    DEPT.FEATURE_CACHE when given ("" = off)."""
    if cache is not None:
        t.cfg.defrost()
        t.cfg.DEPT.FEATURE_CACHE = str(cache)
        t.cfg.freeze()
    outputs, predict = [], t.predict

    def recording(features):
        outputs.append(predict(features))
        return outputs[-1]

    t.predict = recording
    try:
        accuracy = t.test()
    finally:
        del t.predict
    return accuracy, torch.cat(outputs)


def files(folder):
    return sorted(n for n in os.listdir(folder) if n.endswith(".pt")) if os.path.isdir(folder) else []


def last(t):
    return t.feature_cache_log[-1]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shared_cache")


@pytest.mark.parametrize("trainer", FROZEN)
def test_cached_features_give_the_uncached_accuracy_and_logits(trainer, data_and_clip, shared_cache):
    """Every served trainer, all sharing one cache folder as a grid does: one file for all of them
    (the first trainer writes it, the others read it), and each one's numbers as without it."""
    t = build(trainer, data_and_clip, shared_cache)
    plain_acc, plain_logits = evaluate(t, cache="")
    assert not getattr(t, "feature_cache_log", None)
    first_acc, first_logits = evaluate(t, cache=shared_cache)
    hit_acc, hit_logits = evaluate(t)
    assert [e["hit"] for e in t.feature_cache_log][-1] is True
    assert t.feature_cache_log[0]["images"] == len(t.test_loader.dataset.data_source)
    assert first_acc == plain_acc == hit_acc
    torch.testing.assert_close(first_logits, plain_logits, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(hit_logits, plain_logits, rtol=1e-6, atol=1e-5)
    assert len(files(shared_cache)) == 1


@pytest.mark.parametrize("trainer", PROMPTED)
def test_trainers_with_prompted_image_encoders_never_use_it(trainer, data_and_clip, tmp_path):
    from dept.core import feature_cache

    t = build(trainer, data_and_clip, tmp_path / "cache", subsample="new")
    assert feature_cache.why_not(t, t.test_loader)
    t.test()
    assert not getattr(t, "feature_cache_log", None)
    assert not os.path.exists(tmp_path / "cache")


def test_a_hit_opens_no_image(data_and_clip, tmp_path, monkeypatch):
    t = build("ZeroshotCLIP", data_and_clip, tmp_path)
    accuracy, logits = evaluate(t)
    assert last(t)["hit"] is False

    def no_loader(self):
        raise AssertionError("the loader was read on a cache hit")

    monkeypatch.setattr(torch.utils.data.DataLoader, "__iter__", no_loader)
    again, again_logits = evaluate(t)
    assert last(t)["hit"] is True and again == accuracy and torch.equal(again_logits, logits)


def test_whatever_the_features_depend_on_makes_another_file(data_and_clip, tmp_path):
    from dept.core.testing import save_tiny_clip

    cache = tmp_path / "cache"
    t = build("CoOp", data_and_clip, cache)
    base_acc, base_logits = evaluate(t)
    assert len(files(cache)) == 1 and last(t)["hit"] is False

    # an image file touched (its modification time), then rewritten at another size
    image = t.test_loader.dataset.data_source[2].impath
    stat = os.stat(image)
    os.utime(image, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    accuracy, logits = evaluate(t)
    assert last(t)["hit"] is False and len(files(cache)) == 2
    assert accuracy == base_acc and torch.equal(logits, base_logits)  # same pixels: same numbers
    with open(image, "ab") as f:
        f.write(b"\0")  # bytes after the PNG's end: the same pixels, another size
    evaluate(t)
    assert last(t)["hit"] is False and len(files(cache)) == 3

    # another CLIP file, another normalisation, another interpolation
    other_clip = save_tiny_clip(str(tmp_path / "other_clip.pt"), seed=1)
    for extra, clip_file in ((("DATALOADER.NUM_WORKERS", "0"), other_clip),
                             (("INPUT.PIXEL_MEAN", "[0.5, 0.5, 0.5]"), None),
                             (("INPUT.INTERPOLATION", "bilinear"), None)):
        before = len(files(cache))
        other = build("CoOp", data_and_clip, cache, *extra, clip_file=clip_file)
        evaluate(other)
        assert last(other)["hit"] is False and len(files(cache)) == before + 1, extra
        evaluate(other)
        assert last(other)["hit"] is True


def test_another_precision_or_device_is_another_file(data_and_clip, tmp_path):
    """fp16 needs CUDA (on the CPU an fp16 run computes in fp32, the same features: a hit is right);
    the key holds the precision, dtype and device type the features were computed with."""
    from dept.core import feature_cache

    t = build("CoOp", data_and_clip, tmp_path)
    key = feature_cache.cache_key(t, t.test_loader)
    names = {feature_cache.cache_file(tmp_path, key)}
    for field, value in (("precision", "fp16"), ("dtype", "torch.float16"), ("device", "cuda")):
        names.add(feature_cache.cache_file(tmp_path, {**key, field: value}))
    assert len(names) == 4
    requested_fp16 = build("CoOp", data_and_clip, tmp_path, "TRAINER.COOP.PREC", "fp16")
    assert feature_cache.cache_key(requested_fp16, requested_fp16.test_loader) == {**key, "precision": t.prec}


def test_a_damaged_file_is_named_recomputed_and_replaced(data_and_clip, tmp_path, caplog):
    from dept.core import feature_cache

    t = build("CLIPAdapter", data_and_clip, tmp_path)
    accuracy, logits = evaluate(t)
    (name,) = files(tmp_path)
    path = str(tmp_path / name)
    with open(path, "r+b") as f:  # half a file
        f.truncate(os.path.getsize(path) // 2)
    with caplog.at_level(logging.WARNING, logger="dept.core.feature_cache"):
        again, again_logits = evaluate(t)
    assert path in caplog.text and "cannot be read" in caplog.text
    assert last(t)["hit"] is False and again == accuracy and torch.equal(again_logits, logits)
    assert feature_cache.read(path, feature_cache.cache_key(t, t.test_loader))[0] is not None

    payload = torch.load(path, weights_only=True)  # a whole file whose numbers changed
    payload["features"][0, 0] += 1
    torch.save(payload, path)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dept.core.feature_cache"):
        again, again_logits = evaluate(t)
    assert path in caplog.text and "checksum" in caplog.text
    assert last(t)["hit"] is False and again == accuracy and torch.equal(again_logits, logits)
    evaluate(t)
    assert last(t)["hit"] is True


def _obtain(path, key, counter, out):
    from dept.core import feature_cache

    def compute():
        with open(counter, "a") as f:
            f.write("computed\n")
        return torch.arange(12.0).reshape(3, 4)

    features, hit = feature_cache.obtain(path, key, compute)
    torch.save({"features": features, "hit": hit}, out)


def test_racing_processes_compute_once(tmp_path):
    key = {"format": "test", "count": 3}
    path, counter = str(tmp_path / "f.pt"), str(tmp_path / "count")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_obtain, args=(path, key, counter, str(tmp_path / f"out{i}"))) for i in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert [p.exitcode for p in procs] == [0] * 4
    outs = [torch.load(tmp_path / f"out{i}", weights_only=True) for i in range(4)]
    assert open(counter).read() == "computed\n"
    assert sorted(o["hit"] for o in outs) == [False, True, True, True]
    assert all(torch.equal(o["features"], torch.arange(12.0).reshape(3, 4)) for o in outs)
    assert sorted(os.listdir(tmp_path)) == sorted(["f.pt", "f.pt.lock", "count", "out0", "out1", "out2", "out3"])


def test_two_runs_racing_write_one_file_and_record_it(data_and_clip, tmp_path):
    """Two ``train.py`` evaluations started together on one cache: one computes, the other reads,
    both report the same accuracy, and each run record says which it was."""
    root, clip_file = data_and_clip
    cache = tmp_path / "cache"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")])}
    procs = [subprocess.Popen(
        [sys.executable, "-m", "dept.run.train", "--root", root, "--trainer", "ZeroshotCLIP", "--eval-only",
         "--output-dir", str(tmp_path / f"run{i}"), "--seed", str(i + 1),
         "--dataset-config-file", os.path.join(REPO, "configs", "datasets", "dtd.yaml"),
         "--config-file", os.path.join(REPO, "configs", "trainers", "ZeroshotCLIP", "demo_tiny.yaml"),
         "MODEL.BACKBONE.PATH", clip_file, "DATASET.SUBSAMPLE_CLASSES", "new", "DEPT.FEATURE_CACHE", str(cache)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
    outputs = [p.communicate()[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    records = [json.load(open(tmp_path / f"run{i}" / "dept_run.json")) for i in range(2)]
    assert len(files(cache)) == 1
    assert sorted(r["feature_cache"][0]["hit"] for r in records) == [False, True]
    assert records[0]["result"]["accuracy"] == records[1]["result"]["accuracy"]


def test_the_cache_folder_is_no_run_setting_and_no_run_folder(tmp_path):
    from conftest import coop_cfg

    from dept.core.settings import differences
    from dept.run.cli import parse_args
    from dept.store.layout import FEATURE_CACHE_DIR, NOT_RUNS

    args = parse_args(["--output", str(tmp_path)])
    assert args.feature_cache == str(tmp_path / FEATURE_CACHE_DIR) and FEATURE_CACHE_DIR in NOT_RUNS
    shared = parse_args(["--output", str(tmp_path), "--feature-cache", "shared"]).feature_cache
    assert shared == os.path.abspath("shared")
    assert parse_args(["--output", str(tmp_path), "--no-feature-cache"]).feature_cache == ""
    # a run finished without the cache is the same run as one with it: reused, never redone
    assert differences(coop_cfg(), coop_cfg(**{"DEPT.FEATURE_CACHE": str(tmp_path)})) == []


def test_a_clip_file_rewritten_in_place_is_hashed_again(data_and_clip, tmp_path):
    """The CLIP file's sha256 is remembered per file version (``clip_sha256.json``): a file rewritten
    at the same size, its modification time put back, is still another version (its change time)."""
    from dept.core import feature_cache
    from dept.core.testing import save_tiny_clip

    clip_file, cache = str(tmp_path / "clip.pt"), tmp_path / "cache"
    save_tiny_clip(clip_file, seed=0)
    evaluate(build("ZeroshotCLIP", data_and_clip, cache, clip_file=clip_file))
    stat = os.stat(clip_file)
    save_tiny_clip(clip_file, seed=1)
    os.utime(clip_file, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert os.path.getsize(clip_file) == stat.st_size
    feature_cache._CLIP_SHA.clear()  # as a new process
    t = build("ZeroshotCLIP", data_and_clip, cache, clip_file=clip_file)
    evaluate(t)
    assert last(t)["hit"] is False and len(files(cache)) == 2
    assert len(json.load(open(cache / feature_cache.CLIP_HASHES))) == 2


def test_the_benchmark_sub_command_runs(tmp_path, capsys):
    """``benchmarks/benchmark.py feature-cache --quick``: every evaluation timed, one miss, the rest hits."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(REPO, "benchmarks", "benchmark.py"))
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    out = tmp_path / "r.json"
    assert benchmark.main(["feature-cache", "--quick", "--out", str(out)]) == 0
    run = json.load(open(out))
    assert [h for r in run["rows"] for h in r["hits"]] == [False] + [True] * (len(run["rows"]) * run["seeds"] - 1)
    assert "× less" in capsys.readouterr().out


def test_a_loader_that_shuffles_is_not_served(data_and_clip, tmp_path):
    """Cached features are in the dataset's order: a loader reading in another order gets none."""
    t = build("ZeroshotCLIP", data_and_clip, tmp_path)
    t.test_loader = torch.utils.data.DataLoader(t.test_loader.dataset, batch_size=4, shuffle=True)
    evaluate(t)
    assert not getattr(t, "feature_cache_log", None) and not files(tmp_path)
