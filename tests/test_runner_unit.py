"""The runner without training: variant folders, option checks, dry runs, demo preparation, child processes."""
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import REPO

from dept.run.cli import parse_args, run_protocol
from dept.run.demo_clip import FILE as DEMO_CLIP_FILE
from dept.run.plan import Planner
from dept.store.layout import variant_name
from dept.store.protocols import PROTOCOLS

pytestmark = pytest.mark.dassl


def grid_for(tmp_path, *opts, trainer="CoOpDePT", config="demo_tiny"):
    args = parse_args(["--root", str(tmp_path), "--datasets", "dtd", "--seeds", "1", "--trainers", trainer,
                       "--config", config, "--output", str(tmp_path / "out"), "--", *opts])
    return Planner(args, PROTOCOLS["base2new"]).cell(trainer, 16)


def test_variant_names_are_sorted_filesystem_safe_and_hashed_when_long():
    assert (variant_name("vit_b16_ep10_bs4_lr35", [("OPTIM.MAX_EPOCH", 5), ("DEPT.WEIGHT", 0.2)])
            == "vit_b16_ep10_bs4_lr35+DEPT.WEIGHT=0.2+OPTIM.MAX_EPOCH=5")
    assert variant_name("c", [("MODEL.BACKBONE.NAME", "ViT-B/16"), ("INPUT.SIZE", (64, 64))]) == \
        "c+INPUT.SIZE=64,64+MODEL.BACKBONE.NAME=ViT-B_16"
    many = [(f"TRAINER.SOMETHING_LONG_{i}", i) for i in range(12)]
    long_name = variant_name("vit_b16_ep10_bs4_lr35", many)
    assert len(long_name) <= 100 and long_name.startswith("vit_b16_ep10_bs4_lr35+TRAINER.SOMETHING_LONG_0=0+")
    assert long_name != variant_name("vit_b16_ep10_bs4_lr35", many[:-1] + [("TRAINER.SOMETHING_LONG_11", 99)])
    assert "/" not in long_name and " " not in long_name


def test_only_options_that_change_the_resolved_config_name_a_variant(tmp_path):
    assert grid_for(tmp_path).variant == "demo_tiny"
    # demo_tiny already has 5 epochs and a tiny backbone: restating them changes nothing.
    assert grid_for(tmp_path, "OPTIM.MAX_EPOCH", "5").variant == "demo_tiny"
    grid = grid_for(tmp_path, "OPTIM.MAX_EPOCH", "1", "DEPT.WEIGHT", "0.2", "MODEL.BACKBONE.PATH", "/x/clip.pt",
                    "TRAIN.PRINT_FREQ", "1")
    assert grid.variant == "demo_tiny+DEPT.WEIGHT=0.2+OPTIM.MAX_EPOCH=1"  # paths and print frequency do not
    assert grid.options == [("DEPT.WEIGHT", 0.2), ("OPTIM.MAX_EPOCH", 1)]


@pytest.mark.parametrize("opts, says", [
    (["SEED", "5"], "SEED is set by the runner (--seeds)"),
    (["DATASET.NUM_SHOTS", "4"], "DATASET.NUM_SHOTS is set by the runner (--shots)"),
    (["DATASET.NAME", "Caltech101"], "DATASET.NAME is set by the runner (--datasets)"),
    (["TRAINER.NAME", "CoOp"], "TRAINER.NAME is set by the runner (--trainers)"),
    (["OPTIM.NO_SUCH_KEY", "1"], "the options after -- do not make a valid config"),
])
def test_options_the_runner_owns_or_that_do_not_exist_stop_before_anything_runs(tmp_path, capsys, opts, says):
    code = run_protocol("base2new", ["--root", str(tmp_path), "--datasets", "dtd", "--seeds", "1", "--config",
                                     "demo_tiny", "--output", str(tmp_path / "out"), "--", *opts])
    assert code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_dry_run_writes_nothing_not_even_the_demo_data(tmp_path):
    env = dict(os.environ)
    env.pop("DATA", None)
    proc = subprocess.run([sys.executable, "-m", "dept", "base2new", "--seeds", "1", "--output", "out", "--dry-run"],
                          cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert os.listdir(tmp_path) == []
    assert proc.stdout.count("would run: ") == 6  # the demo: zero-shot CLIP, CoOp and CoOpDePT side by side
    assert str(tmp_path / "out" / "base2new" / "train_base" / "digits") in proc.stdout  # relative to the cwd


def test_two_runners_prepare_the_demo_at_once_on_a_fresh_root(tmp_path):
    code = "import sys; from dept.run.demo import prepare_demo; print(prepare_demo(sys.argv[1]))"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "out")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    import torch

    torch.load(str(tmp_path / "out" / "demo" / DEMO_CLIP_FILE), weights_only=True)
    assert not [f for f in os.listdir(tmp_path / "out" / "demo") if f.endswith(".tmp")]
    assert os.path.isfile(tmp_path / "out" / "demo" / "data" / "digits" / "split_zhou_Digits.json")


PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    from dept.run.execute import child_setup
    sleeper = [sys.executable, "-c", "import time; time.sleep(120)"]
    child = subprocess.Popen(sleeper, preexec_fn=child_setup(os.getpid()))
    print(child.pid, flush=True)
    time.sleep(120)
""")


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_run_dies_with_its_runner():
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=REPO)
    child = int(parent.stdout.readline())
    assert _alive(child)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    deadline = time.time() + 30
    while _alive(child) and time.time() < deadline:
        time.sleep(0.1)
    assert not _alive(child), "the child outlived its runner"


def test_options_that_change_two_datasets_differently_are_refused(tmp_path, capsys):
    """A folder's name says what its runs' settings are: an option that one dataset's yaml already sets
    would name a variant that is not the other dataset's."""
    configs = tmp_path / "configs"
    shutil.copytree(os.path.join(REPO, "configs"), configs)
    with open(configs / "datasets" / "eurosat.yaml", "a") as f:
        f.write("OPTIM:\n  WEIGHT_DECAY: 0.001\n")  # a key demo_tiny.yaml, merged after it, does not set
    code = run_protocol("base2new", ["--root", str(tmp_path), "--datasets", "dtd", "eurosat", "--seeds", "1",
                                     "--config", "demo_tiny", "--configs-dir", str(configs), "--output",
                                     str(tmp_path / "out"), "--", "OPTIM.WEIGHT_DECAY", "0.001"])
    err = capsys.readouterr().err
    assert code == 2 and "change dtd's config by [('OPTIM.WEIGHT_DECAY', 0.001)] but eurosat's by nothing" in err, err


def test_a_transfer_target_of_the_other_protocol_is_refused(tmp_path, capsys):
    code = run_protocol("dg", ["--root", str(tmp_path), "--datasets", "imagenetv2", "caltech101", "--seeds", "1",
                               "--output", str(tmp_path / "out")])
    assert code == 2 and "caltech101: a target of cross-dataset, not of dg" in capsys.readouterr().err


def test_a_corrupt_record_beside_checkpoints_sets_them_aside(tmp_path):
    """Its checkpoints cannot be tied to any settings: they are set aside, as an older version's are,
    and the run is run again (dept.run.train then replaces the record)."""
    from dept.run.execute import Executor
    from dept.store.record import write_record

    args = parse_args(["--root", str(tmp_path), "--datasets", "dtd", "--seeds", "1", "--trainers", "CoOp",
                       "--config", "demo_tiny", "--output", str(tmp_path / "out")])
    planner = Planner(args, PROTOCOLS["base2new"])
    (chain,) = planner.chains([planner.cell("CoOp", 16)])
    run = chain.runs[0]
    write_record(run.directory, {"status": "finished", "config": "{{ not yaml"})
    os.makedirs(os.path.join(run.directory, "prompt_learner"))
    open(os.path.join(run.directory, "prompt_learner", "model.pth.tar-3"), "wb").close()
    decision = Executor(planner).assess(run)
    assert (decision.action, decision.unverified) == ("run", True)
    assert "its checkpoints are set aside" in decision.notes[0]
    from dept.run.train import _check_previous

    _check_previous(planner.expected(run.argv), "train")  # dept.run.train replaces such a record, no crash


def _backbone_cells(tmp_path, backbone, trainers, protocol="base2new", opts=(), config=()):
    from dept.run.cli import prepare

    args = parse_args(["--root", str(tmp_path), "--datasets", "dtd", "--seeds", "1", "--trainers", *trainers,
                       *(["--backbone", backbone] if backbone else []), *config, "--output", str(tmp_path / "out"),
                       "--dry-run", "--", *opts], PROTOCOLS[protocol])
    planner, cells, chains = prepare(args, PROTOCOLS[protocol])
    return {c.trainer: c for c in cells}, chains, planner


def test_backbone_picks_each_trainers_config_for_it(tmp_path, monkeypatch):
    """--backbone runs a whole grid on another CLIP: each trainer's own config for it where it has one
    (the folder a per-family --config would give: finished runs are reused), else its config with the
    backbone's name and input size, which name a variant folder of their own."""
    monkeypatch.delenv("DEPT_CLIP_PATH", raising=False)
    cells, chains, _ = _backbone_cells(tmp_path, "ViT-B/32", ["CoOp", "CoOpDePT", "MaPLeDePT", "ZeroshotCLIP"])
    assert {t: (c.cfg_name, c.variant) for t, c in cells.items()} == {
        "CoOp": ("vit_b32_ep10_bs4_lr35", "vit_b32_ep10_bs4_lr35"),
        "CoOpDePT": ("vit_b32_ep10_bs4_lr35", "vit_b32_ep10_bs4_lr35"),
        "MaPLeDePT": ("vit_b32_c2_ep10_batch4_2ctx", "vit_b32_c2_ep10_batch4_2ctx"),
        "ZeroshotCLIP": ("vit_b32", "vit_b32")}
    for chain in chains:
        assert f"/{cells[chain.runs[0].key.trainer].variant}/" in chain.runs[0].directory
        assert chain.runs[0].argv[-4:] == ["MODEL.BACKBONE.NAME", "ViT-B/32", "INPUT.SIZE", "(224, 224)"]
    cells, _, _ = _backbone_cells(tmp_path, "ViT-L/14@336px", ["KgCoOpDePT"])
    assert cells["KgCoOpDePT"].variant.startswith("vit_l14_336_")
    cells, _, _ = _backbone_cells(tmp_path, "RN50", ["CoOp"])  # no ResNet configs: the options name it
    assert cells["CoOp"].cfg_name == "vit_b16_ep10_bs4_lr35"
    assert cells["CoOp"].variant == "vit_b16_ep10_bs4_lr35+MODEL.BACKBONE.NAME=RN50"  # its size is the yaml's 224
    cells, _, _ = _backbone_cells(tmp_path, "RN50x4", ["CoOp"])
    assert cells["CoOp"].variant == "vit_b16_ep10_bs4_lr35+INPUT.SIZE=288,288+MODEL.BACKBONE.NAME=RN50x4"
    cells, _, _ = _backbone_cells(tmp_path, "ViT-B/32", ["PromptSRCDePT"], protocol="few_shot")  # no vit_b32 file of it
    assert cells["PromptSRCDePT"].variant == "vit_b16_c2_ep50_batch4_4+4ctx_few_shot+MODEL.BACKBONE.NAME=ViT-B_32"
    # --config names the setting; --backbone its file for the backbone (or, without one, the options)
    cells, _, _ = _backbone_cells(tmp_path, "ViT-L/14", ["CoOp"], config=["--config", "vit_b32_ep10_bs4_lr35"])
    assert cells["CoOp"].variant == "vit_l14_ep10_bs4_lr35"
    cells, _, _ = _backbone_cells(tmp_path, "ViT-B/32", ["CoOp"], config=["--config", "vit_b16_ep50"])
    assert cells["CoOp"].variant == "vit_b16_ep50+MODEL.BACKBONE.NAME=ViT-B_32"
    # ViT-B/16 is the configs' own: the grid of no --backbone
    plain, plain_chains, _ = _backbone_cells(tmp_path, "", ["CoOp", "MaPLeDePT"])
    b16, b16_chains, _ = _backbone_cells(tmp_path, "ViT-B/16", ["CoOp", "MaPLeDePT"])
    assert [c.variant for c in b16.values()] == [c.variant for c in plain.values()] == [
        "vit_b16_ep10_bs4_lr35", "vit_b16_c2_ep10_batch4_2ctx"]
    assert [c.key for c in b16_chains] == [c.key for c in plain_chains]


def test_backbone_grid_is_the_per_family_config_grid(tmp_path, monkeypatch):
    """`--backbone ViT-B/32` and `--config vit_b32_...` plan the same runs with the same settings, so
    runs made either way count for the other; a SLURM task rebuilding the grid from the parsed
    arguments finds every chain."""
    from dept.core.settings import flat
    from dept.run.cli import ChainTask

    monkeypatch.delenv("DEPT_CLIP_PATH", raising=False)
    _, chains, planner = _backbone_cells(tmp_path, "ViT-B/32", ["CoOpDePT"])
    _, by_config, config_planner = _backbone_cells(tmp_path, "", ["CoOpDePT"],
                                                   config=["--config", "vit_b32_ep10_bs4_lr35"])
    assert [c.key for c in chains] == [c.key for c in by_config]
    for chain, other in zip(chains, by_config):
        for run, twin in zip(chain.runs, other.runs):
            assert flat(planner.expected(run.argv)) == flat(config_planner.expected(twin.argv))
            assert planner.expectation(run.key).full == config_planner.expectation(twin.key).full
    task = ChainTask(planner.args, planner.runner_opts)
    for chain in chains:
        _, rebuilt = task.prepare(chain.key)
        assert [r.argv for r in rebuilt.runs] == [r.argv for r in chain.runs]


@pytest.mark.parametrize("argv, says", [
    (["--backbone", "ViT-B32"], "--backbone ViT-B32: not a CLIP backbone. Did you mean ViT-B/32"),
    (["--backbone", "RN50", "--trainers", "CoOp", "MaPLe"],  # visual prompts on a ResNet, before any run
     "--backbone RN50: MaPLe puts learned prompts into the image encoder's token sequence, which only a ViT has"),
    (["--backbone", "RN50", "--", "MODEL.BACKBONE.NAME", "RN101"], "--backbone sets them"),
])
def test_backbone_mistakes_stop_before_anything_runs(tmp_path, capsys, monkeypatch, argv, says):
    monkeypatch.delenv("DEPT_CLIP_PATH", raising=False)  # a file would decide what the backbone is
    code = run_protocol("base2new", ["--root", str(tmp_path), "--datasets", "dtd", "--seeds", "1", "--output",
                                     str(tmp_path / "out"), *argv])
    err = capsys.readouterr().err
    assert code == 2 and says in err, err
    assert not (tmp_path / "out").exists()


def test_backbone_with_the_demo_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DATA", raising=False)
    code = run_protocol("base2new", ["--seeds", "1", "--backbone", "ViT-B/32", "--output", str(tmp_path / "o")])
    assert code == 2 and "the demo runs its own tiny CLIP" in capsys.readouterr().err
