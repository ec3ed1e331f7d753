"""Registration next to a user's CoOp checkout and Hugging Face ``datasets``, and re-import."""
import os
import subprocess
import sys
import textwrap

import pytest
from conftest import REPO

pytestmark = pytest.mark.dassl


def run(code, cwd, extra_path=()):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(extra_path))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_user_coop_checkout_and_hf_datasets_are_not_shadowed(tmp_path):
    # A CoOp-style checkout: its own trainers/ (registering CoOp) and datasets/ packages.
    checkout = tmp_path / "CoOp"
    (checkout / "trainers").mkdir(parents=True)
    (checkout / "trainers" / "__init__.py").write_text(textwrap.dedent("""
        from dassl.engine import TRAINER_REGISTRY, TrainerX

        @TRAINER_REGISTRY.register()
        class CoOp(TrainerX):
            MARK = "user"
    """))
    (checkout / "datasets").mkdir()
    (checkout / "datasets" / "__init__.py").write_text("MARK = 'user datasets'\n")
    # Stand-in for Hugging Face `datasets` in site-packages order (after the checkout).
    site = tmp_path / "site"
    (site / "datasets").mkdir(parents=True)
    (site / "datasets" / "__init__.py").write_text("MARK = 'huggingface'\n")

    out = run("""
        import trainers, datasets          # the user's own, registered first
        import dept, dept.trainers
        import importlib; importlib.reload(dept.trainers)   # importing twice is fine
        from dassl.engine import TRAINER_REGISTRY as R
        print(R.get("CoOp").MARK, datasets.MARK, R.get("CoOpDePT").__name__, R.get("ExtrasLinearProbeCoOp").__name__)
    """, cwd=str(checkout), extra_path=[str(checkout), str(site)])
    assert out.split() == ["user", "user", "datasets", "CoOpDePT", "CoOpDePT"]

    # Without the checkout, `datasets` is Hugging Face's, even from our repository root.
    out = run("import dept, datasets; print(datasets.MARK)", cwd=str(tmp_path), extra_path=[str(site)])
    assert out.strip() == "huggingface"


def coop_style_checkout(root):
    """A CoOp-family checkout whose own trainers/ and datasets/ register, with Dassl's decorator,
    names we register too (CoOp, OxfordPets)."""
    checkout = root / "CoOp"
    (checkout / "trainers").mkdir(parents=True)
    (checkout / "trainers" / "__init__.py").write_text("from .coop import CoOp\n")
    (checkout / "trainers" / "coop.py").write_text(textwrap.dedent("""
        from dassl.engine import TRAINER_REGISTRY, TrainerX

        @TRAINER_REGISTRY.register()
        class CoOp(TrainerX):
            MARK = "user"
    """))
    (checkout / "datasets").mkdir()
    (checkout / "datasets" / "__init__.py").write_text("from .oxford_pets import OxfordPets\n")
    (checkout / "datasets" / "oxford_pets.py").write_text(textwrap.dedent("""
        from dassl.data.datasets import DATASET_REGISTRY, DatasetBase

        @DATASET_REGISTRY.register()
        class OxfordPets(DatasetBase):
            MARK = "user"
    """))
    return checkout


@pytest.mark.parametrize("imports", ["import dept; import datasets, trainers",  # as import sorters order it
                                     "import datasets, trainers; import dept"], ids=["dept-first", "user-first"])
def test_users_classes_win_in_either_import_order(tmp_path, imports):
    checkout = coop_style_checkout(tmp_path)
    out = run("""
        import logging, sys
        logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
        {imports}
        import importlib, dept.trainers, dept.datasets
        importlib.reload(dept.trainers.coop)                 # our registrations once more: still theirs
        from dassl.engine import TRAINER_REGISTRY as T
        from dassl.data.datasets import DATASET_REGISTRY as D
        import dept.trainers.coop
        print("RESULT", T.get("CoOp").__module__, T.get("CoOp").__name__, T.get("CoOp").MARK,
              D.get("OxfordPets").__module__, D.get("OxfordPets").__name__, D.get("OxfordPets").MARK,
              T.get("CoOpDePT").__module__, T.get("ExtrasLinearProbeCoOp").__name__,
              D.get("DescribableTextures").__module__)
    """.replace("{imports}", imports), cwd=str(checkout), extra_path=[str(checkout)])
    result = next(line for line in out.splitlines() if line.startswith("RESULT")).split()[1:]
    assert result == ["trainers.coop", "CoOp", "user", "datasets.oxford_pets", "OxfordPets", "user",
                      "dept.trainers.coop", "CoOpDePT", "dept.datasets.dtd"]
    handovers = [line for line in out.splitlines() if "replaces dept's" in line]
    if imports.startswith("import dept"):
        assert len(handovers) == 2, out
        assert all(line.startswith("INFO dept.core.registry") for line in handovers)
        assert any("TRAINER 'CoOp': trainers.coop.CoOp replaces dept's dept.trainers.coop.CoOp" in line
                   for line in handovers), handovers
        assert any("'OxfordPets': datasets.oxford_pets.OxfordPets replaces" in line for line in handovers)
    else:
        assert handovers == []


def test_a_users_own_duplicate_is_still_dassls_error(tmp_path):
    """Only names we hold are handed over: two registrations of a user's name still raise."""
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent("""
        import dept
        from dassl.engine import TRAINER_REGISTRY as T
        class Mine: pass
        T.register(Mine)
        T.register(Mine)
    """)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and 'An object named "Mine" was already registered' in proc.stderr


def test_installed_names_are_only_dept():
    """setup.py maps trainers/ and datasets/ under dept: nothing else is importable from site-packages."""
    out = run("""
        import importlib.util
        print(importlib.util.find_spec("trainers"), importlib.util.find_spec("datasets"))
        import dept.trainers, dept.datasets
        print(dept.trainers.__file__, dept.datasets.__file__)
    """, cwd="/")
    first, second = out.strip().splitlines()
    assert first == "None None"
    assert second.split() == [os.path.join(REPO, "trainers", "__init__.py"),
                              os.path.join(REPO, "datasets", "__init__.py")]


def test_train_py_from_the_repository_root_does_not_shadow_datasets(tmp_path):
    """`python train.py` puts the repository root first on sys.path; train.py takes it off again."""
    site = tmp_path / "site"
    (site / "datasets").mkdir(parents=True)
    (site / "datasets" / "__init__.py").write_text("MARK = 'huggingface'\n")
    script = os.path.join(REPO, "train.py")
    out = run(f"""
        import sys
        sys.path.insert(0, {REPO!r})  # what running the script does
        __file__ = {script!r}
        exec(open(__file__).read().split("# -- entry point")[0])
        import datasets
        print(datasets.MARK)
    """, cwd=REPO, extra_path=[str(site)])
    assert out.strip() == "huggingface"
