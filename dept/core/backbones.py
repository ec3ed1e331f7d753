"""The CLIP backbones, and what a method needs of one, checked before any compute.

The clip package releases ResNets (RN50, RN101, RN50x4, RN50x16, RN50x64) and ViTs (ViT-B/32,
ViT-B/16, ViT-L/14, ViT-L/14@336px). Every text-side method runs on all of them; a method that puts
prompts into the image encoder's token sequence (its record's ``visual_prompts``) needs a ViT, since
a ResNet tower has no tokens. Each tower is also sized for one input resolution (a ViT's positional
embedding, a ResNet's attention pool), so ``INPUT.SIZE`` must be that resolution: otherwise the
model fails with a shape error deep in CLIP, or (a ResNet at a smaller size) runs on the wrong grid.

Both are checked twice: when a config is built for a backbone named without a file (the runner
builds every config before it runs anything, so a grid with one bad cell fails before the first
run), and when the model is built from the CLIP actually loaded (a local file says what it is).
"""
import os

#: name -> (family, the input resolution it was trained at): the clip package's released models
BACKBONES = {
    "RN50": ("resnet", 224), "RN101": ("resnet", 224), "RN50x4": ("resnet", 288), "RN50x16": ("resnet", 384),
    "RN50x64": ("resnet", 448), "ViT-B/32": ("vit", 224), "ViT-B/16": ("vit", 224), "ViT-L/14": ("vit", 224),
    "ViT-L/14@336px": ("vit", 336),
}


#: backbone -> the prefix of its config files (``configs/trainers/<trainer>/vit_b32_...yaml``): the
#: ViT-B/16 file's name with ``vit_b16`` replaced (the runner's ``--backbone`` picks them)
CONFIG_PREFIX = {"ViT-B/16": "vit_b16", "ViT-B/32": "vit_b32", "ViT-L/14": "vit_l14", "ViT-L/14@336px": "vit_l14_336"}


def backbone_config(cfg_name, backbone, configs_dir, trainer):
    """The trainer's config for ``backbone`` beside its ViT-B/16 config ``cfg_name``: the file of the
    same name with the backbone's prefix where there is one (the folder name a per-backbone
    ``--config`` gives), else ``cfg_name`` itself (the backbone then comes from the options)."""
    prefix = CONFIG_PREFIX.get(backbone)
    if not prefix or not cfg_name.startswith("vit_b16"):
        return cfg_name
    name = prefix + cfg_name[len("vit_b16"):]
    return name if os.path.isfile(os.path.join(configs_dir, "trainers", trainer, f"{name}.yaml")) else cfg_name


def backbone_options(backbone):
    """The config options that put a grid on ``backbone``: its name and its input size."""
    size = BACKBONES[backbone][1]
    return ["MODEL.BACKBONE.NAME", backbone, "INPUT.SIZE", f"({size}, {size})"]


class BackboneError(ValueError):
    """A method, a CLIP backbone and an input size that do not go together."""


def is_vit(visual):
    """Whether an image tower is a ViT (a token sequence visual prompts can join); the ResNet
    towers (``clip.model.ModifiedResNet``) have none."""
    return all(hasattr(visual, name) for name in ("conv1", "class_embedding", "transformer", "ln_pre"))


def vision_width(visual):
    """The tower's width as ``clip.model.build_model`` reads it: a ViT's token width; a ResNet's
    first stage (its stem's first convolution is half as wide)."""
    return int(visual.conv1.weight.shape[0] if is_vit(visual) else visual.layer1[0].conv1.weight.shape[0])


def describe(visual):
    return "a ViT" if is_vit(visual) else f"a ResNet ({type(visual).__name__}: no token sequence)"


def _method(trainer):
    from dept.core.methods import method_of

    return method_of(trainer)[0]


def _advice(trainer):
    from dept.core.methods import registered

    vits = ", ".join(name for name, (family, _) in BACKBONES.items() if family == "vit")
    text = ", ".join(m.name for m in registered().values() if not m.visual_prompts)
    return (f"Use a ViT backbone (MODEL.BACKBONE.NAME one of {vits}, with that backbone's config, e.g. "
            f"configs/trainers/{trainer}/vit_b32_*.yaml), or a method that prompts the text side only "
            f"({text}, or their DePT variants).")


def _refuse_resnet(trainer, backbone, what):
    return BackboneError(
        f"{trainer} puts learned prompts into the image encoder's token sequence, which only a ViT has; "
        f"the backbone {backbone} is {what}. {_advice(trainer)}")


def _size_error(size, backbone, resolution, where):
    return BackboneError(
        f"INPUT.SIZE is {tuple(size)} but {backbone or 'the CLIP file'} takes {resolution}×{resolution}-pixel images "
        f"({where}): set "
        f"INPUT.SIZE ({resolution}, {resolution}), or use the config for that backbone.")


def check_config(cfg):
    """At config build, for a backbone named without a file (MODEL.BACKBONE.PATH and $DEPT_CLIP_PATH
    empty: the name says what will be loaded): a visual-prompt method on a ResNet, and an INPUT.SIZE
    that is not the backbone's. A file is checked when the model is built (``check_model``)."""
    backbone = cfg.MODEL.BACKBONE
    known = BACKBONES.get(backbone.NAME)
    if known is None or backbone.get("PATH", "") or os.environ.get("DEPT_CLIP_PATH", ""):
        return
    family, resolution = known
    method = _method(cfg.TRAINER.NAME)
    if family == "resnet" and method is not None and method.uses_visual_prompts(cfg.TRAINER.get(method.node)):
        raise _refuse_resnet(cfg.TRAINER.NAME, backbone.NAME, "a ResNet (no token sequence)")
    if tuple(cfg.INPUT.SIZE) != (resolution, resolution):
        raise _size_error(cfg.INPUT.SIZE, backbone.NAME, resolution, "its positional embedding or attention pool "
                          "is sized for it")


def check_model(cfg, clip_model):
    """When the CLIP is loaded for ``cfg`` (a named backbone or any local file): the same two checks,
    from what the loaded tower is."""
    visual, name, trainer = clip_model.visual, cfg.MODEL.BACKBONE.NAME, cfg.TRAINER.NAME
    method = _method(trainer) if trainer else None
    if method is not None and method.uses_visual_prompts(cfg.TRAINER.get(method.node)) and not is_vit(visual):
        raise _refuse_resnet(trainer, name, describe(visual))
    resolution = int(visual.input_resolution)
    if tuple(cfg.INPUT.SIZE) != (resolution, resolution):
        raise _size_error(cfg.INPUT.SIZE, name, resolution, f"the loaded {'ViT' if is_vit(visual) else 'ResNet'}'s "
                          f"{'positional embedding' if is_vit(visual) else 'attention pool'} is sized for it")
