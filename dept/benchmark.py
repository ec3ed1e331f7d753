"""Speed and memory of CoOp and CoOp + DePT training and testing, per text-encoding path.

For each number of classes, each method (CoOp, CoOp + DePT) and each text-encoding path (full 77
positions, truncated at the last EOT, shared prefix) it reports, on a ViT-B/16-shaped CLIP with
random weights (fp32 on CPU, fp16 with ``--device cuda``):

* **step s**: seconds per training step (batch 4: image encoder forward, text encoder forward and
  backward, losses, SGD step), the median of the timed steps after warm-up;
* **peak**: peak memory of the training steps. On CPU, each configuration runs in a fresh process
  and this is the peak resident set size (``VmHWM``, reset after the model is built) minus the
  resident size after the model and optimizer were built: activations kept for backward,
  gradients, optimizer state and allocator slack; ``total`` is the process's peak RSS with the
  model's weights. On CUDA: ``torch.cuda.max_memory_allocated`` minus what was allocated after the
  build;
* **test img/s**: images per second of an evaluation over ``--test-images-per-class`` images per
  class in batches of 100, text features computed once per evaluation: the measured time of that
  one text encoding plus, per batch, the measured image-encoder time (the floor) and the measured
  logits time. The **floor** is the image encoder alone on a batch of 100.

With ``--official-dir`` pointing at a local checkout of the official DePT code (Koorye/DePT; never
a dependency of this project), its ``trainers/elp_coop.py:CustomCLIP`` is measured the same way,
built from the same random CLIP, with the config of its ``train.py:extend_cfg``. Its test
throughput is measured directly: it encodes the text for every test batch.

Usage::

    python scripts/benchmark.py --classes 50 500 1000 --official-dir ../ext/Koorye+DePT --out results.json
    python scripts/benchmark.py --quick          # a tiny CLIP, seconds: checks that it runs
"""
import argparse
import ast
import contextlib
import gc
import importlib
import json
import logging
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
import types

import torch

logger = logging.getLogger(__name__)

PATHS = ("full", "truncated", "shared_prefix")
PATH_LABELS = {"full": "full (77)", "truncated": "truncated", "shared_prefix": "shared prefix"}
METHODS = {"coop": "CoOp", "dept": "CoOp+DePT"}
VIT_B16 = dict(embed_dim=512, image_resolution=224, vision_layers=12, vision_width=768, vision_patch_size=16,
               context_length=77, vocab_size=49408, transformer_width=512, transformer_heads=8,
               transformer_layers=12)
RESULT_TAG = "BENCHMARK_RESULT "

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
    """Run ``fn`` ``warmup`` times, then time up to ``repeats`` runs (at least one; no new run once
    the timed runs took ``budget`` seconds). Returns the list of timed seconds."""
    for _ in range(warmup):
        fn()
    times = []
    while len(times) < max(1, repeats) and (not times or sum(times) < budget):
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return times


# -- models ----------------------------------------------------------------------------------
def build_clip(job, device):
    """The same random CLIP in every process: ViT-B/16 shape (or the tiny test model), fixed seed."""
    if job["model"] == "tiny":
        from dept.testing import tiny_clip

        model = tiny_clip(seed=job["seed"])
    else:
        from clip.model import CLIP

        torch.manual_seed(job["seed"])
        model = CLIP(**VIT_B16)
        model.initialize_parameters()
    model = model.to(device).eval()
    if job["fp16"]:
        from clip.model import convert_weights

        convert_weights(model)
    for param in model.parameters():
        param.requires_grad_(False)
    return model


def dassl_cfg():
    from dassl.config import get_cfg_default

    from dept.config import add_dept_config

    cfg = add_dept_config(get_cfg_default())
    cfg.OPTIM.NAME = "sgd"  # the official CoOp/DePT configs: SGD, LR 0.0035, momentum 0.9, wd 5e-4
    cfg.OPTIM.LR = 0.0035
    return cfg


def build_ours(job, clip_model):
    from dept.config import dept_options
    from dept.head import DePTHead
    from dept.model import PromptCLIP
    from dept.optim import build_optimizer

    cfg = dassl_cfg()
    cfg.TRAINER.COOP.N_CTX = job["n_ctx"]
    opts = dept_options(cfg)
    model = PromptCLIP(clip_model, job["classnames"], cfg.TRAINER.COOP)
    if job["method"] == "dept":
        model.dept_head = DePTHead.from_options(model.embed_dim, job["classnames"], opts)
    model.text_encoding = job["path"]
    for name, param in model.named_parameters():
        param.requires_grad_(name.startswith(("prompt_learner.", "dept_head.")))
    model.to(clip_model.logit_scale.device)
    return model, build_optimizer(model, cfg.OPTIM, opts)


@contextlib.contextmanager
def _official_imports(official_dir):
    """Make the official code importable in this process without touching anything of ours.

    Its modules import ``plotnine`` (unused; not installed): an empty stand-in is inserted. Its
    ``trainers`` package registers ``CoOp`` etc. in Dassl's registry, where ours already are: the
    registry is emptied for the import and restored after. ``clip`` stays the installed package.
    """
    import clip  # noqa: F401  (the official ``from clip import clip`` must find the installed one)
    from dassl.engine import TRAINER_REGISTRY

    stand_in = types.ModuleType("plotnine")
    stand_in.__all__ = []
    sys.modules.setdefault("plotnine", stand_in)
    shadowed = {name: sys.modules.pop(name) for name in ("trainers", "utils") if name in sys.modules}
    registered = dict(TRAINER_REGISTRY._obj_map)
    TRAINER_REGISTRY._obj_map.clear()
    sys.path.insert(0, official_dir)
    try:
        yield
    finally:
        sys.path.remove(official_dir)
        TRAINER_REGISTRY._obj_map.clear()
        TRAINER_REGISTRY._obj_map.update(registered)
        sys.modules.update(shadowed)


def official_extend_cfg(official_dir):
    """The official ``train.py:extend_cfg``, read from its source (train.py itself imports datasets)."""
    path = os.path.join(official_dir, "train.py")
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    function = next(node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name == "extend_cfg")
    namespace = {}
    exec(compile(ast.Module(body=[function], type_ignores=[]), path, "exec"), namespace)
    return namespace["extend_cfg"]


def build_official(job, clip_model):
    """The official CoOp + DePT model and optimizer, as its ``ExtrasLinearProbeCoOp.build_model``."""
    from dassl.config import get_cfg_default

    official_dir = os.path.abspath(job["official_dir"])
    with _official_imports(official_dir):
        elp_coop = importlib.import_module("trainers.elp_coop")
        official_optim = importlib.import_module("trainers.optim")
    cfg = get_cfg_default()
    official_extend_cfg(official_dir)(cfg)
    cfg.DATASET.SUBSAMPLE_CLASSES = "base"  # train on base classes: the CAT head is built and used
    cfg.DATASET.NAME = "Benchmark"
    cfg.TRAINER.COOP.N_CTX = job["n_ctx"]
    cfg.TRAINER.COOP.PREC = "fp16" if job["fp16"] else "fp32"
    cfg.INPUT.SIZE = (clip_model.visual.input_resolution,) * 2
    model = elp_coop.CustomCLIP(cfg, job["classnames"], clip_model)
    for name, param in model.named_parameters():
        param.requires_grad_(any(key in name for key in cfg.TRAINER.NAMES_TO_UPDATE))
    model.to(clip_model.logit_scale.device)
    optim, _ = official_optim.build_optimizer(model, cfg.OPTIM)
    return model, optim


# -- one configuration -----------------------------------------------------------------------
def run_job(job):
    """Measure one configuration in this process; returns a dict of figures."""
    device = torch.device(job["device"])
    torch.manual_seed(job["seed"])
    clip_model = build_clip(job, device)
    dtype = clip_model.dtype
    size = clip_model.visual.input_resolution
    result = {k: job[k] for k in ("kind", "method", "path", "classes") if k in job}
    generator = torch.Generator().manual_seed(job["seed"])
    test_images = torch.randn(job["test_batch"], 3, size, size, generator=generator).to(device, dtype)

    if job["kind"] == "floor":
        encoder = clip_model.visual
        with torch.no_grad():
            times = timed(lambda: encoder(test_images), device, 1, job["eval_repeats"], job["budget"])
        result.update(floor_batch_s=statistics.median(times), floor_repeats=len(times))
        return result

    official = job["kind"] == "official"
    model, optim = (build_official if official else build_ours)(job, clip_model)
    classes = len(job["classnames"])
    images = torch.randn(job["batch"], 3, size, size, generator=generator).to(device, dtype)
    labels = torch.randint(classes, (job["batch"],), generator=generator).to(device)

    def step():
        if official:
            loss = model(images, labels)
        else:
            image_features = model.encode_image(images)
            text_features = model.encode_text()
            itm = model.itm_logits(image_features, text_features)
            if model.dept_head is not None:
                losses = model.dept_head.losses(itm, image_features, text_features, labels, model.logit_scale)
            else:
                losses = {"itm": torch.nn.functional.cross_entropy(itm.float(), labels)}
            loss = sum(losses.values())
        optim.zero_grad()
        loss.backward()
        optim.step()

    # Test time first (no autograd), so that it is reported even where training runs out of memory.
    model.eval()
    with torch.no_grad():
        if official:  # its test forward encodes the text of every class for every batch
            batch_times = timed(lambda: model(test_images), device, 0, job["eval_repeats"], job["budget"])
            result.update(official_test_batch_s=statistics.median(batch_times))
        else:
            text_times = timed(model.encode_text, device, 1, job["eval_repeats"], job["budget"])
            image_features = torch.randn(job["test_batch"], model.embed_dim, generator=generator).to(device, dtype)
            with model.cached_text_features():
                text_features = model.encode_text()

                def logits():
                    itm = model.itm_logits(image_features, text_features)
                    return model.dept_head.predict(itm, image_features, text_features, model.logit_scale) \
                        if model.dept_head is not None else itm

                logit_times = timed(logits, device, 1, job["eval_repeats"], job["budget"])
            result.update(text_once_s=statistics.median(text_times), logits_batch_s=statistics.median(logit_times))

    model.train()
    memory = PeakMemory(device)
    memory.start()
    try:
        times = timed(step, device, job["warmup"], job["steps"], job["budget"])
    except (RuntimeError, MemoryError) as error:
        if not _out_of_memory(error):
            raise
        result.update(error=f"out of memory in training{_limit_note(job)}", error_detail=str(error)[:300])
        return result
    growth, total = memory.peak()
    result.update(step_s=statistics.median(times), steps_timed=len(times), step_times=times,
                  peak_growth_bytes=growth, peak_total_bytes=total, memory_method=memory.method)
    return result


def _limit_note(job):
    limit = job.get("memory_limit_bytes")
    return f" (limit {limit / 2 ** 30:.1f} GiB)" if limit else ""


def _out_of_memory(error):
    text = str(error)
    return isinstance(error, MemoryError) or "alloc" in text or "out of memory" in text


def _worker():
    """``python -m dept.benchmark --worker``: one job (JSON on stdin), its figures on stdout's last line."""
    job = json.loads(sys.stdin.read())
    limit = job.get("memory_limit_bytes")
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    try:
        result = run_job(job)
    except (RuntimeError, MemoryError) as error:
        if not _out_of_memory(error):
            raise
        result = {k: job.get(k) for k in ("kind", "method", "path", "classes")}
        result.update(error=f"out of memory{_limit_note(job)}", error_detail=str(error)[:300])
    sys.stdout.write("\n" + RESULT_TAG + json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


def measure(job, isolate):
    """Run one job in a fresh process (so that peak memory is this job's alone) or in this one."""
    label = "/".join(str(job.get(k)) for k in ("kind", "classes", "method", "path") if job.get(k) is not None)
    logger.info("measuring %s ...", label)
    start = time.perf_counter()
    if not isolate:
        result = run_job(job)
    else:
        proc = subprocess.run([sys.executable, "-m", "dept.benchmark", "--worker"], input=json.dumps(job),
                              capture_output=True, text=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith(RESULT_TAG)]
        if lines:
            result = json.loads(lines[-1][len(RESULT_TAG):])
        else:
            reason = (f"killed by signal {-proc.returncode} (likely out of memory)" if proc.returncode < 0
                      else f"exit {proc.returncode}: {proc.stderr.strip().splitlines()[-1:] or ''}")
            logger.warning("%s failed: %s\n%s", label, reason, proc.stderr[-2000:])
            result = {k: job.get(k) for k in ("kind", "method", "path", "classes")}
            result["error"] = reason
    logger.info("  done in %.0f s: %s", time.perf_counter() - start,
                {k: (round(v, 3) if isinstance(v, float) else v) for k, v in result.items() if k != "step_times"})
    return result


# -- report ----------------------------------------------------------------------------------
def _fmt(value, spec):
    return "n/a" if value is None else format(value, spec)


def add_throughput(results, settings):
    """Test images per second of a whole evaluation, and its fraction of the image-encoder floor."""
    floor = next((r for r in results if r.get("kind") == "floor" and "floor_batch_s" in r), None)
    if floor is None:
        return
    t_floor, batch = floor["floor_batch_s"], settings["test_batch"]
    floor["test_img_s"] = batch / t_floor
    for r in results:
        if "text_once_s" in r:
            images = settings["test_images_per_class"] * r["classes"]
            batches = math.ceil(images / batch)
            r["test_images"] = images
            r["test_img_s"] = images / (r["text_once_s"] + batches * (t_floor + r["logits_batch_s"]))
        elif "official_test_batch_s" in r:
            r["test_img_s"] = batch / r["official_test_batch_s"]
        if "test_img_s" in r:
            r["floor_fraction"] = r["test_img_s"] / floor["test_img_s"]


def table(results):
    official = {r["classes"]: r for r in results if r.get("kind") == "official" and "step_s" in r}
    lines = [
        "| classes | method | text encoding | step s (n) | × faster than official | peak MB (growth) | "
        "÷ official | peak MB (total) | text once s | test img/s | % of floor |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        if r.get("kind") == "floor":
            lines.append(f"| - | image encoder only | (floor) | | | | | | | {_fmt(r.get('test_img_s'), '.2f')} | 100 |")
            continue
        ref = official.get(r["classes"])
        name = "CoOp+DePT (official code)" if r["kind"] == "official" else METHODS[r["method"]]
        path = "full (77), text per test batch" if r["kind"] == "official" else PATH_LABELS[r["path"]]
        if "step_s" in r:
            mb = 2 ** 20
            speedup = ref["step_s"] / r["step_s"] if ref else None
            mem = r["peak_growth_bytes"] / ref["peak_growth_bytes"] if ref and ref.get("peak_growth_bytes") else None
            train = (f"{r['step_s']:.3f} ({r['steps_timed']}) | {_fmt(speedup, '.1f')} | "
                     f"{r['peak_growth_bytes'] / mb:,.0f} | {_fmt(mem, '.3f')} | {r['peak_total_bytes'] / mb:,.0f}")
        else:
            train = f"{r.get('error', 'n/a')} | | | |"
        lines.append(
            f"| {r['classes']} | {name} | {path} | {train} | {_fmt(r.get('text_once_s'), '.3f')} | "
            f"{_fmt(r.get('test_img_s'), '.2f')} | "
            f"{_fmt(100 * r['floor_fraction'] if 'floor_fraction' in r else None, '.1f')} |"
        )
    return "\n".join(lines)


def targets(results):
    """The issue's targets (CoOp + DePT, shared prefix vs the official code), each met or missed."""
    def find(kind, classes, path=None, key="step_s"):
        return next((r for r in results if r.get("kind") == kind and r.get("classes") == classes
                     and (path is None or r.get("path") == path) and r.get("method", "dept") == "dept"
                     and key in r), None)

    lines = []
    for classes, speed in ((500, 6.0), (50, 2.0)):
        ours, ref = find("ours", classes, "shared_prefix"), find("official", classes)
        if ours and ref:
            ratio = ref["step_s"] / ours["step_s"]
            lines.append(f"- {classes} classes: training step {ratio:.1f}× faster than the official code "
                         f"(target ≥ {speed:g}×): {'met' if ratio >= speed else 'MISSED'}")
            if classes == 500:
                frac = ours["peak_growth_bytes"] / ref["peak_growth_bytes"]
                lines.append(f"- 500 classes: peak memory growth {frac:.3f} of the official code's "
                             f"(target ≤ 1/3): {'met' if frac <= 1 / 3 else 'MISSED'}")
    ours = find("ours", 500, "shared_prefix", "floor_fraction")
    if ours:
        frac = ours["floor_fraction"]
        lines.append(f"- 500 classes: test throughput {100 * frac:.1f}% of the image-encoder floor "
                     f"(target ≥ 95%): {'met' if frac >= 0.95 else 'MISSED'}")
    ref = find("official", 500, key="floor_fraction")
    if ref:
        lines.append(f"- 500 classes: the official code's test throughput is {100 * ref['floor_fraction']:.1f}% "
                     "of the floor (it encodes the text for every test batch)")
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------
def parse_args(argv):
    parser = argparse.ArgumentParser(prog="scripts/benchmark.py", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[50, 500, 1000], help="numbers of classes")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    parser.add_argument("--paths", nargs="+", choices=PATHS, default=list(PATHS), help="text-encoding paths")
    parser.add_argument("--official-dir", default="", help="a local checkout of Koorye/DePT to measure beside ours")
    parser.add_argument("--device", default="cpu", help="cpu (fp32) or cuda (fp16)")
    parser.add_argument("--batch", type=int, default=4, help="training batch size")
    parser.add_argument("--test-batch", type=int, default=100, help="test batch size")
    parser.add_argument("--test-images-per-class", type=int, default=50,
                        help="evaluation size per class, for test img/s (ImageNet's val set: 50)")
    parser.add_argument("--n-ctx", type=int, default=16, help="context length M (the official CoOp/DePT: 16)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--steps", "--repeats", dest="steps", type=int, default=3, help="timed training steps")
    parser.add_argument("--eval-repeats", type=int, default=2, help="timed repeats of test-time measurements")
    parser.add_argument("--budget", type=float, default=60.0,
                        help="seconds after which no further timed repeat starts (at least one always runs)")
    parser.add_argument("--classnames", default="", help="file of class names (one per line, or CoOp's "
                        "'wnid name' classnames.txt); the first N are used. Default: generated, ImageNet-like")
    parser.add_argument("--memory-limit-gb", type=float, default=None,
                        help="address-space limit per measurement on CPU (default: 90%% of available memory, plus "
                             "what a torch process maps without using; 0 = none), so that a configuration too big "
                             "for this machine fails cleanly instead of waking the kernel's OOM killer")
    parser.add_argument("--in-process", action="store_true",
                        help="measure in this process (faster; peak memory then is not per configuration)")
    parser.add_argument("--quick", action="store_true", help="tiny CLIP, 5 classes, one step: checks that it runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="", help="also write every figure as JSON here")
    parser.add_argument("--report", default="", help="print the report of a saved --out file and exit")
    args = parser.parse_args(argv)
    if args.quick:
        args.classes = [5] if args.classes == [50, 500, 1000] else args.classes
        args.steps, args.eval_repeats, args.warmup = 1, 1, 1
        args.test_batch = min(args.test_batch, 8)
        args.n_ctx = min(args.n_ctx, 4)
    return args


def _available_memory():
    try:
        return _read_kb("/proc/meminfo", "MemAvailable")
    except OSError:
        return None


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.report:
        with open(args.report) as f:
            sys.stdout.write(render(json.load(f)))
        return 0
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="[benchmark] %(message)s", stream=sys.stderr)
    for name in ("dept.prompts", "dept.optim"):  # one line per model built: noise here
        logging.getLogger(name).setLevel(logging.WARNING)
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
    names = read_classnames(args.classnames) if args.classnames else default_classnames(max(args.classes), args.seed)
    if len(names) < max(args.classes):
        raise SystemExit(f"{args.classnames} has {len(names)} class names; --classes asks for {max(args.classes)}")
    settings = dict(model="tiny" if args.quick else "ViT-B/16", device=str(device), fp16=fp16, seed=args.seed,
                    batch=args.batch, test_batch=args.test_batch, n_ctx=args.n_ctx, warmup=args.warmup,
                    steps=args.steps, eval_repeats=args.eval_repeats, budget=args.budget,
                    test_images_per_class=args.test_images_per_class, memory_limit_bytes=limit,
                    official_dir=os.path.abspath(args.official_dir) if args.official_dir else "")
    jobs = [dict(settings, kind="floor")]
    for classes in args.classes:
        common = dict(settings, classes=classes, classnames=names[:classes])
        for method in args.methods:
            for path in args.paths:
                jobs.append(dict(common, kind="ours", method=method, path=path))
        if args.official_dir:
            jobs.append(dict(common, kind="official", method="dept", path="full"))
    load_before = os.getloadavg()
    results = [measure(job, isolate=not args.in_process) for job in jobs]
    load_after = os.getloadavg()
    add_throughput(results, settings)

    run = {"settings": settings, "torch": torch.__version__,
           "threads": torch.get_num_threads() if device.type == "cpu" else None,
           "load_average": {"before": load_before, "after": load_after},
           "classnames_source": args.classnames or "generated", "results": results}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(run, f, indent=1)
    sys.stdout.write(render(run))
    return 0


def render(run):
    """The markdown report of a run (what ``--out`` saved; ``--report FILE`` prints it again)."""
    settings, results = run["settings"], run["results"]
    threads, load = run.get("threads"), run["load_average"]
    limit = settings.get("memory_limit_bytes")
    header = (
        f"{settings['model']}-shaped CLIP, random weights, {'fp16' if settings['fp16'] else 'fp32'} on "
        f"{settings['device']}{f' ({threads} threads)' if threads else ''}, torch {run['torch']}; training batch "
        f"{settings['batch']}, M = {settings['n_ctx']}, class names: {run['classnames_source']}; test batch "
        f"{settings['test_batch']}, {settings['test_images_per_class']} test images per class. Peak memory: "
        f"{'CUDA allocator' if settings['fp16'] else 'peak RSS'} growth over the built model"
        f"{f', address space limited to {limit / 2 ** 30:.1f} GiB' if limit else ''}. Load average "
        f"{load['before'][0]:.2f} before, {load['after'][0]:.2f} after (other processes skew timings)."
    )
    report = f"{header}\n\n{table(results)}\n"
    checks = targets(results)
    if checks:
        report += f"\nTargets (CoOp+DePT, shared prefix vs the official code):\n{checks}\n"
    return report


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        sys.exit(_worker())
    sys.exit(main())
