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

#: name -> the rest of what its released weights build (``clip.model.build_model``), beside its family
#: and input size in ``BACKBONES``: a ViT's (width, layers, patch), a ResNet's (blocks per stage, width).
#: A local file is identified by it, so that a file of one released CLIP never runs under another's
#: name (and in that name's folders)
ARCHITECTURES = {
    "RN50": ((3, 4, 6, 3), 64), "RN101": ((3, 4, 23, 3), 64), "RN50x4": ((4, 6, 10, 6), 80),
    "RN50x16": ((6, 8, 18, 8), 96), "RN50x64": ((3, 15, 36, 10), 128), "ViT-B/32": (768, 12, 32),
    "ViT-B/16": (768, 12, 16), "ViT-L/14": (1024, 24, 14), "ViT-L/14@336px": (1024, 24, 14),
}


def backbone_config(cfg_name, backbone, configs_dir, trainer):
    """The trainer's config for ``backbone`` beside the config ``cfg_name`` of another ViT: the file of
    the same name with the backbone's prefix, where there is one, so that a grid run with
    ``--backbone`` lands in the folders a per-backbone ``--config`` gives (and reuses their runs);
    else ``cfg_name`` itself, the backbone then set by ``backbone_options``."""
    prefix = CONFIG_PREFIX.get(backbone)
    current = next((p for p in sorted(CONFIG_PREFIX.values(), key=len, reverse=True)
                    if cfg_name == p or cfg_name.startswith(p + "_")), None)
    if not prefix or current is None:
        return cfg_name
    name = prefix + cfg_name[len(current):]
    return name if os.path.isfile(os.path.join(configs_dir, "trainers", trainer, f"{name}.yaml")) else cfg_name


def backbone_options(backbone):
    """The config options that put a run on ``backbone``: its name, and its input size, without which
    the tower's positional embedding or attention pool would not fit the images (``check_config``)."""
    size = BACKBONES[backbone][1]
    return ["MODEL.BACKBONE.NAME", backbone, "INPUT.SIZE", f"({size}, {size})"]


def released_backbone(clip_model):
    """The released CLIP whose architecture ``clip_model`` has (``ARCHITECTURES``), or None (a model of
    one's own, the tests' tiny ones)."""
    visual = clip_model.visual
    if is_vit(visual):
        found = ("vit", int(visual.input_resolution),
                 (vision_width(visual), len(visual.transformer.resblocks), int(visual.conv1.weight.shape[-1])))
    else:
        stages = tuple(len(getattr(visual, f"layer{i}", ())) for i in range(1, 5))
        found = ("resnet", int(visual.input_resolution), (stages, vision_width(visual)))
    return next((name for name, shape in ARCHITECTURES.items() if (*BACKBONES[name], shape) == found), None)


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
    from what the loaded tower is, and, for a file with a released CLIP's architecture, that it is the
    one named (the name decides the run's config and folder)."""
    visual, name, trainer = clip_model.visual, cfg.MODEL.BACKBONE.NAME, cfg.TRAINER.NAME
    loaded = released_backbone(clip_model)
    if name in BACKBONES and loaded is not None and loaded != name:
        source = cfg.MODEL.BACKBONE.get("PATH", "") or os.environ.get("DEPT_CLIP_PATH", "")
        raise BackboneError(
            f"MODEL.BACKBONE.NAME is {name}, but the CLIP loaded ({source or 'by that name'}) is a {loaded}: its runs "
            f"would be filed and reported as {name}'s. Point MODEL.BACKBONE.PATH (or $DEPT_CLIP_PATH) at a {name} "
            f"file, or leave both empty to load {name} by name (MODEL.BACKBONE.CACHE_DIR: a folder of the clip "
            f"package's files), or run {loaded} (MODEL.BACKBONE.NAME {loaded}, its config, or --backbone {loaded})")
    method = _method(trainer) if trainer else None
    if method is not None and method.uses_visual_prompts(cfg.TRAINER.get(method.node)) and not is_vit(visual):
        raise _refuse_resnet(trainer, name, describe(visual))
    resolution = int(visual.input_resolution)
    if tuple(cfg.INPUT.SIZE) != (resolution, resolution):
        raise _size_error(cfg.INPUT.SIZE, name, resolution, f"the loaded {'ViT' if is_vit(visual) else 'ResNet'}'s "
                          f"{'positional embedding' if is_vit(visual) else 'attention pool'} is sized for it")
