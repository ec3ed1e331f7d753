"""Each method trains exactly the official number of parameters at ViT-B/16 size.

The counts are the original implementations' (Koorye/DePT, the MaPLe and PromptSRC repositories;
official_code_notes.md 1.8, 2.5-2.9): CoOp 16×512 context; CoCoOp 4×512 context + meta-net
512→32→512; KgCoOp 4×512; MaPLe 3,555,072 at depth 9 with 2 context tokens; IVLP 2+2 context at
depth 12; VPT 8 tokens × 768 × 12 layers = 73,728; PromptSRC 4+4 at depth 9 = 46,080; CLIP-Adapter
512→128→512 without biases; with DePT, + cwT (2·2·512) + head (512·C + C). Built on a CLIP of
ViT-B/16's shape with random weights (the counts do not depend on the weights).
"""
import os

import pytest
from conftest import REPO

pytestmark = pytest.mark.dassl

VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8, transformer_layers=12)
CLASSES = [f"class {i}" for i in range(5)]  # few classes: the frozen text features some methods precompute are costly
HEAD = 2 * 2 * 512 + 512 * len(CLASSES) + len(CLASSES)
OFFICIAL = {
    "CoOp": 16 * 512,
    "CoCoOp": 4 * 512 + (512 * 32 + 32) + (32 * 512 + 512),
    "KgCoOp": 4 * 512,
    "MaPLe": 3_555_072,
    "IVLP": 2 * 512 + 11 * 2 * 512 + 2 * 768 + 11 * 2 * 768,
    "VPT": 73_728,
    "PromptSRC": 46_080,
    "CLIP-Adapter": 512 * 128 + 128 * 512,
    "ZeroshotCLIP": 0,
    "ZeroshotCLIP2": 0,
}


@pytest.fixture(scope="module")
def vit_b16():
    import torch
    from clip.model import CLIP

    torch.manual_seed(0)
    return CLIP(**VIT_B16).float().eval()


def _trainers():
    try:
        from dept.core.methods import trainers as dept_trainers
    except ModuleNotFoundError:
        return ["CoOp"]
    return list(dept_trainers())


@pytest.mark.parametrize("trainer", _trainers())  # every registered trainer: a new one needs its official count
def test_trainable_parameters_are_the_official_count(trainer, vit_b16, tmp_path):
    from dept.core.config import dept_options
    from dept.core.head import DePTHead
    from dept.core.methods import trainers as dept_trainers
    from dept.core.mixin import DePTMixin
    from dept.run.train import build_parser, setup_cfg

    cls = dept_trainers()[trainer]
    cfg = setup_cfg(build_parser().parse_args(
        ["--config-file", os.path.join(REPO, "configs", "trainers", trainer, f"{cls.method.config()}.yaml")]))
    method_cfg = cfg.TRAINER[cls.method.node]
    kwargs = {"template": "a photo of a {}."} if trainer.startswith("KgCoOp") else {}
    if trainer.startswith(("CLIPAdapter", "Zeroshot")):
        kwargs = {"templates": ("a photo of a {}.",)}
    model = cls.model_cls(vit_b16, CLASSES, method_cfg, **kwargs)
    if issubclass(cls, DePTMixin):
        model.dept_head = DePTHead.from_options(model.embed_dim, CLASSES, dept_options(cfg))
    count = sum(p.numel() for name, p in model.named_parameters() if name.startswith(cls.trainable))
    # and nothing else the model holds is new: every other parameter is one of the frozen CLIP's
    clip_params = {id(p) for p in vit_b16.parameters()}
    assert all(id(p) in clip_params for name, p in model.named_parameters() if not name.startswith(cls.trainable))
    expected = OFFICIAL[cls.method.paper_name] + (HEAD if issubclass(cls, DePTMixin) else 0)
    assert count == expected
