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
