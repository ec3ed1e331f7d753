"""Which settings make a run what it is (``dept.core.settings``): a method added since a run, or the
official DePT spellings, change no earlier run; a record holds each setting once."""
import json
import os
import types

import pytest
from conftest import DATA
from records import CFG, config_of, key

from dept.core.build_config import CONFIGS_DIR, build_config
from dept.core.settings import differences, recorded_config, settings
from dept.results.collect import FolderExpectation
from dept.store.layout import Layout

pytestmark = pytest.mark.dassl

RECORDS_010 = os.path.join(DATA, "records_0.1.0")
ALIASES = ("TRAINER.LINEAR_PROBE.WEIGHT", "TRAINER.LINEAR_PROBE.TYPE", "TRAINER.LINEAR_PROBE.TEST_TIME_FUSION",
           "TRAINER.FILM.LINEAR_PROBE", "OPTIM.STAGED_LR", "OPTIM.LR_EXP", "OPTIM.BASE_LR_MULT", "OPTIM.NEW_LAYERS",
           "TRAINER.NAMES_TO_UPDATE")


def records_010():
    runs, strays = Layout(RECORDS_010).scan()
    assert len(runs) == 13 and not strays
    for k, path in runs:
        with open(os.path.join(path, "dept_run.json")) as f:
            yield k, json.load(f)


def test_records_written_by_dept_010_still_verify_as_the_runner_checks_them():
    """The runner's own expectation (every setting it runs with, the demo's CLIP file included) of
    each run of the 0.1.0 demo grid equals what 0.1.0 recorded, though those records hold every
    method's node and both spellings of the official keys."""
    from dept.run.cli import parse_args
    from dept.run.plan import Planner
    from dept.store.protocols import PROTOCOLS

    for k, record in records_010():
        argv = record["argv"]
        protocol = {"train_base": "base2new", "test_new": "base2new", "eval": "cross_dataset",
                    "train": "few_shot" if k.shots == 1 else "cross_dataset"}[k.stage]
        args = parse_args(["--root", argv[argv.index("--root") + 1], "--output", "/tmp/v1_out", "--trainers",
                           k.trainer, "--config", k.cfg_name, "--seeds", str(k.seed), "--shots", str(k.shots),
                           "--datasets", k.dataset], PROTOCOLS[protocol])
        if protocol == "cross_dataset":
            args.source = "digits"
        planner = Planner(args, PROTOCOLS[protocol], ["MODEL.BACKBONE.PATH", "/tmp/v1_out/demo/tiny_clip.pt"])
        planner.cell(k.trainer, k.shots)
        assert planner.expectation(k).differences(record["config"]) == [], k


def test_records_written_by_dept_010_verify_as_the_report_checks_them():
    expect = FolderExpectation(CONFIGS_DIR)
    for k, record in records_010():
        assert expect(k, record).differences(record["config"]) == [], k


def test_a_method_added_since_a_run_changes_none_of_its_settings(tmp_path):
    """A new method's node is in every config from now on; it is no setting of the runs of others."""
    from dept.core.config import add_missing
    from dept.core.methods import _METHODS, _TRAINERS, Method, register_method
    from dept.core.mixin import DePTMixin
    from dept.core.trainer import PromptTrainer

    record = config_of(key("train_base", "dtd"), "/out")
    before = build_config(os.path.join(CONFIGS_DIR, "trainers", "CoOp", f"{CFG}.yaml"),
                          os.path.join(CONFIGS_DIR, "datasets", "dtd.yaml"), flags=["TRAINER.NAME", "CoOp"])

    def keys(cfg):
        from yacs.config import CfgNode

        add_missing(cfg.TRAINER, {"NEWMETHOD": CfgNode({"N_CTX": 3, "PREC": "fp32"})})

    new = types.new_class("NewMethod", (PromptTrainer,))
    new_dept = types.new_class("NewMethodDePT", (DePTMixin, new))
    try:
        register_method(Method("NewMethod", configs={"base2new": CFG}, node="NEWMETHOD", keys=keys), new, new_dept)
        from dept.core import settings as settings_module

        settings_module._defaults.cache_clear()
        after = build_config(os.path.join(CONFIGS_DIR, "trainers", "CoOp", f"{CFG}.yaml"),
                             os.path.join(CONFIGS_DIR, "datasets", "dtd.yaml"), flags=["TRAINER.NAME", "CoOp"])
        assert "NEWMETHOD" in after.TRAINER and "NEWMETHOD" not in before.TRAINER
        assert differences(record, after, "CoOp") == differences(record, before, "CoOp")
        assert not [k for k in settings(after, "CoOp") if k.startswith("TRAINER.NEWMETHOD.")]
        assert [k for k in settings(after, "NewMethod") if k.startswith("TRAINER.NEWMETHOD.")]
        assert not [k for k in settings(after, "NewMethod") if k.startswith("TRAINER.MAPLE.")]
    finally:
        from dassl.engine import TRAINER_REGISTRY

        _METHODS.pop("NewMethod", None)
        for name in ("NewMethod", "NewMethodDePT"):
            _TRAINERS.pop(name, None)
            TRAINER_REGISTRY._obj_map.pop(name, None)
        settings_module._defaults.cache_clear()


def test_a_key_added_since_a_record_counts_as_its_default():
    record = config_of(key("train_base", "dtd"), "/out").replace("  TEXT_ENCODING: auto\n", "")
    assert "TEXT_ENCODING" not in record
    current = build_config(os.path.join(CONFIGS_DIR, "trainers", "CoOp", f"{CFG}.yaml"),
                           os.path.join(CONFIGS_DIR, "datasets", "dtd.yaml"), flags=["TRAINER.NAME", "CoOp"],
                           opts=["SEED", "1", "DATASET.NUM_SHOTS", "16", "DATASET.SUBSAMPLE_CLASSES", "base"])
    assert differences(record, current, "CoOp") == []
    current.defrost()
    current.DEPT.TEXT_ENCODING = "full"
    assert differences(record, current, "CoOp") == [("DEPT.TEXT_ENCODING", "auto", "full")]


def test_a_record_holds_each_setting_once_under_the_key_that_applied():
    cfg = build_config(os.path.join(CONFIGS_DIR, "trainers", "CoOpDePT", f"{CFG}.yaml"),
                       os.path.join(CONFIGS_DIR, "datasets", "dtd.yaml"), flags=["TRAINER.NAME", "CoOpDePT"],
                       opts=["TRAINER.LINEAR_PROBE.WEIGHT", "0.5"])
    assert cfg.OPTIM.STAGED_LR is False and cfg.DEPT.STAGED_LR is True  # both in the live config
    recorded = settings(recorded_config(cfg))
    assert recorded["DEPT.WEIGHT"] == 0.5 and recorded["DEPT.STAGED_LR"] is True
    assert not [k for k in recorded if k in ALIASES or k.startswith(("TRAINER.LINEAR_PROBE", "TRAINER.FILM"))]
    # a trainer that is not one of our methods builds its optimizer with Dassl's, which reads these
    cfg.defrost()
    cfg.TRAINER.NAME = "SomeonesTrainer"
    kept = settings(recorded_config(cfg))
    assert kept["OPTIM.STAGED_LR"] is False and "TRAINER.LINEAR_PROBE.WEIGHT" not in kept


def test_a_key_missing_on_either_side_counts_as_its_default_both_ways():
    """Two records, one written before a key existed: they agree whichever is compared with which."""
    new = config_of(key("train_base", "dtd"), "/out")
    old = new.replace("  TEXT_ENCODING: auto\n", "")
    assert differences(old, new, "CoOp") == differences(new, old, "CoOp") == []


def test_the_node_of_a_method_that_is_not_loaded_is_no_setting_of_ours():
    """Runs recorded while a plugin method was loaded hold its node; without it they still verify."""
    record = config_of(key("train_base", "dtd"), "/out").replace(
        "TRAINER:\n", "TRAINER:\n  TWOCTX:\n    N_CTX: 2\n    PREC: fp16\n")
    assert "TWOCTX" in record
    expect = FolderExpectation(CONFIGS_DIR)(key("train_base", "dtd"), None)
    assert expect.differences(record) == []
    assert differences(record, config_of(key("train_base", "dtd"), "/out"), "CoOp") == []
