"""Every CLIP backbone family: each registered trainer on tiny random CLIPs of each, through the real Dassl.

The released CLIPs come in two image towers (``clip.model.ModifiedResNet``: RN50 ... RN50x64;
``VisionTransformer``: ViT-B/32 ... ViT-L/14@336px) at several widths and input resolutions. The
tiny CLIPs here have the same classes at sizes a CPU trains in a moment: a ResNet tower, and a ViT
with another patch size and resolution under a text tower wider than itself, each with its own
embedding size, so that a width read from the wrong place fails. The trainers come from the
registry (``dept.core.methods.trainers``): a new method is checked here by registering.
"""
import glob
import os

import pytest
import torch
from conftest import REPO, make_dtd
from test_methods import TRAINERS, build, is_dept, trainer_class

pytestmark = pytest.mark.dassl

# name -> tiny_clip overrides; each has its own embedding width D (the DePT head's) and a text tower
# of another width than its image tower (16 and 64; 128 and 64); the ViT's patches and input
# resolution are not the default tiny CLIP's (16 and 32). Two CLIPs, not one per property: the
# parametrized test builds every trainer on each, and this keeps it near a minute.
FAMILIES = {
    "resnet": dict(embed_dim=48, image_resolution=64, vision_layers=(1, 1, 1, 1), vision_width=16,
                   vision_patch_size=None),
    "vit_patch8_wide_text": dict(embed_dim=40, image_resolution=48, vision_patch_size=8, transformer_width=128,
                                 transformer_heads=2),
}


def _visual(name):
    return bool(trainer_class(name).method.visual_prompts)  # IVLP, PromptSRC: their configs here prompt vision


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    from dept.core.testing import save_tiny_clip

    base = tmp_path_factory.mktemp("backbones")
    files = {family: save_tiny_clip(str(base / f"{family}.pt"), seed=3, **kw) for family, kw in FAMILIES.items()}
    return make_dtd(str(base / "data")), files


def _build(trainer, clips, family, out, subsample="base"):
    root, files = clips
    size = FAMILIES[family].get("image_resolution", 32)
    return build(trainer, (root, files[family]), out, subsample, "INPUT.SIZE", f"({size}, {size})")


def test_each_tiny_clip_is_rebuilt_from_its_file_as_runs_load_it(clips):
    """Runs load CLIP from a file (MODEL.BACKBONE.PATH) through clip.model.build_model: each tiny
    CLIP must come back with the same architecture and the same outputs."""
    from clip.model import convert_weights
    from dassl.config import get_cfg_default

    from dept.core.backbones import is_vit, vision_width
    from dept.core.clip_loader import clip_summary, load_clip_file
    from dept.core.config import add_dept_config
    from dept.core.testing import tiny_clip

    _, files = clips
    cfg = add_dept_config(get_cfg_default())
    for family, overrides in FAMILIES.items():
        original, loaded = tiny_clip(3, **overrides), load_clip_file(files[family]).float()
        convert_weights(original)  # build_model stores CLIP's weights in fp16, as released: the same rounding
        original.float()
        size = overrides.get("image_resolution", 32)
        images, text = torch.randn(2, 3, size, size), torch.randint(1, 400, (3, 77))
        with torch.no_grad():
            torch.testing.assert_close(loaded.encode_image(images), original.encode_image(images))
            torch.testing.assert_close(loaded.encode_text(text), original.encode_text(text))
        arch = clip_summary(cfg, loaded)["arch"]
        assert is_vit(loaded.visual) == (family != "resnet")
        assert arch["embed_dim"] == overrides["embed_dim"]
        assert arch["vision_width"] == vision_width(loaded.visual) == overrides.get("vision_width", 64)
        assert arch["image_resolution"] == size
        assert arch["transformer_width"] == overrides.get("transformer_width", 64)
    resnet = clip_summary(cfg, load_clip_file(files["resnet"]))["arch"]
    assert (resnet["vision_layers"], resnet["vision_patch_size"]) == ("1-1-1-1", None)


CASES = [(trainer, family) for trainer in TRAINERS for family in FAMILIES]


@pytest.mark.parametrize("trainer,family", CASES)
def test_trainer_trains_and_evaluates_on_each_backbone(trainer, family, clips, tmp_path):
    from dept.core.backbones import BackboneError

    if family == "resnet" and _visual(trainer):
        with pytest.raises(BackboneError, match=rf"^{trainer} puts learned prompts into the image encoder.*a ResNet"
                                                r".*Use a ViT backbone.*or a method that prompts the text side only"):
            _build(trainer, clips, family, tmp_path)
        return
    t = _build(trainer, clips, family, tmp_path / "a")
    dim = FAMILIES[family]["embed_dim"]
    assert t.model.embed_dim == dim
    if is_dept(trainer):  # the head is sized from the backbone's embedding, for its classes
        assert tuple(t.model.dept_head.linear_probe.weight.shape) == (t.num_classes, dim)
        assert t.model.dept_head.film_img.scale.shape == t.model.dept_head.film_text.scale.shape == (dim,)
    frozen = {n: b.clone() for n, b in t.model.image_encoder.named_buffers()}
    if trainer_class(trainer).method.trained:
        t.set_model_mode("train")
        t.num_batches, t.batch_idx = 2, 0
        summary = t.forward_backward(next(iter(t.train_loader_x)))
        assert torch.isfinite(torch.tensor(summary["loss"]))
        # a ResNet's BatchNorm statistics are frozen CLIP weights: a training step must not move them
        assert all(torch.equal(b, frozen[n]) for n, b in t.model.image_encoder.named_buffers())
        t.save_model(0, str(tmp_path / "a"))
    accuracy = t.test()
    assert 0 <= accuracy <= 100 and t.head_mode == ("fused (logits)" if is_dept(trainer) else None)
    if is_dept(trainer):  # new classes: the checkpoint's head is not used, ITM alone
        new = _build(trainer, clips, family, tmp_path / "new", "new")
        new.load_model(str(tmp_path / "a"))
        new.test()
        assert new.head_mode == "itm" and new.test_result["split"] == "test"


def test_a_resnet_refusal_comes_at_config_build_for_a_named_backbone():
    """The runner builds every config before it runs anything: a visual-prompt method on a named ResNet
    fails there, with every method whose record says so; a text-side method and IVLP's language-only
    config build."""
    from dept.core.backbones import BackboneError
    from dept.core.build_config import build_config

    for name, cls in _registered().items():
        config = os.path.join(REPO, "configs", "trainers", name, f"{cls.method.config()}.yaml")
        if _visual(name):
            with pytest.raises(BackboneError, match=rf"^{name} puts .* RN101 is a ResNet.*configs/trainers/{name}/"):
                build_config(config, opts=["MODEL.BACKBONE.NAME", "RN101"])
        else:
            assert build_config(config, opts=["MODEL.BACKBONE.NAME", "RN101"]).MODEL.BACKBONE.NAME == "RN101"
    ivlp = os.path.join(REPO, "configs", "trainers", "IVLP", "vit_b16_c2_ep5_batch4_4ctx_language_only.yaml")
    assert build_config(ivlp, opts=["MODEL.BACKBONE.NAME", "RN50"]).TRAINER.IVLP.PROMPT_DEPTH_VISION == 0
    with pytest.raises(BackboneError, match=r"RN50 is a ResNet"):
        build_config(ivlp, opts=["MODEL.BACKBONE.NAME", "RN50", "TRAINER.IVLP.PROMPT_DEPTH_VISION", "1",
                                 "TRAINER.IVLP.N_CTX_VISION", "2"])


def _registered():
    from dept.core.methods import trainers

    return trainers()


def test_input_size_must_be_the_backbones_resolution(clips, tmp_path):
    """At config build for a named backbone, and at model build from the file's tower, before any
    compute: both sizes named, and the fix."""
    from dept.core.backbones import BACKBONES, BackboneError
    from dept.core.build_config import build_config

    config = os.path.join(REPO, "configs", "trainers", "CoOp", "vit_b16_ep10_bs4_lr35.yaml")
    for name, (_, resolution) in BACKBONES.items():
        opts = ["MODEL.BACKBONE.NAME", name, "INPUT.SIZE", f"({resolution}, {resolution})"]
        assert tuple(build_config(config, opts=opts).INPUT.SIZE) == (resolution, resolution)
        if resolution != 224:
            with pytest.raises(BackboneError, match=rf"INPUT.SIZE is \(224, 224\) but {name} takes "
                                                    rf"{resolution}×{resolution}.*set INPUT.SIZE \({resolution}, "
                                                    rf"{resolution}\), or use the config for that backbone"):
                build_config(config, opts=["MODEL.BACKBONE.NAME", name])
    root, files = clips
    for family in FAMILIES:
        size = FAMILIES[family]["image_resolution"]
        with pytest.raises(BackboneError, match=rf"INPUT.SIZE is \(32, 32\) but tiny-random takes {size}×{size}"):
            build("CoOp", (root, files[family]), tmp_path / family, "base", "INPUT.SIZE", "(32, 32)")


def test_each_trainers_backbone_configs_build_with_their_backbone():
    """Beside each trainer's ViT-B/16 base-to-new config: ViT-B/32, ViT-L/14 and ViT-L/14@336px ones
    (the same setting, another backbone), each built through the repo's config building."""
    from dept.core.backbones import BACKBONES, CONFIG_PREFIX, backbone_config
    from dept.core.build_config import build_config

    variants = {"vit_b32": ("ViT-B/32", 224), "vit_l14": ("ViT-L/14", 224), "vit_l14_336": ("ViT-L/14@336px", 336)}
    assert {CONFIG_PREFIX[backbone]: (backbone, size) for backbone, size in variants.values()} == variants
    built = 0
    for name, cls in _registered().items():
        b16 = cls.method.config()
        reference = build_config(os.path.join(REPO, "configs", "trainers", name, f"{b16}.yaml"))
        for prefix, (backbone, size) in variants.items():
            config = backbone_config(b16, backbone, os.path.join(REPO, "configs"), name)  # the runner's --backbone
            assert config == prefix + b16[len("vit_b16"):], (name, backbone)
            path = os.path.join(REPO, "configs", "trainers", name, f"{config}.yaml")
            cfg = build_config(path)
            assert (cfg.TRAINER.NAME, cfg.MODEL.BACKBONE.NAME, tuple(cfg.INPUT.SIZE)) == (name, backbone, (size, size))
            assert BACKBONES[backbone][1] == size
            # the setting is the ViT-B/16 one: batch, learning rate, epochs, the method's own node
            assert (cfg.DATALOADER.TRAIN_X.BATCH_SIZE, cfg.OPTIM.LR, cfg.OPTIM.MAX_EPOCH) == (
                reference.DATALOADER.TRAIN_X.BATCH_SIZE, reference.OPTIM.LR, reference.OPTIM.MAX_EPOCH)
            assert cfg.TRAINER[cls.method.node] == reference.TRAINER[cls.method.node]
            with open(path) as f:
                assert "Ours" in f.readline() + f.readline()
            built += 1
    assert built == 3 * len(_registered())
    found = [path for prefix in ("vit_b32", "vit_l14") for path in
             glob.glob(os.path.join(REPO, "configs", "trainers", "*", f"{prefix}*.yaml"))]
    assert len(found) == built


def test_the_backbone_table_is_the_clip_packages():
    import clip

    assert set(__import__("dept.core.backbones", fromlist=["BACKBONES"]).BACKBONES) == set(clip.available_models())


def test_a_file_of_one_released_clip_never_runs_under_anothers_name():
    """The name decides a run's config and folder, and a local file ($DEPT_CLIP_PATH) decides what runs:
    a file with a released CLIP's architecture must be the one named. Models of one's own (the tiny
    ones) take any name, as before."""
    from clip.model import CLIP
    from dassl.config import get_cfg_default

    from dept.core.backbones import BackboneError, check_model, released_backbone
    from dept.core.config import add_dept_config
    from dept.core.testing import tiny_clip

    with torch.device("meta"):  # shapes only: nothing allocated
        # ViT-B/16 as the benchmark builds it, RN50 and ViT-L/14@336px as clip.model.build_model reads their files
        vit_b16 = CLIP(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
                       context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
                       transformer_layers=12)
        rn50 = CLIP(1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12)
        vit_l14_336 = CLIP(768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12)
    assert [released_backbone(m) for m in (vit_b16, rn50, vit_l14_336)] == ["ViT-B/16", "RN50", "ViT-L/14@336px"]
    assert released_backbone(tiny_clip()) is None

    def cfg(name, size=224):
        c = add_dept_config(get_cfg_default())
        c.TRAINER.NAME, c.MODEL.BACKBONE.NAME, c.INPUT.SIZE = "CoOp", name, (size, size)
        c.MODEL.BACKBONE.PATH = "/x/clip.pt"
        return c

    check_model(cfg("ViT-B/16"), vit_b16)
    check_model(cfg("ViT-L/14@336px", 336), vit_l14_336)
    with pytest.raises(BackboneError, match=r"MODEL.BACKBONE.NAME is ViT-B/32, but the CLIP loaded \(/x/clip.pt\) "
                                            r"is a ViT-B/16: its runs would be filed and reported as ViT-B/32's"):
        check_model(cfg("ViT-B/32"), vit_b16)
    with pytest.raises(BackboneError, match="is a RN50"):
        check_model(cfg("ViT-B/16"), rn50)
    tiny = tiny_clip()
    check_model(cfg("ViT-B/32", tiny.visual.input_resolution), tiny)  # a model of one's own: the name is its label
