"""The output root's layout: one object turns a run's key into its folder and a folder into its key."""
import pytest

from dept.store.layout import Layout, RunKey, split_variant, variant_name

KEYS = [
    RunKey("train_base", "dtd", "CoOpDePT", "vit_b16_ep10_bs4_lr35+DEPT.WEIGHT=0.2", 16, 1),
    RunKey("test_new", "eurosat", "CoOp", "vit_b16_ep10_bs4_lr35", 2, 3),
    RunKey("train", "imagenet", "PromptSRC", "vit_b16_c2_ep20_batch4_4+4ctx", 16, 2),
    RunKey("train", "dtd", "CoOp", "vit_b16", 1, 0),
    RunKey("eval", "imagenet_r", "MaPLeDePT", "vit_b16_c2_ep5_batch4_2ctx_cross_datasets", 16, 1, "imagenet"),
    RunKey("eval", "digits_inverted", "CoOpDePT", "demo_tiny+OPTIM.MAX_EPOCH=1", 16, 1, "digits"),
]


@pytest.mark.parametrize("key", KEYS, ids=lambda k: k.stage + "-" + k.dataset)
def test_a_key_and_its_folder_are_each_others_inverse(tmp_path, key):
    layout = Layout(str(tmp_path))
    path = layout.path(key)
    assert path.startswith(str(tmp_path)) and layout.key(path) == key and layout.key(layout.relative(key)) == key


def test_the_folders_are_the_official_scripts(tmp_path):
    rel = [Layout(str(tmp_path)).relative(k) for k in KEYS]
    assert rel == [
        "base2new/train_base/dtd/shots_16/CoOpDePT/vit_b16_ep10_bs4_lr35+DEPT.WEIGHT=0.2/seed1",
        "base2new/test_new/eurosat/shots_2/CoOp/vit_b16_ep10_bs4_lr35/seed3",
        "imagenet/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_16shots/seed2",
        "dtd/CoOp/vit_b16_1shots/seed0",
        "evaluation/MaPLeDePT/vit_b16_c2_ep5_batch4_2ctx_cross_datasets_16shots/imagenet_r/seed1",
        "evaluation/CoOpDePT/demo_tiny+OPTIM.MAX_EPOCH=1_16shots/from_digits/digits_inverted/seed1",
    ]


@pytest.mark.parametrize("folder", [
    "base2new/results/x_16shots/seed1",  # the runner's tables
    "evaluation/CoOp/v_16shots/seed1",  # no target
    "evaluation/CoOp/v_16shots/from_imagenet/dtd/seed1",  # ImageNet's evaluations are one level up
    "demo/CoOp/demo_tiny_16shots/seed1", "slurm/CoOp/x_16shots/seed1", "report/a/b_1shots/seed1",
    "dtd/CoOp/v_16shots", "dtd/CoOp/v_16shots/seed1/prompt_learner", "base2new/train_base/dtd/CoOp/v/seed1",
    "dtd/CoOp/v/seed1", "dtd/CoOp/v_16shots/seedX",
])
def test_other_folders_are_no_runs(tmp_path, folder):
    assert Layout(str(tmp_path)).key(folder) is None


def test_scan_finds_runs_and_names_records_outside_the_layout(tmp_path):
    from dept.store.record import write_record

    layout = Layout(str(tmp_path))
    for k in KEYS:
        write_record(layout.path(k), {"status": "finished"})
    write_record(str(tmp_path / "misc" / "x"), {"status": "finished"})
    write_record(str(tmp_path / "demo" / "CoOp" / "d_16shots" / "seed1"), {"status": "finished"})
    runs, strays = layout.scan()
    assert sorted(k for k, _ in runs) == sorted(KEYS) and strays == ["misc/x"]


def test_variant_names_show_their_options_and_split_back():
    name = variant_name("vit_b16_c2_ep20_batch4_4+4ctx", [("OPTIM.MAX_EPOCH", 5), ("DEPT.WEIGHT", 0.2)])
    assert name == "vit_b16_c2_ep20_batch4_4+4ctx+DEPT.WEIGHT=0.2+OPTIM.MAX_EPOCH=5"
    assert split_variant(name) == ("vit_b16_c2_ep20_batch4_4+4ctx", "+DEPT.WEIGHT=0.2+OPTIM.MAX_EPOCH=5")
    assert split_variant("vit_b16_c2_ep20_batch4_4+4ctx") == ("vit_b16_c2_ep20_batch4_4+4ctx", "")
    long_name = variant_name("cfg", [(f"TRAINER.KEY_{i}", i) for i in range(20)])
    assert len(long_name) <= 100 and split_variant(long_name)[0] == "cfg"
