"""Install the ``dept`` package.

The repository keeps the CoOp-family layout (``trainers/`` and ``datasets/`` at the top), but
they are installed as ``dept.trainers`` and ``dept.datasets``: a top-level ``trainers`` or
``datasets`` package in site-packages would shadow a user's CoOp checkout and Hugging Face
``datasets``. Only the name ``dept`` is installed.

Dassl.pytorch is not on PyPI; see the README for its one-line install.
"""
from setuptools import setup

setup(
    name="dept",
    version="0.1.0",
    description="Decoupled Prompt Tuning (DePT, CVPR 2024) as a Dassl.pytorch plugin",
    python_requires=">=3.9",
    packages=["dept", "dept.core", "dept.util", "dept.store", "dept.results", "dept.run", "dept.run.backends",
              "dept.analysis", "dept.trainers", "dept.datasets"],
    package_dir={"dept": "dept", "dept.trainers": "trainers", "dept.datasets": "datasets"},
    package_data={"dept": ["reference/*.csv"]},
    install_requires=[
        "torch>=2.0",
        "torchvision",
        # The OpenAI CLIP code as a wheel that accepts any torch (openai-clip on PyPI is a 2022
        # sdist of the same code). Both import pkg_resources, which setuptools>=81 no longer has.
        "clip-anytorch>=2.5",
        "setuptools<81",
        "yacs",
        "pyyaml",  # grid files (yacs needs it too)
        "matplotlib",  # python -m dept report: the figures
        "gdown",
        "tqdm",
        "scikit-learn",  # the embedded demo's digits; Dassl needs it too
        # Imported by dassl at import time; its own pins (wilds==1.2.2, flake8==3.7.9, ...) no
        # longer install on a current Python, so it is installed with --no-deps.
        "tensorboard",
        "wilds",
        "scipy",
        "tabulate",
    ],
    extras_require={
        "slurm": ["submitit"],  # --backend slurm
        "test": ["pytest", "ruff==0.17.5", "submitit"],
    },
)
