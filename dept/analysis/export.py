"""One file with what a run learned: ``python -m dept export --model-dir RUN out.pt``.

A run folder holds checkpoints per epoch, optimizer states and logs, and needs its dataset to be
rebuilt (its class names come from the data). An export is what a prediction needs and nothing else:
the trained tensors (the DePT head's with the classes it was trained on), the resolved config, the
class names (and WNIDs) with the dataset's prompt templates, and the identity of the CLIP it was
trained on (name, sha256 and sizes; CLIP's weights themselves are not copied). It is plain tensors,
strings and lists, so ``torch.load(path, weights_only=True)`` reads it, and ``dept.load(path)``
rebuilds the classifier on any machine with the same CLIP file and no dataset. A CLIP file other than
the one it was trained with is refused: the learned prompts mean nothing on other weights.
"""
import contextlib
import datetime
import io
import os
import tempfile

from dept.analysis.loaded import RunError, build_trainer, check_run, needs_prompt_trainer

FORMAT = "dept/export-v1"


def export(run_dir, out, root=None):
    """Write the export of the finished run ``run_dir`` to ``out``; returns what it holds (no tensors)."""
    from dept.core.clip_loader import resolve_clip_file
    from dept.util.files import sha256, torch_save

    if not out.endswith(".pt"):
        raise RunError(f"{out}: name the export file with .pt")
    record = check_run(run_dir)
    needs_prompt_trainer(record.get("trainer") or "", "an export")
    trainer = build_trainer(run_dir, record, root, classes=None)
    backbone = trainer.cfg.MODEL.BACKBONE
    clip_file = resolve_clip_file(backbone.NAME, backbone.get("PATH", ""), backbone.get("CACHE_DIR", ""))
    dataset = trainer.dm.dataset
    head = getattr(trainer.model, "dept_head", None)
    content = {
        "format": FORMAT,
        "trainer": record["trainer"],
        "config": record["config"],
        "classes": [trainer.lab2cname[i] for i in range(trainer.num_classes)],
        "wnids": list(getattr(dataset, "wnids", None) or []) or None,
        "templates": {"template": getattr(dataset, "template", None) or "a photo of a {}.",
                      "method_templates": dict(getattr(dataset, "method_templates", None) or {}),
                      "template_in_ensemble": bool(getattr(dataset, "template_in_ensemble", True))},
        "state_dict": {name: p.detach().cpu().clone() for name, p in trainer.model.named_parameters()
                       if p.requires_grad},
        "head_classes": list(head.classes) if head is not None and getattr(trainer, "_head_trained", False) else None,
        "clip": {"name": backbone.NAME, "sha256": sha256(clip_file), "arch": trainer.clip_info["arch"]},
        "run": {"dir": os.path.abspath(run_dir), "exported": datetime.datetime.now().isoformat(timespec="seconds"),
                "result": record.get("result", {}).get("accuracy") if isinstance(record.get("result"), dict)
                else None},
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    torch_save(content, out)
    return {k: v for k, v in content.items() if k != "state_dict"} | {"tensors": sorted(content["state_dict"])}


def read_export(path):
    """The content of an export file (``RunError`` for a file that is not one, saying what it is)."""
    import pickle

    import torch

    try:
        content = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as err:
        raise RunError(f"{path} is not a dept export ({type(err).__name__}: {str(err).splitlines()[0][:200]}): "
                       "make one with python -m dept export --model-dir RUN out.pt") from None
    if not isinstance(content, dict) or content.get("format") != FORMAT:
        found = content.get("format") if isinstance(content, dict) else type(content).__name__
        raise RunError(f"{path} is not a dept export (format {found!r}, expected {FORMAT!r}); for a run folder "
                       "pass the folder itself")
    return content


def build_exported(path, clip="", class_names=None):
    """The trainer of an export, built on its classes (or ``class_names``) without data, its tensors loaded.

    ``clip``: the CLIP to use (a file, or a backbone name in the clip package's cache); default: the one
    its config names. Refused unless it is the file the export was made with (sha256).
    """
    from dassl.engine import build_trainer as dassl_build_trainer

    from dept.core.build_config import build_config
    from dept.core.class_list import ClassList, class_list
    from dept.core.clip_loader import resolve_clip_file
    from dept.util.files import sha256

    content = read_export(path)
    needs_prompt_trainer(content["trainer"], "an export")
    with tempfile.TemporaryDirectory(prefix="dept-export-") as tmp:
        config = os.path.join(tmp, "exported.yaml")
        with open(config, "w") as f:
            f.write(content["config"])
        flags = ["OUTPUT_DIR", tmp, "DATASET.SUBSAMPLE_CLASSES", "all"]
        if clip:
            flags += (["MODEL.BACKBONE.PATH", clip] if os.path.isfile(clip)
                      else ["MODEL.BACKBONE.NAME", clip, "MODEL.BACKBONE.PATH", ""])
        cfg = build_config(config, flags=flags)
        backbone = cfg.MODEL.BACKBONE
        try:
            clip_file = resolve_clip_file(backbone.NAME, backbone.get("PATH", ""), backbone.get("CACHE_DIR", ""))
        except (FileNotFoundError, ValueError) as err:
            raise RunError(f"{path}: its CLIP ({content['clip']['name']}) is not here: {err} Pass the CLIP file it was "
                           "trained with as --clip FILE (dept.load(path, clip=FILE))") from None
        digest = sha256(clip_file)
        if digest != content["clip"]["sha256"]:
            raise RunError(f"{path} was trained on CLIP {content['clip']['name']} with sha256 "
                           f"{content['clip']['sha256'][:12]}…; {clip_file} is another file (sha256 {digest[:12]}…). "
                           "Its learned prompts mean nothing on other weights: pass the CLIP file it was trained "
                           "with (--clip FILE)")
        templates = content["templates"]
        own = class_names is None
        names = ClassList(list(content["classes"]) if own else list(class_names),
                          content.get("wnids") if own else None, **templates)
        with contextlib.redirect_stdout(io.StringIO()), class_list(names):
            trainer = dassl_build_trainer(cfg)
    trainer.apply_state(dict(content["state_dict"]), {"head_classes": content.get("head_classes")})
    record = {"trainer": content["trainer"], "config": content["config"], "export": os.path.abspath(path),
              "clip": content["clip"], "run": content.get("run")}
    return trainer, record


def main(argv=None):
    """``python -m dept export --model-dir RUN out.pt [--root DATA]``."""
    import argparse
    import sys

    p = argparse.ArgumentParser(prog="python -m dept export", description=__doc__.splitlines()[0])
    p.add_argument("out", metavar="OUT.pt", help="the export file to write")
    p.add_argument("--model-dir", required=True, help="the output folder of a finished training run")
    p.add_argument("--root", default="", help="dataset root, where it is not the one the run recorded")
    args = p.parse_args(argv)
    try:
        summary = export(args.model_dir, args.out, args.root or None)
    except (RunError, ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    head = f", DePT head on {len(summary['head_classes'])} classes" if summary["head_classes"] else ""
    print(f"{args.out}: {summary['trainer']}, {len(summary['classes'])} classes, {len(summary['tensors'])} trained "
          f"tensor(s){head}, CLIP {summary['clip']['name']} (sha256 {summary['clip']['sha256'][:12]}…)")
    return 0
