"""What the runner, a grid file and train.py say when they cannot run: every mistake named at once,
with what to do, before any compute (misspelled names, grid-file keys and values, a flag whose value
vanished, --untrained with DePT), and a full disk named by its file, resumed by the same command."""
import errno
import os
import re
import subprocess
import sys

import pytest
from conftest import REPO, make_dtd

from dept.run.cli import run_protocol
from dept.run.grid_file import main as grid_main
from dept.run.train import cli as train_cli

pytestmark = pytest.mark.dassl
CONFIGS = os.path.join(REPO, "configs")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return make_dtd(str(tmp_path_factory.mktemp("data")))


def base2new(root, out, *flags):
    return ["--root", str(root), "--seeds", "1", "--shots", "2", "--config", "demo_tiny", "--output", str(out), *flags]


# -- names -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("flags, says", [
    (["--trainers", "CoOpDept"], ["unknown trainer 'CoOpDept'", "Did you mean CoOpDePT", "MaPLe,", "IVLP,",
                                  "VPT,", "PromptSRC,"]),
    (["--datasets", "DTD"], ["unknown dataset 'DTD'", "Did you mean dtd?", "caltech101, digits"]),
    (["--datasets", "DescribableTextures"], ["DescribableTextures is the dataset class of dtd"]),
])
def test_a_misspelled_trainer_or_dataset_is_named_with_the_valid_ones_at_once(data, tmp_path, capsys, flags, says):
    code = run_protocol("base2new", base2new(data, tmp_path / "out", *flags))
    err = capsys.readouterr().err
    assert code == 2 and all(s in err for s in says), err
    assert not (tmp_path / "out").exists()


def test_every_mistake_of_one_command_is_named_at_once(data, tmp_path, capsys):
    """Two misspelled trainers, a misspelled dataset, shots 0, a negative seed and a misspelled backbone:
    one attempt names them all (the valid trainers listed once), not one per attempt."""
    code = run_protocol("base2new", ["--root", str(data), "--seeds", "-1", "--shots", "0", "--trainers", "CoOpDept",
                                     "KgCoop", "--datasets", "dtd", "eurosatt", "--backbone", "RN5O", "--output",
                                     str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2, err
    said = ["5 problems, nothing was run:", "unknown trainer 'CoOpDept'. Did you mean CoOpDePT",
            "unknown trainer 'KgCoop'. Did you mean KgCoOp", "unknown dataset 'eurosatt'", "--shots 0", "--seeds -1",
            "--backbone RN5O: not a CLIP backbone"]
    assert all(s in err for s in said), err
    assert err.count("Trainers: ") == 1 and not (tmp_path / "out").exists()


def test_the_demo_refuses_a_misspelled_trainer_before_preparing_anything(tmp_path, capsys):
    code = run_protocol("base2new", ["--root", "", "--seeds", "1", "--trainers", "CoOpDept", "--output",
                                     str(tmp_path / "out")])
    assert code == 2 and "Did you mean CoOpDePT" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()  # no demo data, no CLIP built


def test_a_plugin_trainer_is_a_valid_name(tmp_path):
    (tmp_path / "my_plugin.py").write_text(
        "from dassl.engine import TRAINER_REGISTRY\nfrom dept.core.registry import register\n"
        "from dept.trainers.coop import CoOp\n\n\nclass MyPluginTrainer(CoOp):\n    pass\n\n\n"
        "register(TRAINER_REGISTRY, MyPluginTrainer)\n")
    code = ("from dept.run.names import unknown_trainer as u; print(repr(u('MyPluginTrainer'))); "
            "print(u('MyPluginTrainr'))")
    env = dict(os.environ, DEPT_PLUGINS="my_plugin",
               PYTHONPATH=os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    known, misspelled = proc.stdout.strip().splitlines()[-2:]
    assert known == "None" and "Did you mean MyPluginTrainer?" in misspelled and "MyPluginTrainer," in misspelled


def test_train_py_lists_every_method_trainer(data, tmp_path, capsys):
    code = train_cli(["--root", str(data), "--trainer", "Maple", "--output-dir", str(tmp_path / "o"),
                      "--dataset-config-file", os.path.join(CONFIGS, "datasets", "dtd.yaml")])
    err = capsys.readouterr().err
    assert code == 1 and "Did you mean MaPLe" in err
    assert all(f"{name}," in err for name in ("IVLP", "VPT", "PromptSRC", "MaPLeDePT", "CoOpDePT"))


@pytest.mark.parametrize("flags, says", [
    (["--shots", "0", "2"], "--shots 0: a run takes K >= 1 images per class"),
    (["--seeds", "-1"], "--seeds -1: seeds are 0 or more"),
])
def test_values_no_run_could_honour_are_refused_before_any_run(data, tmp_path, capsys, flags, says):
    code = run_protocol("base2new", [*base2new(data, tmp_path / "out"), *flags, "--dry-run"])
    assert code == 2 and says in capsys.readouterr().err


# -- grid files ------------------------------------------------------------------------------------

def grid(tmp_path, text, *extra):
    path = tmp_path / "grid.yaml"
    path.write_text(text)
    return grid_main([str(path), *extra])


GOOD = """
  - protocol: base2new
    trainers: [CoOp]
    datasets: [dtd]
    seeds: [1]
    shots: [2]
    config: demo_tiny
"""


@pytest.mark.parametrize("text, says", [
    (f"root: {{root}}\noutput: out\ngrids:{GOOD}    epochs: 5\n",
     ["grid.yaml: ", "grids[0] (base2new): key 'epochs' is not a flag", "Valid keys: protocol, opts, root",
      "OPTIM.MAX_EPOCH"]),
    (f"root: {{root}}\noutptu: out\ngrids:{GOOD}",
     ["top level: key 'outptu' is not a flag of any protocol command", "Did you mean output",
      "Valid keys:"]),
])
def test_an_unknown_grid_key_is_named_with_the_file_the_grid_and_the_valid_keys(data, tmp_path, capsys, text, says):
    assert grid(tmp_path, text.format(root=data)) == 2
    err = capsys.readouterr().err
    assert all(s in err for s in says), err
    assert "usage:" not in err and not (tmp_path / "out").exists()


def test_the_whole_grid_file_is_checked_before_the_first_grid_runs(data, tmp_path, capsys):
    # grids[0] alone would train; grids[1..5] cannot run: nothing runs, and all of them are named
    text = (f"root: {data}\noutput: out\ngrids:{GOOD}"
            "  - {protocol: few-shot, trainers: [CoOp], datasets: [dtd], shots: [0, 2], config: demo_tiny}\n"
            "  - {protocol: base2new, trainers: [CoOp], datasets: [dtd], config: demo_tiny, opts: {OPTIM.NO_KEY: 1}}\n"
            "  - [protocol, base2new]\n"
            "  - {protocol: base2new, seeds: [x]}\n"
            "  - {protocol: base2nw}\n"
            "  - {protocol: base2new, trainers: [CoOpDept], datasets: [dtdd], config: demo_tiny}\n")
    for extra in ((), ("--dry-run",)):
        assert grid(tmp_path, text, *extra) == 2
        err = capsys.readouterr().err
        assert "nothing was run" in err and "grids[0]" not in err, err
        assert "grids[1] (few-shot): --shots 0" in err
        assert "grids[2] (base2new): the options under opts: do not make a valid config" in err
        assert "grids[4] (base2new): seeds: invalid int value: 'x'" in err
        assert "grids[5]: unknown protocol 'base2nw'" in err and "Did you mean base2new?" in err
        assert "grids[3] is list ['protocol', 'base2new'], not a mapping" in err
        assert err.index("grids[1]") < err.index("grids[2]") < err.index("grids[3]")
        # an entry with two mistakes: each on its own line, under its index
        assert "grids[6] (base2new): --trainers: unknown trainer 'CoOpDept'" in err
        assert "grids[6] (base2new): unknown dataset 'dtdd'" in err
        assert not (tmp_path / "out").exists()


def test_a_key_given_twice_is_an_error_not_the_last_one_wins(data, tmp_path, capsys):
    assert grid(tmp_path, f"root: {data}\noutput: out\ngrids:{GOOD}    seeds: [2]\n") == 2
    assert "line 10: key 'seeds' is given twice in one mapping (first on line 7)" in capsys.readouterr().err


def test_a_relative_output_is_said_resolved_against_the_file(data, tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    assert grid(tmp_path / "sub", f"root: {data}\noutput: out\ngrids:{GOOD}", "--dry-run") == 0
    assert f"output: out is {tmp_path / 'sub' / 'out'} (relative to the grid file's folder)" in \
        capsys.readouterr().out


# -- one run's command line --------------------------------------------------------------------------

def train_argv(data, out, *extra, trainer="CoOp"):
    return ["--root", str(data), "--seed", "1", "--trainer", trainer,
            "--dataset-config-file", os.path.join(CONFIGS, "datasets", "dtd.yaml"),
            "--config-file", os.path.join(CONFIGS, "trainers", trainer, "demo_tiny.yaml"),
            "--output-dir", str(out), "--eval-only", *extra]


@pytest.mark.parametrize("tail, says", [
    (["--model-dir"], "--model-dir has no value: an unset or empty shell variable"),
    (["--model-dir", "--load-epoch", "1", "DATASET.NUM_SHOTS", "2"], "--model-dir has no value"),
    (["--model-dir", "DATASET.NUM_SHOTS", "2"], "--model-dir took 'DATASET.NUM_SHOTS' (the next word on the line)"),
    (["--model-dir", "DATASET.NUM_SHOTS", "2", "OPTIM.MAX_EPOCH", "1"], "--model-dir took 'DATASET.NUM_SHOTS'"),
    (["DATASET.NUM_SHOTS", "2", "--model-dir"], "--model-dir has no value: an unset or empty shell variable"
                                                 "[^|]* Also, --model-dir came after the config options"),
    (["--model-dir", ""], "it was given but empty: an unset shell variable?"),  # quoted: the same advice
])
def test_an_unset_model_dir_is_said_as_such_never_a_traceback(data, tmp_path, capsys, tail, says):
    parse_error = tail[0] == "--model-dir" and (len(tail) == 1 or tail[1].startswith("--"))  # argparse's own
    with pytest.raises(SystemExit) if parse_error else _nothing():
        code = train_cli(train_argv(data, tmp_path / "o", *tail))
        assert code == 1
    err = capsys.readouterr().err
    assert re.search(re.escape(says).replace(re.escape("[^|]*"), "[^|]*"), err), err
    assert "Traceback" not in err and "usage:" not in err
    assert not (tmp_path / "o").exists()


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def test_the_runner_says_the_same_of_an_unset_root(capsys):
    with pytest.raises(SystemExit):
        run_protocol("base2new", ["--root", "--datasets", "dtd"])
    assert "--root has no value: an unset or empty shell variable" in capsys.readouterr().err


def test_untrained_dept_on_base_classes_says_nothing_was_loaded(data, tmp_path, capsys):
    code = train_cli(train_argv(data, tmp_path / "o", "--untrained", "DATASET.SUBSAMPLE_CLASSES", "base",
                                trainer="CoOpDePT"))
    err = capsys.readouterr().err
    assert code == 1 and "--untrained loads nothing, so CoOpDePT's CAT head is untrained" in err, err
    assert "the checkpoint it loaded" not in err and not (tmp_path / "o").exists()  # refused before building


# -- a full disk --------------------------------------------------------------------------------------

def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    from dept.util import files

    target = tmp_path / "table.md"
    files.write_text(str(target), "old\n")

    def full(f, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "_commit", full)
    with pytest.raises(files.DiskFull) as caught:
        files.write_text(str(target), "new\n")
    assert str(target) in str(caught.value) and "run the same command again" in str(caught.value)
    assert caught.value.errno == errno.ENOSPC and target.read_text() == "old\n"
    assert os.listdir(tmp_path) == ["table.md"]  # no temporary file left behind


def test_a_run_stopped_by_a_full_disk_is_resumed_by_the_same_command(data, tiny_clip_file, tmp_path):
    out = tmp_path / "out"
    command = [sys.executable, "-m", "dept", "base2new", *base2new(data, out, "--datasets", "dtd", "--trainers",
                                                                   "CoOp"),
               "--", "MODEL.BACKBONE.PATH", tiny_clip_file, "OPTIM.MAX_EPOCH", "1"]
    full = subprocess.run(command, env=dict(os.environ, DEPT_FAULT="write@model.pth.tar:1:ENOSPC"), capture_output=True,
                          text=True, timeout=600)
    text = full.stdout + full.stderr
    assert full.returncode == 1, text[-3000:]
    assert "no space left on the device while writing" in text and "model.pth.tar-1" in text, text[-3000:]
    assert "disk full. Free space and run the same command again: it resumes this run" in text
    again = subprocess.run(command, capture_output=True, text=True, timeout=600)  # no --retry-failed
    assert again.returncode == 0, (again.stdout + again.stderr)[-3000:]
    assert "stopped on a full disk" in again.stderr + again.stdout
    assert "| CoOp" in again.stdout  # the table, from the finished runs
