"""Config keys: clean names, the official aliases, and coexistence with a user's extend_cfg."""
import pytest
from yacs.config import CfgNode as CN

pytestmark = pytest.mark.dassl


def fresh():
    from dassl.config import get_cfg_default

    from dept.core.config import add_dept_config

    return add_dept_config(get_cfg_default())


def test_defaults_match_the_official_code():
    from dept.core.config import dept_options

    cfg = fresh()
    opts = dept_options(cfg)
    assert (opts.weight, opts.fusion, opts.head, opts.cwt) == (0.7, "logits", "linear", True)
    assert (opts.staged_lr, opts.lr_mult, opts.base_lr_mult) == (True, 6.5, 1.0)
    assert opts.new_layers == ("linear_probe", "film")
    # what trains is each method's own (its prefixes, plus the head with DePT) unless set
    assert opts.names_to_update == ()
    assert cfg.TRAINER.NAMES_TO_UPDATE == ["prompt_learner", "linear_probe", "film"]  # the official default
    from dassl.engine import TRAINER_REGISTRY

    assert TRAINER_REGISTRY.get("CoOpDePT").trainable == ("prompt_learner.", "dept_head.")
    assert cfg.TRAINER.COOP.N_CTX == 16 and cfg.TRAINER.COOP.PREC == "fp16"
    assert cfg.DATASET.SUBSAMPLE_CLASSES == "all"


def test_official_keys_from_yaml_and_command_line_still_work(tmp_path):
    from dept.core.config import dept_options

    cfg = fresh()
    yaml = tmp_path / "official.yaml"
    yaml.write_text("TRAINER:\n  LINEAR_PROBE:\n    WEIGHT: 0.5\n    TEST_TIME_FUSION: False\n")
    cfg.merge_from_file(str(yaml))
    cfg.merge_from_list(["OPTIM.LR_EXP", 3.0, "TRAINER.FILM.LINEAR_PROBE", False,
                         "OPTIM.NEW_LAYERS", "['linear_probe']", "OPTIM.BASE_LR_MULT", 0.5])
    opts = dept_options(cfg)
    assert (opts.weight, opts.fusion, opts.lr_mult, opts.cwt) == (0.5, "cat", 3.0, False)
    assert opts.new_layers == ("linear_probe",) and opts.base_lr_mult == 0.5


def test_clean_keys_win_when_only_they_are_set():
    from dept.core.config import dept_options

    cfg = fresh()
    cfg.merge_from_list(["DEPT.WEIGHT", 0.3, "DEPT.FUSION", "probs"])
    opts = dept_options(cfg)
    assert (opts.weight, opts.fusion) == (0.3, "probs")


def test_conflicting_spellings_are_an_error():
    from dept.core.config import dept_options

    cfg = fresh()
    cfg.merge_from_list(["DEPT.WEIGHT", 0.3, "TRAINER.LINEAR_PROBE.WEIGHT", 0.5])
    with pytest.raises(ValueError, match="disagree"):
        dept_options(cfg)


def test_bad_fusion_value_is_an_error():
    from dept.core.config import dept_options

    cfg = fresh()
    cfg.DEPT.FUSION = "mean"
    with pytest.raises(ValueError, match="FUSION"):
        dept_options(cfg)


def test_a_users_extend_cfg_keeps_its_values():
    """add_dept_config after the official extend_cfg adds what is missing, overrides nothing."""
    from dassl.config import get_cfg_default

    from dept.core.config import add_dept_config, dept_options

    cfg = get_cfg_default()
    cfg.TRAINER.COOP = CN()
    cfg.TRAINER.COOP.N_CTX = 4
    cfg.TRAINER.COOP.PREC = "amp"
    cfg.TRAINER.LINEAR_PROBE = CN({"TYPE": "linear", "WEIGHT": 0.6, "TEST_TIME_FUSION": True})
    cfg.OPTIM.STAGED_LR = True
    add_dept_config(cfg)
    assert cfg.TRAINER.COOP.N_CTX == 4 and cfg.TRAINER.COOP.PREC == "amp"
    assert cfg.TRAINER.COOP.CTX_INIT == "" and cfg.TRAINER.COOP.CLASS_TOKEN_POSITION == "end"
    assert dept_options(cfg).weight == 0.6


def test_yaml_configs_inherit_through_base(tmp_path):
    from dept.run.train import build_parser, setup_cfg

    (tmp_path / "base.yaml").write_text("OPTIM:\n  LR: 0.5\n  MAX_EPOCH: 3\nINPUT:\n  SIZE: (32, 32)\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "child.yaml").write_text("_BASE_: ../base.yaml\nOPTIM:\n  MAX_EPOCH: 7\n")
    cfg = setup_cfg(build_parser().parse_args(["--config-file", str(tmp_path / "sub" / "child.yaml")]))
    assert (cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH, cfg.INPUT.SIZE) == (0.5, 7, (32, 32))
    (tmp_path / "loop.yaml").write_text("_BASE_: loop.yaml\n")
    with pytest.raises(ValueError, match="inherits from itself"):
        setup_cfg(build_parser().parse_args(["--config-file", str(tmp_path / "loop.yaml")]))
    (tmp_path / "orphan.yaml").write_text("_BASE_: missing.yaml\n")
    with pytest.raises(FileNotFoundError, match="named by _BASE_ in"):
        setup_cfg(build_parser().parse_args(["--config-file", str(tmp_path / "orphan.yaml")]))


def test_an_integer_where_the_default_is_a_float_is_accepted(tmp_path):
    """The original PromptSRC yaml writes GPA_MEAN: 15 (an int) where the default is 15.0; yacs alone refuses."""
    from dept.run.train import build_parser, setup_cfg

    (tmp_path / "p.yaml").write_text("TRAINER:\n  PROMPTSRC:\n    GPA_MEAN: 6\n    TEXT_LOSS_WEIGHT: 25\n")
    cfg = setup_cfg(build_parser().parse_args(["--config-file", str(tmp_path / "p.yaml"),
                                               "TRAINER.PROMPTSRC.GPA_STD", "10", "DEPT.WEIGHT", "1"]))
    assert (cfg.TRAINER.PROMPTSRC.GPA_MEAN, cfg.TRAINER.PROMPTSRC.TEXT_LOSS_WEIGHT) == (6.0, 25.0)
    assert cfg.TRAINER.PROMPTSRC.GPA_STD == 10.0 and cfg.DEPT.WEIGHT == 1.0
    assert isinstance(cfg.OPTIM.MAX_EPOCH, int)
