"""CLIP loading: by name through the clip package's cache, from a local file, and clear errors."""
import hashlib

import pytest
import torch

from dept.core.clip_loader import ENV_PATH, load_clip_file, resolve_clip_file, resolve_precision


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_local_file_builds_the_same_model(tiny_clip_file):
    from dept.core.testing import tiny_clip

    model = load_clip_file(tiny_clip_file)
    reference = tiny_clip()
    assert model.dtype == torch.float16  # clip.build_model converts, as for the released weights
    for (name, a), (_, b) in zip(model.state_dict().items(), reference.state_dict().items()):
        torch.testing.assert_close(a.float(), b, atol=2e-3, rtol=2e-3, msg=name)  # fp16 rounding


def test_name_resolves_to_the_cached_file_with_its_checksum(tiny_clip_file, tmp_path, monkeypatch):
    """The real path: name -> clip's URL table -> cached file verified by SHA256 -> model."""
    import clip

    digest = sha256(tiny_clip_file)
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "tiny.pt").write_bytes(open(tiny_clip_file, "rb").read())
    monkeypatch.setitem(clip.clip._MODELS, "tiny-test", f"https://nowhere.invalid/clip/{digest}/tiny.pt")
    monkeypatch.delenv(ENV_PATH, raising=False)
    path = resolve_clip_file("tiny-test", cache_dir=str(cache))
    assert path == str(cache / "tiny.pt")
    assert load_clip_file(path).visual.input_resolution == 32


def test_missing_download_names_the_file_and_where_to_put_it(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_PATH, raising=False)
    with pytest.raises(FileNotFoundError) as err:
        resolve_clip_file("ViT-B/16", cache_dir=str(tmp_path))
    message = str(err.value)
    assert "ViT-B-16.pt" in message and str(tmp_path) in message and "MODEL.BACKBONE.PATH" in message


def test_missing_local_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        resolve_clip_file("ViT-B/16", path=str(tmp_path / "nope.pt"))


def test_environment_variable_points_at_the_weights(tiny_clip_file, monkeypatch):
    monkeypatch.setenv(ENV_PATH, tiny_clip_file)
    assert resolve_clip_file("ViT-B/16") == tiny_clip_file


def test_unknown_backbone_name_lists_the_known_ones():
    with pytest.raises(ValueError, match="ViT-B/16"):
        resolve_clip_file("ViT-Z/99")


def test_fp16_falls_back_to_fp32_without_cuda(caplog):
    import logging

    logging.disable(logging.NOTSET)  # wilds (imported by Dassl) disables INFO for the process; dept undoes it
    with caplog.at_level(logging.INFO, logger="dept.core.clip_loader"):
        assert resolve_precision("fp16", "cpu") == "fp32"
    assert "fp32" in caplog.text
    assert resolve_precision("fp16", "cuda") == "fp16"
    with pytest.raises(ValueError):
        resolve_precision("bf17", "cpu")


def not_clip_files(folder, tiny_clip_file):
    """Files people point MODEL.BACKBONE.PATH at by mistake, each with what the error must say."""
    import os

    from torch import nn

    from dept.util.checkpoint import save_checkpoint

    data = open(tiny_clip_file, "rb").read()
    files = {
        "text.pt": (b"<html><body>404 Not Found</body></html>\n", "is not a PyTorch file"),
        "empty.pt": (b"", "is empty (0 bytes)"),
        "half.pt": (data[: len(data) // 2], "truncated or damaged archive"),
    }
    for name, (content, _) in files.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(content)
    legacy = os.path.join(folder, "legacy.pt")
    torch.save(torch.load(tiny_clip_file), legacy, _use_new_zipfile_serialization=False)
    legacy_data = open(legacy, "rb").read()
    with open(os.path.join(folder, "half_legacy.pt"), "wb") as f:
        f.write(legacy_data[: len(legacy_data) // 2])
    files["half_legacy.pt"] = (None, "cannot be read")

    class Trained(nn.Module):  # what a DePT checkpoint holds: prompts and head only
        def __init__(self):
            super().__init__()
            self.prompt_learner = nn.Module()
            self.prompt_learner.ctx = nn.Parameter(torch.zeros(4, 64))
            self.dept_head = nn.Linear(64, 3)
            self.dept_head.classes = ["a", "b", "c"]

    save_checkpoint(os.path.join(folder, "run", "prompt_learner", "model.pth.tar-5"), Trained(), 5)
    files["run/prompt_learner/model.pth.tar-5"] = (None, "is a dept training checkpoint (epoch 5)")
    official = os.path.join(folder, "official.pth.tar-10")
    optim = torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9)
    torch.save({"state_dict": {"prompt_learner.ctx": torch.zeros(4, 64), "image_encoder.proj": torch.zeros(2)},
                "epoch": 10, "scheduler": {"successor": torch.optim.lr_scheduler.CosineAnnealingLR(optim, 10)},
                "optimizer": optim.state_dict()}, official)
    files["official.pth.tar-10"] = (None, "is a Dassl (official DePT/CoOp) training checkpoint (epoch 10)")
    torch.save({"weight": torch.zeros(2)}, os.path.join(folder, "other_state_dict.pt"))
    files["other_state_dict.pt"] = (None, "holds no CLIP weights")
    return {os.path.join(folder, name): what for name, (_, what) in files.items()}


def message_for(path):
    from dept.core.clip_loader import NotAClipFile

    with pytest.raises(NotAClipFile) as err:
        load_clip_file(path)
    return str(err.value)


def test_a_file_that_is_not_clip_gives_one_error_with_its_path_and_what_it_is(tmp_path, tiny_clip_file):
    from dept.core.clip_loader import NotAClipFile

    for path, what in not_clip_files(str(tmp_path), tiny_clip_file).items():
        with pytest.raises(NotAClipFile) as err:
            load_clip_file(path)
        message = str(err.value)
        assert f"'{path}'" in message and what in message, message
        if "training checkpoint" in what:
            assert "--model-dir" in message and "MODEL.BACKBONE.PATH" in message, message
    dept_checkpoint = tmp_path / "run" / "prompt_learner" / "model.pth.tar-5"
    assert f"--model-dir (here: '{tmp_path / 'run'}')" in message_for(str(dept_checkpoint))
    assert load_clip_file(str(tmp_path / "legacy.pt")).visual.input_resolution == 32  # legacy format still loads
