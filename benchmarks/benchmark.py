#!/usr/bin/env python3
"""Speed and memory of every method's training step and evaluation, ours beside the official code.

For each method (by default every method of the paper's table, with and without DePT) and each
number of classes, on one CLIP with random weights (ViT-B/16 shape; fp32 on CPU, fp16 with
``--device cuda``) and the method's own base-to-new config
(``configs/trainers/<trainer>/<its base-to-new config>.yaml``, from its method record), it reports:

* **s / step**: seconds per training step, the median of the timed steps after one warm-up step:
  the trainer's own ``forward_backward`` on a batch of ``--batch`` random images (image and text
  encoders, losses, backward, optimizer step), and also at the batch of the method's config where
  that differs (CoCoOp: 1);
* **peak MB**: peak memory of those steps over what the built trainer holds. On CPU each
  configuration runs in a fresh process, and this is the growth of the peak resident set size
  (``VmHWM``, reset after the build) over the resident size after the build: activations kept for
  backward, gradients, optimizer state, allocator slack. ``total`` is the process's peak RSS. On
  CUDA: ``torch.cuda.max_memory_allocated`` over what was allocated after the build;
* **floor s / step** (ours): the method's own image encoder alone on the same batch, forward, and
  backward where visual prompts train (``floors.py``); **× floor** is s / step over it: how far the
  step is from the part of it no implementation can avoid;
* **test img/s**: images per second of an evaluation of ``--test-images-per-class`` images per
  class in batches of ``--test-batch``: the measured time of the text encoding our evaluation does
  once (``cached_text_features``; none where the text depends on the image, CoCoOp) plus, per
  batch, the measured time of the trainer's own ``model_inference`` on one batch (``model_inference``
  of the official code encodes the text of every class for every batch). The **floor** is CLIP's
  stock image encoder alone on one batch. The test figures do not depend on the training batch, so
  they are measured once per method and number of classes.

Methods whose text depends on the image (CoCoOp) run at ``--conditional-classes`` (default 50):
their text is encoded for every image, and the official code at 500 classes would need about four
times the official CoOp's memory (batch 4, one 77 × C text graph per image).

The official code
-----------------
With ``--official-dir`` naming a local checkout of Koorye/DePT (never a dependency of this
project), the official trainer of each method (``trainers/coop.py:CoOp``,
``trainers/elp_coop.py:ExtrasLinearProbeCoOp``, ... , ``trainers/elp_maple.py:ExtrasLinearProbeMaPLe``)
is measured the same way, in its own process: its own ``build_model``, ``forward_backward`` and
``model_inference``, on a config made as its ``train.py`` makes one (Dassl defaults, its
``extend_cfg`` read from its source, its ``configs/trainers/<trainer>/<file>.yaml`` of the same
name), with ``DATASET.SUBSAMPLE_CLASSES = base`` (the DePT head is built and fused) and
``DATASET.NAME = ImageNet`` (KgCoOp's template "a photo of a {}."). Its code is imported from that
directory at run time, never copied. So that it runs here, the benchmark process (and only it;
every change is undone when the measurement ends) changes this:

* ``plotnine``, imported by its trainers and never used, is an empty stand-in module; its
  ``trainers`` package registers ``CoOp`` etc. in Dassl's registry, which is emptied for that
  import and restored after (ours keep their names);
* ``clip._download`` and ``clip_maple.clip._download`` (its loaders fetch CLIP by name) return the
  benchmark's file of random weights, the one our trainers load through ``MODEL.BACKBONE.PATH``;
  its loaders then run as they are (``torch.jit.load``, failing, then ``torch.load`` and its
  ``build_model``; KgCoOp loads a second CLIP this way for its frozen reference features);
* on CPU, ``torch.Tensor.cuda`` is the identity and ``torch.nn.Module.cuda`` casts to fp32 instead
  of moving (KgCoOp moves that second CLIP and its tokens to the GPU; the second CLIP stays in
  ``build_model``'s fp16 officially, which on CPU takes minutes at 500 classes);
* in fp32, ``torch.Tensor.half`` and ``torch.nn.Module.half`` are the identity (MaPLe calls
  ``.half()`` on its projection layer and on every prompt in every forward: an fp16 layer fed fp32
  prompts is an error, and fp16 prompts in an fp32 model would be rounded);
* Dassl's warm-up LR schedulers, which fail on torch >= 2.6, get dept's fix
  (``dept.util.dassl_compat.patch_dassl_schedulers``, the one any Dassl trainer needs here; not undone).

The original code
-----------------
DePT's official code has four of the paper's methods. The others are measured beside their
original public code, each named by ``--original-dir SOURCE=PATH`` (``ORIGINAL``, ``SOURCES``):
zero-shot CLIP (KaiyangZhou/CoOp ``trainers/zsclip.py``), IVLP and PromptSRC
(muzairkhattak/PromptSRC), VPT (muzairkhattak/multimodal-prompt-learning), CLIP-Adapter
(gaopengcuhk/CLIP-Adapter's ``clip_adapter.py``). Each runs as the official code does above, with
its own vendored ``clip`` package (their prompted encoders are built from ``design_details``) and
its own ``train.py:extend_cfg`` and config file; CLIP-Adapter, which has neither, gets Dassl's
defaults and our config less its ``TRAINER`` section. Besides the changes above: ``Tensor.to`` to
a CUDA device is the identity on CPU (CLIP-Adapter's ``prompts.to('cuda')``), and CLIP-Adapter's
``Adapter(1024, 4)`` (RN50's width, hard-coded) is made at the CLIP's width. Zero-shot CLIP
trains nothing: only its evaluation is measured. Their DePT variants have no original code.

Usage::

    python benchmarks/benchmark.py --classes 50 500 --official-dir /path/to/Koorye/DePT --out results.json
    python benchmarks/benchmark.py --methods ZeroshotCLIP IVLP IVLPDePT VPT VPTDePT PromptSRC PromptSRCDePT \
        CLIPAdapter CLIPAdapterDePT --original-dir coop=PATH --original-dir mpl=PATH \
        --original-dir promptsrc=PATH --original-dir clip_adapter=PATH --out results.json
    python benchmarks/benchmark.py --quick          # a tiny CLIP, seconds: checks that it runs
    python benchmarks/benchmark.py --report results.json   # print a saved run's report again
    python benchmarks/benchmark.py --figure benchmarks/results/speedups.png   # speed-ups and memory ratios
                                                               # of the saved runs (speedup_figure.py)
    python benchmarks/benchmark.py feature-cache --images 50   # evaluations with and without the shared
                                                               # image features (feature_cache_benchmark.py)
"""
import argparse
import ast
import contextlib
import gc
import importlib
import importlib.util
import json
import logging
import math
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import types

import torch

logger = logging.getLogger("benchmark")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "configs", "trainers")
METHODS = ("CoOp", "CoOpDePT", "CoCoOp", "CoCoOpDePT", "KgCoOp", "KgCoOpDePT", "MaPLe", "MaPLeDePT",
           "ZeroshotCLIP", "IVLP", "IVLPDePT", "VPT", "VPTDePT", "PromptSRC", "PromptSRCDePT", "CLIPAdapter",
           "CLIPAdapterDePT")
# Our trainer -> the official module and trainer class.
OFFICIAL = {
    "CoOp": ("trainers.coop", "CoOp"),
    "CoOpDePT": ("trainers.elp_coop", "ExtrasLinearProbeCoOp"),
    "CoCoOp": ("trainers.cocoop", "CoCoOp"),
    "CoCoOpDePT": ("trainers.elp_cocoop", "ExtrasLinearProbeCoCoOp"),
    "KgCoOp": ("trainers.kgcoop", "KgCoOp"),
    "KgCoOpDePT": ("trainers.elp_kgcoop", "ExtrasLinearProbeKgCoOp"),
    "MaPLe": ("trainers.maple", "MaPLe"),
    "MaPLeDePT": ("trainers.elp_maple", "ExtrasLinearProbeMaPLe"),
}
# Our trainer -> its original public code, for the methods DePT's official code lacks: (source,
# module, trainer class, its config file in that source; None: ours without its TRAINER section, as
# no config of the original is public). No original exists for their DePT variants.
ORIGINAL = {
    "ZeroshotCLIP": ("coop", "trainers.zsclip", "ZeroshotCLIP", "configs/trainers/CoOp/vit_b16.yaml"),
    "IVLP": ("promptsrc", "trainers.independentVL", "IVLP", "configs/trainers/IVLP/vit_b16_c2_ep20_batch4_4+4ctx.yaml"),
    "VPT": ("mpl", "trainers.vpt", "VPT", "configs/trainers/VPT/vit_b16_c2_ep5_batch4_4.yaml"),
    "PromptSRC": ("promptsrc", "trainers.promptsrc", "PromptSRC",
                  "configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx.yaml"),
    "CLIPAdapter": ("clip_adapter", "clip_adapter", "CLIP_Adapter", None),
}
#: ``--original-dir SOURCE=PATH``: the local checkouts ORIGINAL's sources name
SOURCES = {"coop": "KaiyangZhou/CoOp", "mpl": "muzairkhattak/multimodal-prompt-learning",
           "promptsrc": "muzairkhattak/PromptSRC", "clip_adapter": "gaopengcuhk/CLIP-Adapter (clip_adapter.py)"}
PATHS = ("auto", "shared_prefix", "truncated", "full")  # DEPT.TEXT_ENCODING of our trainers
VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
               transformer_layers=12)
RESULT_TAG = "BENCHMARK_RESULT "
SKEWED = 0.1  # a measurement during which other processes used more than this many cores on average
KEYS = ("kind", "method", "classes", "batch", "path")
#: ``--teacher-templates``: the template lists a frozen teacher's text features are averaged over,
#: by the module-level name its code reads them from: ours (``trainers/promptsrc.py``) and the
#: original PromptSRC's (``trainers/promptsrc.py``, ``from .imagenet_templates import ...``)
TEACHER_TEMPLATES = {"PromptSRC": ("PROMPTSRC_TEMPLATES", "IMAGENET_TEMPLATES")}

# Default class names: ImageNet-like token lengths (mostly 1-3 BPE tokens, a few long ones) drawn
# from a fixed list, so that results do not depend on any file. ``--classnames`` reads real ones.
_WORDS = (
    "dog cat bird fish snake lizard frog turtle spider beetle moth butterfly crab lobster shark whale "
    "eagle owl parrot heron pelican penguin goldfish terrier retriever spaniel hound poodle wolf fox "
    "bear lion tiger leopard cheetah zebra horse camel llama monkey gorilla elephant rabbit squirrel "
    "truck car bus train bicycle canoe yacht airliner tractor ambulance piano guitar violin trumpet "
    "drum clock lamp chair table sofa bottle teapot kettle umbrella backpack wallet sandal helmet "
    "mushroom pizza pretzel banana lemon strawberry pineapple broccoli cauliflower volcano cliff "
    "valley lakeside seashore golden great white grey red black spotted striped little giant common "
    "American African Indian Siberian Egyptian Persian Scottish Irish English German French Japanese "
    "Herbaceous Vegetation Industrial Buildings Annual Crop Permanent Residential Pasture River Forest "
    "xoloitzcuintli bearskin shako dalmatian chihuahua schipperke komondor axolotl quetzal armadillo "
    "X-ray machine hand-held computer four-poster wing-chair can-opener T-shirt pick-up "
).split()

# The issue's targets: (methods, classes, what, threshold). "speed": official s/step ÷ ours (≥);
# "memory": our peak growth ÷ the official's (≤); "img_s": our test img/s (≥); "floor": our test
# img/s ÷ the floor's (≥). KgCoOp's are CoOp's.
TARGETS = (
    (("CoOp", "KgCoOp"), 50, "speed", 2.0),
    (("CoOp", "KgCoOp"), 500, "speed", 6.0),
    (("CoOp", "KgCoOp"), 500, "memory", 1 / 3),
    (("CoOp", "KgCoOp"), 500, "floor", 0.95),
    (("CoCoOp",), 50, "img_s", 2.0),
    (("CoCoOp",), 50, "speed", 4.0),
    (("MaPLe",), 50, "speed", 2.0),
    (("MaPLe",), 500, "speed", 10.0),
    (("MaPLe",), 500, "memory", 1 / 3),
)


def default_classnames(count, seed=0):
    """``count`` distinct class names of 1-4 words from a fixed list (plus a few long ones)."""
    rng = random.Random(seed)
    names, seen = [], set()
    while len(names) < count:
        words = rng.choices((1, 2, 3, 4), weights=(45, 38, 12, 5))[0]
        name = " ".join(rng.choice(_WORDS) for _ in range(words))
        if rng.random() < 0.005:
            name += f" ({rng.choice(_WORDS)} or {rng.choice(_WORDS)})"
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


def read_classnames(path):
    """One class name per line; a leading WordNet id ("n01440764 tench", CoOp's format) is dropped."""
    names = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            first, _, rest = line.partition(" ")
            names.append(rest if rest and first[:1] == "n" and first[1:].isdigit() else line)
    return names


def sibling(name):
    """A module of this folder (benchmarks/ is no package), loaded from its file once."""
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                                         f"{name}.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


# -- measurement helpers ---------------------------------------------------------------------
def _read_kb(path, key):
    """A "Key:  123 kB" line of /proc/self/status or /proc/meminfo, in bytes (None if absent)."""
    with open(path) as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return None


def _proc_status(key):
    return _read_kb("/proc/self/status", key)


class PeakMemory:
    """Peak memory growth over a baseline: CUDA allocator stats, or the process's peak RSS on CPU."""

    def __init__(self, device):
        self.device = device
        self.baseline = 0
        self.method = None

    def start(self):
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.baseline = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
            self.method = "cuda max_memory_allocated"
            return
        with contextlib.suppress(OSError, AttributeError):
            import ctypes

            ctypes.CDLL("libc.so.6").malloc_trim(0)  # give freed heap back, so RSS is what is live
        self.baseline = _proc_status("VmRSS") or 0
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # resets VmHWM (the peak RSS) to the current RSS
            self.method = "VmHWM"
        except OSError:
            self.method = "ru_maxrss (includes the build's own peak)"

    def peak(self):
        """(growth over the baseline, total peak) in bytes."""
        if self.device.type == "cuda":
            torch.cuda.synchronize()
            total = torch.cuda.max_memory_allocated()
        elif self.method == "VmHWM":
            total = _proc_status("VmHWM")
        else:
            total = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        return total - self.baseline, total


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, warmup, repeats, budget):
    """Run ``fn`` ``warmup`` times, then time up to ``repeats`` runs: at least one, and another only
    while the runs so far plus one more (at their mean) stay within ``budget`` seconds."""
    for _ in range(warmup):
        fn()
    times = []
    while len(times) < max(1, repeats) and (not times or sum(times) * (len(times) + 1) / len(times) <= budget):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


# -- configs and trainers ---------------------------------------------------------------------
def config_name(method, tiny=False):
    """The method's base-to-new config, or on the tiny CLIP its demo config (its method record's)."""
    record = method_record(method)
    return record.demo_config if tiny else record.config("base2new")


def our_config(method, tiny=False):
    """Dassl's defaults, our keys, and the method's own config file (``config_name``)."""
    from dassl.config import get_cfg_default

    import dept  # noqa: F401  (registers our trainers, whose keys add_dept_config adds)
    from dept.core.build_config import merge_config_file
    from dept.core.config import add_dept_config

    cfg = add_dept_config(get_cfg_default())
    merge_config_file(cfg, os.path.join(CONFIGS, method, f"{config_name(method, tiny)}.yaml"))
    return cfg


def _overrides(cfg, job):
    """What every measured config shares, ours and official: precision, image size, base classes."""
    for node in cfg.TRAINER.values():
        if isinstance(node, dict) and "PREC" in node:
            node.PREC = "fp16" if job["fp16"] else "fp32"
    cfg.INPUT.SIZE = (job["image_size"],) * 2
    cfg.DATASET.SUBSAMPLE_CLASSES = "base"  # the classes trained on: DePT's CAT head is trained and fused
    cfg.DATASET.NAME = "ImageNet"  # the official KgCoOp's template for it: "a photo of a {}."


def trainer_without_data(cls, cfg, classnames, device):
    """The Dassl trainer ``cls`` as its ``__init__`` makes it, without data: Dassl's ``TrainerBase``
    registries, ``cfg``, ``device``, a stand-in ``dm.dataset`` holding the class names, then the
    trainer's own ``check_cfg`` and ``build_model``. Ours and the official ones alike."""
    from dassl.engine.trainer import TrainerBase

    trainer = cls.__new__(cls)
    TrainerBase.__init__(trainer)
    trainer.cfg, trainer.device = cfg, device
    trainer.start_epoch, trainer.epoch, trainer.max_epoch = 0, 0, 1
    trainer.dm = types.SimpleNamespace(dataset=types.SimpleNamespace(classnames=list(classnames)),
                                       num_classes=len(classnames))
    trainer.check_cfg(cfg)
    trainer.build_model()
    trainer.batch_idx, trainer.num_batches = 0, 2 ** 31  # never an epoch's last batch: no LR step
    return trainer


def _fewer_teacher_templates(job, module, patches):
    """``--teacher-templates N``: the frozen teacher's text features averaged over the first N
    templates instead of all of them, in ``module`` (ours or the original's), for the build only.

    The teacher is encoded once, when the model is built, into one mean feature per class; a
    training step and an evaluation read that C×D tensor whatever N was. So N changes the build's
    time, never what is measured, for ours and the original alike (PromptSRC's original encodes
    60 templates × C classes at all 77 positions: about half an hour here at 500 classes)."""
    count = job.get("teacher_templates") or 0
    if not count or module is None:
        return
    for name in TEACHER_TEMPLATES.get(method_record(job["method"]).name, ()):
        value = getattr(module, name, None)
        if isinstance(value, (list, tuple)) and len(value) > count:
            patches.set(module, name, type(value)(value[:count]))


def _model_module(cls):
    """The module holding ``cls.model_cls`` (or a base class's), whose globals the build reads."""
    for klass in getattr(cls, "model_cls", type).__mro__:
        module = sys.modules.get(klass.__module__)
        if any(hasattr(module, n) for names in TEACHER_TEMPLATES.values() for n in names):
            return module
    return None


def build_ours(job, device):
    from dassl.engine import TRAINER_REGISTRY

    cfg = our_config(job["method"], job["model"] == "tiny")
    _overrides(cfg, job)
    cfg.MODEL.BACKBONE.PATH = job["weights"]
    cfg.DEPT.TEXT_ENCODING = job["path"]
    cls = TRAINER_REGISTRY.get(job["method"])
    patches = _Patches()
    _fewer_teacher_templates(job, _model_module(cls), patches)
    try:
        return trainer_without_data(cls, cfg, job["classnames"], device)
    finally:
        patches.undo()


@contextlib.contextmanager
def _official_imports(official_dir, own_clip=False):
    """Make the official code importable in this process without touching anything of ours.

    Its modules import ``plotnine`` (unused; not installed): an empty stand-in is inserted. Its
    ``trainers`` package registers ``CoOp`` etc. in Dassl's registry, where ours already are: the
    registry is emptied for the import and restored after. ``clip`` stays the installed package
    (the official ``from clip import clip`` finds it); ``clip_maple`` is the official one. With
    ``own_clip`` (the originals, whose vendored ``clip`` builds their prompted encoders from
    ``design_details``) the source's ``clip`` is imported instead; its trainer modules keep it.
    """
    import clip  # noqa: F401
    from dassl.engine import TRAINER_REGISTRY

    stand_in = types.ModuleType("plotnine")
    stand_in.__all__ = []
    sys.modules.setdefault("plotnine", stand_in)
    names = ("trainers", "utils") + (("clip",) if own_clip else ())
    shadowed = {name: sys.modules.pop(name) for name in list(sys.modules)
                if name in names or name.split(".")[0] in names}
    registered = dict(TRAINER_REGISTRY._obj_map)
    TRAINER_REGISTRY._obj_map.clear()
    sys.path.insert(0, official_dir)
    try:
        yield
    finally:
        sys.path.remove(official_dir)
        for name in [name for name in sys.modules if name.split(".")[0] in names]:
            del sys.modules[name]  # theirs, held on by their trainer modules
        TRAINER_REGISTRY._obj_map.clear()
        TRAINER_REGISTRY._obj_map.update(registered)
        sys.modules.update(shadowed)


class _Patches:
    """Attributes replaced for a while and put back exactly (see the module docstring)."""

    def __init__(self):
        self._saved = []

    def set(self, obj, name, value):
        self._saved.append((obj, name, name in vars(obj), getattr(obj, name)))
        setattr(obj, name, value)

    def undo(self):
        for obj, name, own, old in reversed(self._saved):
            if own:
                setattr(obj, name, old)
            else:
                delattr(obj, name)
        self._saved.clear()


#: trainer class -> the module it was imported from (no longer in sys.modules: see _official_imports)
_MODULES = {}


def _clip_modules(cls):
    """The ``clip`` loader modules (``clip.clip``, ``clip_maple.clip``, a source's own) in use: the
    installed ones and those the trainer's module holds (its siblings import the same objects)."""
    found = [sys.modules[name] for name in ("clip.clip", "clip_maple.clip") if name in sys.modules]
    module = _MODULES.get(cls)
    if module is not None:
        found += [v for v in vars(module).values() if isinstance(v, types.ModuleType) and hasattr(v, "_download")]
    return list({id(m): m for m in found}.values())


def _not_to_cuda(to):
    def to_here(self, *args, **kwargs):
        target = args[0] if args else kwargs.get("device")
        if isinstance(target, (str, torch.device)) and torch.device(target).type == "cuda":
            return self
        return to(self, *args, **kwargs)
    return to_here


@contextlib.contextmanager
def official_runtime(job, cls=None):
    """The run-time changes the official (or original) code needs here, undone on exit (module docstring)."""
    patches = _Patches()
    weights = job["weights"]
    for module in _clip_modules(cls):
        patches.set(module, "_download", lambda url, root=None: weights)
    if job["device"] != "cuda":
        patches.set(torch.Tensor, "cuda", lambda self, *args, **kwargs: self)
        patches.set(torch.nn.Module, "cuda", lambda self, device=None: self.float())
        patches.set(torch.Tensor, "to", _not_to_cuda(torch.Tensor.to))  # CLIP-Adapter's prompts.to("cuda")
    module = _MODULES.get(cls)
    adapter = getattr(module, "Adapter", None)
    if cls is not None and cls.__name__ == "CLIP_Adapter" and adapter is not None:
        # its Adapter(1024, 4): RN50's embedding width, hard-coded; this CLIP's width instead
        width = torch.load(weights, map_location="cpu", weights_only=True)["text_projection"].shape[1]

        def adapter_of_this_width(c_in, reduction=4):
            module.Adapter = adapter  # its __init__ names the class (super(Adapter, self))
            try:
                return adapter(width, reduction)
            finally:
                module.Adapter = adapter_of_this_width
        patches.set(module, "Adapter", adapter_of_this_width)
    _fewer_teacher_templates(job, module, patches)
    if not job["fp16"]:
        patches.set(torch.Tensor, "half", lambda self, *args, **kwargs: self)
        patches.set(torch.nn.Module, "half", lambda self: self)
    try:
        yield
    finally:
        patches.undo()


def official_extend_cfg(official_dir):
    """The official ``train.py:extend_cfg``, read from its source (train.py itself imports datasets)."""
    path = os.path.join(official_dir, "train.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "extend_cfg")
    namespace = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), path, "exec"), namespace)
    return namespace["extend_cfg"]


def reference_of(job):
    """(directory, module, class name, config file or None, whether it brings its own clip) of the
    code ``job`` measures: DePT's official code where it has the method, else the original."""
    method = job["method"]
    if method in OFFICIAL and job.get("official_dir"):
        module, name = OFFICIAL[method]
        config = os.path.join(job["official_dir"], "configs", "trainers", name, f"{config_name(method)}.yaml")
        return job["official_dir"], module, name, config, False
    source, module, name, config = ORIGINAL[method]
    directory = job["original_dirs"][source]
    return directory, module, name, config and os.path.join(directory, config), True


def official_config_file(job):
    """The official config file of the same name as ours (``config_name``; the base-to-new ones),
    or the original's."""
    return reference_of(job)[3]


def official_trainer_class(job):
    """The official (or original) trainer class of ``job["method"]``, imported from its checkout."""
    directory, module, name, _, own_clip = reference_of(job)
    with _official_imports(os.path.abspath(directory), own_clip=own_clip):
        imported = importlib.import_module(module)
    cls = getattr(imported, name)
    _MODULES[cls] = imported
    return cls


def build_official(job, cls, device):
    """The official trainer ``cls``, built by its own ``build_model`` (within ``official_runtime``)."""
    from dassl.config import get_cfg_default

    from dept.util.dassl_compat import patch_dassl_schedulers

    patch_dassl_schedulers()
    cfg = get_cfg_default()
    directory, _, _, config, _ = reference_of(job)
    if os.path.exists(os.path.join(directory, "train.py")):
        official_extend_cfg(os.path.abspath(directory))(cfg)
    if config:
        cfg.merge_from_file(config)
    else:  # no public config of the original: ours, less our TRAINER keys
        from yacs.config import CfgNode

        with open(os.path.join(CONFIGS, job["method"], f"{config_name(job['method'])}.yaml")) as f:
            ours = CfgNode.load_cfg(f)
        ours.pop("TRAINER", None)
        cfg.merge_from_other_cfg(ours)
    _overrides(cfg, job)
    return trainer_without_data(cls, cfg, job["classnames"], device)


# -- one configuration -----------------------------------------------------------------------
def _random_images(count, size, generator, device):
    return torch.randn(count, 3, size, size, generator=generator).to(device)


def run_job(job):
    """Measure one configuration in this process; returns a dict of figures."""
    device = torch.device(job["device"])
    torch.manual_seed(job["seed"])
    generator = torch.Generator().manual_seed(job["seed"])
    size = job["image_size"]
    result = {k: job[k] for k in KEYS if k in job and (job["kind"] != "floor" or k == "kind")}
    test_images = _random_images(job["test_batch"], size, generator, device)

    if job["kind"] == "floor":
        from dassl.config import get_cfg_default

        from dept.core.clip_loader import load_clip
        from dept.core.config import add_dept_config

        cfg = add_dept_config(get_cfg_default())
        cfg.MODEL.BACKBONE.PATH = job["weights"]
        cfg.INPUT.SIZE = (size, size)  # the CLIP's own input size (checked when it is loaded)
        clip_model, _ = load_clip(cfg, "fp16" if job["fp16"] else "fp32", device)
        encoder = clip_model.visual
        images = test_images.type(clip_model.dtype)
        with torch.no_grad():
            times = timed(lambda: encoder(images), device, 0, job["eval_repeats"], job["budget"])
        result.update(floor_batch_s=statistics.median(times), floor_repeats=len(times))
        return result

    official = job["kind"] == "official"
    with contextlib.ExitStack() as stack:
        if official:
            cls = official_trainer_class(job)  # imported first: official_runtime patches its modules
            stack.enter_context(official_runtime(job, cls))
            stack.enter_context(contextlib.redirect_stdout(sys.stderr))  # its print()s: not our report
            trainer = build_official(job, cls, device)
        else:
            trainer = build_ours(job, device)
        classes = len(job["classnames"])
        batch = {"img": _random_images(job["batch"], size, generator, device),
                 "label": torch.randint(classes, (job["batch"],), generator=generator).to(device)}

        trainer.set_model_mode("train")
        memory = PeakMemory(device)
        memory.start()
        try:
            if not job.get("train", True):  # zero-shot CLIP: evaluated as built, no training step
                raise _NoTraining
            times = timed(lambda: trainer.forward_backward(batch), device, job["warmup"], job["steps"], job["budget"])
            growth, total = memory.peak()
            result.update(step_s=statistics.median(times), steps_timed=len(times), step_times=times,
                          peak_growth_bytes=growth, peak_total_bytes=total, memory_method=memory.method)
            if not official:  # after the peak is read: the floor's own memory is not the step's
                trainer.optim.zero_grad(set_to_none=True)
                result.update(sibling("floors").measure_training_floor(trainer, batch["img"], job, device, timed))
        except _NoTraining:
            result["no_training"] = True
        except (RuntimeError, MemoryError) as error:
            if not _out_of_memory(error):
                raise
            result.update(error=f"out of memory in training{_limit_note(job)}", error_detail=str(error)[:300])
        if job["test"] and ("error" not in result or official):
            if getattr(trainer, "optim", None) is not None:
                trainer.optim.zero_grad(set_to_none=True)
            gc.collect()
            result.update(measure_test(trainer, test_images, job, device))
            if not official:  # its own image encoder on the same test batch: the evaluation's floor
                result.update(sibling("floors").measure_test_floor(trainer, test_images, job, device, timed))
    return result


def measure_test(trainer, images, job, device):
    """The text encoding an evaluation does once (ours, where the text does not depend on the image)
    and one test batch of the trainer's own ``model_inference``, as Dassl's ``test`` runs them."""
    trainer.set_model_mode("eval")
    before_test = getattr(trainer, "before_test", None)  # ours: DePT decides whether its head applies
    if before_test is not None:
        before_test()
    cache = getattr(getattr(trainer, "model", None), "cached_text_features", None)  # ours: text once per evaluation
    figures = {}
    with torch.no_grad():
        if cache is not None and trainer.model.image_independent_text:
            def text_once():
                with cache():
                    pass

            times = timed(text_once, device, 1, job["eval_repeats"], job["budget"])
            figures["text_once_s"] = statistics.median(times)
        else:
            figures["text_once_s"] = 0.0  # the official code, and text conditioned on each image
        with cache() if cache is not None else contextlib.nullcontext():
            trainer.model_inference(images[:2])  # warm-up on two images: every code path once
            times = timed(lambda: trainer.model_inference(images), device, 0, job["eval_repeats"], job["budget"])
    figures.update(test_batch_s=statistics.median(times), test_repeats=len(times))
    return figures


class _NoTraining(Exception):
    """The method trains nothing (zero-shot CLIP)."""


def _limit_note(job):
    limit = job.get("memory_limit_bytes")
    return f" (limit {limit / 2 ** 30:.1f} GiB)" if limit else ""


def _out_of_memory(error):
    text = str(error)
    return isinstance(error, MemoryError) or "alloc" in text or "out of memory" in text


def _worker():
    """``benchmark.py --worker``: one job (JSON on stdin), its figures on stdout's last line."""
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    logging.getLogger("dept").setLevel(logging.WARNING)
    job = json.loads(sys.stdin.read())
    limit = job.get("memory_limit_bytes")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = run_job(job)
    except (RuntimeError, MemoryError) as error:
        if not _out_of_memory(error):
            raise
        result = {k: job.get(k) for k in KEYS}
        result.update(error=f"out of memory{_limit_note(job)}", error_detail=str(error)[:300])
    sys.stdout.write("\n" + RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def _busy_cpu_seconds():
    """CPU seconds the whole machine has spent busy since boot (``/proc/stat``), or None."""
    try:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:9]]
    except (OSError, ValueError):
        return None
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")  # all but idle and iowait


def _own_cpu_seconds(isolate):
    usage = resource.getrusage(resource.RUSAGE_CHILDREN if isolate else resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def wait_until_idle(limit, sample=2.0, threshold=SKEWED):
    """Wait (at most ``limit`` seconds) until other processes use under ``threshold`` of one core;
    returns the share they used in the last ``sample`` seconds."""
    start = time.monotonic()
    while True:
        before = _busy_cpu_seconds()
        if before is None:
            return None
        time.sleep(sample)
        share = (_busy_cpu_seconds() - before) / sample
        waited = time.monotonic() - start
        if share < threshold or waited >= limit:
            if waited > 2 * sample:
                logger.info("  waited %.0f s for other processes (now %.0f%% of a core)", waited, 100 * share)
            return share
        if waited < 1.5 * sample:
            logger.info("  other processes use %.0f%% of a core: waiting (at most %.0f s)", 100 * share, limit)


def _label(job):
    if job.get("kind") == "floor":
        return "floor"
    return "/".join(str(job[k]) for k in KEYS if job.get(k) is not None)


def measure(job, isolate):
    """Run one job in a fresh process (so that peak memory is this job's alone) or in this one."""
    logger.info("measuring %s ...", _label(job))
    if job.get("wait_idle"):
        wait_until_idle(job["wait_idle"])
    start, load = time.perf_counter(), os.getloadavg()[0]
    busy, own = _busy_cpu_seconds(), _own_cpu_seconds(isolate)
    if not isolate:
        result = run_job(job)
    else:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker"], input=json.dumps(job),
                              capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
        if lines:
            result = json.loads(lines[-1][len(RESULT_TAG):])
        else:
            reason = (f"killed by signal {-proc.returncode} (likely out of memory)" if proc.returncode < 0
                      else f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or ''}")
            logger.warning("%s failed: %s\n%s", _label(job), reason, proc.stderr[-3000:])
            result = {k: job.get(k) for k in KEYS}
            result["error"] = reason
    result["wall_s"] = time.perf_counter() - start
    result["load_average"] = [load, os.getloadavg()[0]]
    if busy is not None:
        # CPU time of every other process during this measurement, in cores: what skewed its timings
        others = (_busy_cpu_seconds() - busy) - (_own_cpu_seconds(isolate) - own)
        result["others_cores"] = max(0.0, others / result["wall_s"])
    logger.info("  done in %.0f s: %s", result["wall_s"],
                {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items() if k != "step_times"})
    return result


def measure_clean(job, isolate, retries):
    """``measure``, again (up to ``retries`` times) while other processes skewed it (``SKEWED``)."""
    for attempt in range(retries + 1):
        result = measure(job, isolate)
        if result.get("others_cores", 0) <= SKEWED or attempt == retries:
            result["attempts"] = attempt + 1
            return result
        logger.info("  other processes used %.2f cores meanwhile: measuring again", result["others_cores"])


# -- report ----------------------------------------------------------------------------------
def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def add_throughput(results, settings):
    """Test images per second of a whole evaluation, and its fraction of the image-encoder floor;
    runs without their own test figures (a second training batch) take those of their twin."""
    floor = next((r for r in results if r.get("kind") == "floor" and "floor_batch_s" in r), None)
    batch = settings["test_batch"]
    if floor is not None:
        floor["test_img_s"] = batch / floor["floor_batch_s"]
    for r in results:
        if "test_batch_s" in r:
            images = settings["test_images_per_class"] * r["classes"]
            r["test_images"] = images
            r["test_img_s"] = images / (r["text_once_s"] + math.ceil(images / batch) * r["test_batch_s"])
            own = r if "floor_test_batch_s" in r else next(  # the official code: our twin's, the same encoder
                (t for t in results if t.get("kind") == "ours" and "floor_test_batch_s" in t
                 and all(t.get(k) == r.get(k) for k in ("method", "classes"))), None)
            if own is not None:  # the method's own image encoder (floors.measure_test_floor)
                r["floor_fraction"] = r["test_img_s"] / (batch / own["floor_test_batch_s"])
            elif floor is not None:  # runs saved before: the stock image encoder's
                r["floor_fraction"] = r["test_img_s"] / floor["test_img_s"]
    for r in results:
        if r.get("kind") in ("ours", "official") and "test_img_s" not in r:
            twin = next((t for t in results if "test_img_s" in t and all(
                t.get(k) == r.get(k) for k in ("kind", "method", "classes", "path"))), None)
            if twin is not None:
                r.update(test_img_s=twin["test_img_s"], floor_fraction=twin.get("floor_fraction"),
                         test_from_batch=twin["batch"])


def _official_of(results, r):
    return next((o for o in results if o.get("kind") == "official" and "step_s" in o
                 and all(o.get(k) == r.get(k) for k in ("method", "classes", "batch"))), None)


def _official_test_of(results, r):
    return next((o for o in results if o.get("kind") == "official" and o.get("test_img_s")
                 and all(o.get(k) == r.get(k) for k in ("method", "classes"))), None)


def table(results):
    mb = 2 ** 20
    lines = [
        "| classes | method | batch | code | s / step (n) | floor s / step | × floor | × faster | peak MB (growth) | "
        "÷ official | peak MB (total) | text once s | test img/s | % of floor |",
        "|---:|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = [r for r in results if r.get("kind") != "floor"]
    for r in results:
        if r.get("kind") == "floor":
            lines.append(f"| - | CLIP image encoder alone (floor) | | | | | | | | | | | "
                         f"{_fmt(r.get('test_img_s'), '.2f')} | 100 |")
    for r in sorted(rows, key=lambda r: (r["classes"], METHODS.index(r["method"]) if r["method"] in METHODS
                                         else len(METHODS), r["method"], -r["batch"], r["kind"] != "ours")):
        ref = _official_of(results, r) if r["kind"] == "ours" else None
        code = r["path"] if r["kind"] == "official" else ("ours" if r["path"] == "auto" else f"ours ({r['path']})")
        if "step_s" in r:
            speedup = ref["step_s"] / r["step_s"] if ref else None
            mem = r["peak_growth_bytes"] / ref["peak_growth_bytes"] if ref and ref.get("peak_growth_bytes") else None
            floor, times = sibling("floors").floor_columns(r)
            train = (f"{r['step_s']:.2f} ({r['steps_timed']}) | {floor} | {times} | {_fmt(speedup, '.1f')} | "
                     f"{r['peak_growth_bytes'] / mb:,.0f} | {_fmt(mem, '.3f')} | {r['peak_total_bytes'] / mb:,.0f}")
        else:
            train = f"{r.get('error') or ('no training step' if r.get('no_training') else 'n/a')} | | | | | |"
        test_ref = _official_test_of(results, r) if r["kind"] == "ours" else None
        img_s = r.get("test_img_s")
        test = _fmt(img_s, ".2f")
        if img_s and test_ref:
            test += f" ({img_s / test_ref['test_img_s']:.1f}×)"
        if r.get("test_from_batch") is not None:
            test += f" [batch {r['test_from_batch']} run]"
        fraction = r.get("floor_fraction")
        lines.append(f"| {r['classes']} | {r['method']} | {r['batch']} | {code} | {train} | "
                     f"{_fmt(r.get('text_once_s'), '.2f') if r['kind'] == 'ours' else ''} | {test} | "
                     f"{_fmt(100 * fraction if fraction is not None else None, '.1f')} |")
    return "\n".join(lines)


def targets(results):
    """The issue's targets (``TARGETS``), each met or missed, for each method and its DePT variant."""
    lines = []
    for methods, classes, what, threshold in TARGETS:
        for base in methods:
            for method in (base, base + "DePT"):
                ours = [r for r in results if r.get("kind") == "ours" and r.get("method") == method
                        and r.get("classes") == classes and r.get("path") == "auto"]
                for r in sorted(ours, key=lambda r: -r["batch"]):
                    if what in ("img_s", "floor") and r.get("test_from_batch") is not None:
                        continue
                    line = _target_line(results, r, what, threshold)
                    if line:
                        lines.append(f"- {method}, {classes} classes, {line}")
    return "\n".join(lines)


def verdict(ok):
    return "met" if ok else "MISSED"


def _target_line(results, r, what, threshold):
    if what == "speed":
        ref = _official_of(results, r)
        if not ref or "step_s" not in r:
            return None
        ratio = ref["step_s"] / r["step_s"]
        return (f"batch {r['batch']}: training step {ratio:.1f}× faster than the official code "
                f"(target ≥ {threshold:g}×): {verdict(ratio >= threshold)}")
    if what == "memory":
        ref = _official_of(results, r)
        if not ref or "peak_growth_bytes" not in r or not ref.get("peak_growth_bytes"):
            return None
        frac = r["peak_growth_bytes"] / ref["peak_growth_bytes"]
        return (f"batch {r['batch']}: peak memory growth {frac:.3f} of the official code's "
                f"(target ≤ 1/3): {verdict(frac <= threshold)}")
    if what == "img_s" and r.get("test_img_s"):
        ref = _official_test_of(results, r)
        versus = f", official {ref['test_img_s']:.2f}" if ref else ""
        return (f"test {r['test_img_s']:.2f} images/s{versus} (target ≥ {threshold:g}): "
                f"{verdict(r['test_img_s'] >= threshold)}")
    if what == "floor" and r.get("floor_fraction") is not None:
        frac = r["floor_fraction"]
        return (f"test throughput {100 * frac:.1f}% of the image-encoder floor (target ≥ {100 * threshold:g}%): "
                f"{verdict(frac >= threshold)}")
    return None


# -- command line ----------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="benchmarks/benchmark.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[50, 500], help="numbers of classes")
    parser.add_argument("--conditional-classes", type=int, nargs="+", default=[50],
                        help="numbers of classes for methods whose text depends on the image (CoCoOp)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS),
                        help="our trainers to measure (registered names); the official code where it has them")
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=["auto"],
                        help="our text-encoding paths (DEPT.TEXT_ENCODING); all are exact")
    parser.add_argument("--official-dir", default="", help="a local checkout of Koorye/DePT to measure beside ours")
    parser.add_argument("--original-dir", action="append", default=[], metavar="SOURCE=PATH",
                        help="a local checkout of a method's original code, for the methods DePT's official code "
                             "lacks; SOURCE: " + ", ".join(f"{k} ({v})" for k, v in SOURCES.items()))
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (fp16)")
    parser.add_argument("--batch", type=int, default=4, help="training batch (each method also runs at its "
                        "config's batch where that differs: CoCoOp 1)")
    parser.add_argument("--test-batch", type=int, default=100, help="test batch size (the configs': 100)")
    parser.add_argument("--test-images-per-class", type=int, default=50,
                        help="evaluation size per class, for test img/s (ImageNet's val set: 50)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed training steps first")
    parser.add_argument("--steps", "--repeats", dest="steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--eval-repeats", type=int, default=2, help="timed repeats of test-time measurements")
    parser.add_argument("--budget", type=float, default=40.0,
                        help="seconds that the timed repeats of one measurement stay within (at least one runs)")
    parser.add_argument("--teacher-templates", type=int, default=0, metavar="N",
                        help="PromptSRC's frozen teacher text from the first N of its 60 templates, ours and the "
                             "original alike (0: all). The build encodes them once into one feature per class; a "
                             "step reads that whatever N is, so N shortens the build (half an hour at 500 classes "
                             "here for the original) and changes no figure")
    parser.add_argument("--classnames", default="", help="file of class names (one per line, or CoOp's "
                        "'wnid name' classnames.txt); the first N are used. Default: generated, ImageNet-like")
    parser.add_argument("--memory-limit-gb", type=float, default=None,
                        help="address-space limit per measurement on CPU (default: 90%% of available memory, plus "
                             "what a torch process maps without using; 0 = none), so that a configuration too big "
                             "for this machine fails cleanly instead of waking the kernel's OOM killer")
    parser.add_argument("--wait-idle", type=float, default=0.0,
                        help="before each measurement, wait up to this many seconds until other processes use "
                             "under 10%% of a core (a shared machine); the report names the measurements they skewed")
    parser.add_argument("--retry-busy", type=int, default=0,
                        help="measure again (up to this many times) what other processes skewed (they used over "
                             "10%% of a core on average meanwhile); with --wait-idle, for a shared machine")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (faster; peak memory then is not per configuration)")
    parser.add_argument("--quick", action="store_true", help="tiny CLIP, 5 classes, one step: checks that it runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="also write every figure as JSON here")
    parser.add_argument("--resume", action="store_true",
                        help="keep the figures already in --out (an interrupted run, same settings); measure the rest")
    parser.add_argument("--report", default="", help="print the report of a saved --out file and exit")
    parser.add_argument("--no-test", dest="test", action="store_false",
                        help="training steps (and their floors) only: no evaluation measured")
    parser.add_argument("--figure", default="", metavar="PNG",
                        help="draw the speed-ups and memory ratios against the original code of the saved runs "
                             "(--figure-from) into this file and exit; measures nothing")
    parser.add_argument("--figure-from", nargs="+", default=None, metavar="JSON",
                        help="saved runs for --figure (default: every benchmarks/results/*.json with rows of the "
                             "official or original code)")
    args = parser.parse_args(argv)
    if args.quick:
        args.classes = [5] if args.classes == [50, 500] else args.classes
        args.conditional_classes = [5] if args.conditional_classes == [50] else args.conditional_classes
        args.steps, args.eval_repeats, args.warmup = 1, 1, 1
        args.test_batch = min(args.test_batch, 4)
        args.test_images_per_class = min(args.test_images_per_class, 2)
    args.original_dirs = {}
    for item in args.original_dir:
        source, _, path = item.partition("=")
        if source not in SOURCES or not path:
            parser.error(f"--original-dir {item}: give SOURCE=PATH, SOURCE one of {', '.join(SOURCES)}")
        if not os.path.isdir(path):
            parser.error(f"--original-dir {item}: {path} is not a directory")
        args.original_dirs[source] = os.path.abspath(path)
    if args.teacher_templates < 0:
        parser.error(f"--teacher-templates {args.teacher_templates}: give a count of templates >= 1 (0: all of them)")
    unknown = [m for m in args.methods if m not in METHODS and trainer_class(m) is None]
    if unknown:
        parser.error(f"not registered trainers: {unknown}")
    return args


def _available_memory():
    try:
        return _read_kb("/proc/meminfo", "MemAvailable")
    except OSError:
        return None


def write_weights(model_name, seed, path):
    """The random CLIP every measurement loads, as a state-dict file (what MODEL.BACKBONE.PATH takes);
    returns its image size."""
    if model_name == "tiny":
        from dept.core.testing import tiny_clip

        model = tiny_clip(seed=seed)
    else:
        from clip.model import CLIP

        torch.manual_seed(seed)
        model = CLIP(**VIT_B16)
        model.initialize_parameters()
    torch.save(model.state_dict(), path)
    return model.visual.input_resolution


def trainer_class(method):
    from dassl.engine import TRAINER_REGISTRY

    import dept  # noqa: F401  (registers our trainers)

    return TRAINER_REGISTRY._obj_map.get(method)


def method_record(method):
    """The method record (``dept.core.methods``) of a registered trainer name."""
    import dept  # noqa: F401
    from dept.core.methods import method_of

    record, _ = method_of(method)
    if record is None:
        raise SystemExit(f"{method} has no method record (dept.core.methods.register_method)")
    return record


def reference_code(method, settings):
    """What the method is measured beside: "official" (DePT's official code has it, and
    --official-dir is given), "original" (its original code, --original-dir given), or None."""
    if method in OFFICIAL and settings["official_dir"]:
        return "official"
    if method in ORIGINAL and ORIGINAL[method][0] in settings["original_dirs"]:
        return "original"
    return None


def conditional(method, weights):
    """Whether the method's text depends on the image (CoCoOp), from its model built on the tiny CLIP."""
    job = dict(method=method, path="auto", fp16=False, image_size=32, device="cpu", weights=weights,
               classnames=["dog", "cat"], model="tiny")
    logging.disable(logging.INFO)
    try:
        return not build_ours(job, torch.device("cpu")).model.image_independent_text
    finally:
        logging.disable(logging.NOTSET)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["feature-cache"]:  # the sub-command: evaluations with and without the shared image features
        spec = importlib.util.spec_from_file_location(
            "feature_cache_benchmark", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                    "feature_cache_benchmark.py"))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.main(argv[1:], write_weights)
    args = parse_args(argv)
    if args.figure:
        sibling("speedup_figure").write_figure(args.figure, args.figure_from)
        return 0
    if args.report:
        with open(args.report) as f:
            sys.stdout.write(render(json.load(f)))
        return 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[benchmark] %(message)s", stream=sys.stderr)
    logger.setLevel(logging.INFO)
    logging.getLogger("dept").setLevel(logging.WARNING)  # one line per model built: noise here
    device = torch.device(args.device)
    fp16 = device.type == "cuda"
    if args.memory_limit_gb is None:
        # The limit is on address space, which exceeds the resident size by what a torch process maps
        # without touching (libraries, thread arenas): add this process's own such excess.
        available = _available_memory()
        mapped = (_proc_status("VmSize") or 0) - (_proc_status("VmRSS") or 0)
        limit = int(0.9 * available + max(0, mapped)) if available and device.type == "cpu" else None
    else:
        limit = int(args.memory_limit_gb * 2 ** 30) or None
    counts = set(args.classes) | set(args.conditional_classes)
    names = read_classnames(args.classnames) if args.classnames else default_classnames(max(counts), args.seed)
    if len(names) < max(counts):
        raise SystemExit(f"{args.classnames} has {len(names)} class names; the run needs {max(counts)}")
    folder = tempfile.mkdtemp(prefix="dept-benchmark-")
    try:
        model_name = "tiny" if args.quick else "ViT-B/16"
        weights, probe = os.path.join(folder, "clip.pt"), os.path.join(folder, "tiny_clip.pt")
        image_size = write_weights(model_name, args.seed, weights)
        write_weights("tiny", args.seed, probe)
        settings = dict(model=model_name, device=str(device), fp16=fp16, seed=args.seed, batch=args.batch,
                        test_batch=args.test_batch, warmup=args.warmup, steps=args.steps,
                        eval_repeats=args.eval_repeats, budget=args.budget, image_size=image_size,
                        test_images_per_class=args.test_images_per_class, memory_limit_bytes=limit,
                        official_dir=os.path.abspath(args.official_dir) if args.official_dir else "",
                        original_dirs=args.original_dirs, wait_idle=args.wait_idle)
        if args.teacher_templates:  # absent when all are used: saved runs before the option compare equal
            settings["teacher_templates"] = args.teacher_templates
        jobs = [dict(settings, kind="floor", weights=weights)]
        for method in args.methods:
            cond = conditional(method, probe)
            trains = method_record(method).trained
            own_batch = our_config(method).DATALOADER.TRAIN_X.BATCH_SIZE  # the real config's, also with --quick
            batches = [args.batch] + ([own_batch] if own_batch != args.batch and trains else [])
            for classes in sorted(args.conditional_classes if cond else args.classes):
                common = dict(settings, method=method, classes=classes, classnames=names[:classes], weights=weights,
                              train=trains)
                for i, batch in enumerate(batches):
                    for path in args.paths:
                        jobs.append(dict(common, kind="ours", path=path, batch=batch, test=i == 0 and args.test))
                    reference = reference_code(method, settings)
                    if reference:
                        jobs.append(dict(common, kind="official", path=reference, batch=batch,
                                         test=i == 0 and args.test))
        load_before = os.getloadavg()
        done = _saved_results(args.out, settings) if args.resume else {}
        results = []
        for job in jobs:
            saved = done.get(_label(job))
            if saved is not None:
                logger.info("kept from %s: %s", args.out, _label(job))
            results.append(saved or measure_clean(job, not args.in_process, args.retry_busy))
            if args.out:  # each figure saved as soon as measured: an interrupted run loses nothing
                _write_json(args.out, {"settings": settings, "complete": False, "results": results})
        load_after = os.getloadavg()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    add_throughput(results, settings)
    settings.pop("image_size")
    run = {"settings": settings, "torch": torch.__version__,
           "threads": torch.get_num_threads() if device.type == "cpu" else None,
           "load_average": {"before": load_before, "after": load_after},
           "classnames_source": args.classnames or "generated",
           "command": " ".join(["benchmarks/benchmark.py", *(sys.argv[1:] if argv is None else argv)]),
           "results": results}
    if args.out:
        _write_json(args.out, run)
    sys.stdout.write(render(run))
    return 0


def _write_json(path, data):
    """Write through a temporary file and rename: a reader never sees half a file."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1)
    os.replace(tmp, path)


#: settings that must match for ``--resume`` to keep a saved figure
_COMPARABLE = ("model", "device", "fp16", "seed", "test_batch", "warmup", "steps", "eval_repeats", "budget",
               "test_images_per_class", "official_dir", "original_dirs", "teacher_templates")


def _saved_results(path, settings):
    """``--resume``: the figures of an earlier (maybe interrupted) run with the same settings, by label."""
    if not path or not os.path.exists(path):
        return {}
    with open(path) as f:
        saved = json.load(f)
    differ = [k for k in _COMPARABLE if saved["settings"].get(k) != settings.get(k)]
    if differ:
        raise SystemExit(f"--resume: {path} was measured with other settings ({', '.join(differ)}); "
                         "give another --out, or the same settings")
    return {_label(r): r for r in saved["results"] if "error" not in r}


def render(run):
    """The markdown report of a run (what ``--out`` saved; ``--report FILE`` prints it again)."""
    settings, results = run["settings"], run["results"]
    threads, load = run.get("threads"), run["load_average"]
    limit = settings.get("memory_limit_bytes")
    busy = [r for r in results if r.get("others_cores", 0) > SKEWED]
    floor_of = ("method's own image encoder's forward on the test batch (ours, measured after it; the official "
                "code's row: ours of that method and classes)"
                if any("floor_test_batch_s" in r for r in results) else "stock image encoder's")
    header = (
        f"{settings['model']}-shaped CLIP, random weights, {'fp16' if settings['fp16'] else 'fp32'} on "
        f"{settings['device']}{f' ({threads} threads)' if threads else ''}, torch {run['torch']}; each method's "
        f"base-to-new config; class names: {run['classnames_source']}; test batch {settings['test_batch']}, "
        f"{settings['test_images_per_class']} test images per class. Peak memory: "
        f"{'CUDA allocator' if settings['fp16'] else 'peak RSS'} growth over the built trainer"
        f"{f', address space limited to {limit / 2 ** 30:.1f} GiB' if limit else ''}. × faster and ÷ official: "
        f"against the official code at the same classes and batch; (n×) after test img/s: against its test "
        f"img/s. floor s / step: the method's own image encoder alone on the training batch (forward; and backward, "
        f"fwd+bwd, where visual prompts train); × floor: s / step over it. % of floor: test img/s over the "
        f"{floor_of}. Load average {load['before'][0]:.2f} before, {load['after'][0]:.2f} after."
    )
    if settings.get("teacher_templates"):
        header += (f" PromptSRC's frozen teacher text from its first {settings['teacher_templates']} templates, "
                   "ours and the original alike (build time only: a step reads one mean feature per class).")
    if "command" in run:
        header += f"\n\nCommand: `python {run['command']}`"
    report = f"{header}\n\n{table(results)}\n"
    if busy:
        report += ("\nMeasured while other processes used the CPUs (timings inflated; cores they used on "
                   "average): " + ", ".join(f"{_label(r)} ({r['others_cores']:.2f})" for r in busy) + "\n")
    checks = targets(results)
    if checks:
        report += f"\nTargets (ours vs the official code):\n{checks}\n"
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker())
    sys.exit(main())
