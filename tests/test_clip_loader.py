"""CLIP loading: by name through the clip package's cache, from a local file, and clear errors."""
import hashlib

import pytest
import torch

from dept.clip_loader import ENV_PATH, load_clip_file, resolve_clip_file, resolve_precision


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_local_file_builds_the_same_model(tiny_clip_file):
    from dept.testing import tiny_clip

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

    with caplog.at_level(logging.INFO):
        assert resolve_precision("fp16", "cpu") == "fp32"
    assert "fp32" in caplog.text
    assert resolve_precision("fp16", "cuda") == "fp16"
    with pytest.raises(ValueError):
        resolve_precision("bf17", "cpu")
