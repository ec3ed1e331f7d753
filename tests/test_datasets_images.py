"""The cheap up-front image check (``find_bad_images``) and its use before training
(``DATASET.CHECK_IMAGES``): a truncated image fails the run when the dataset is built."""
import os
import random

import pytest

pytest.importorskip("dassl")

import dept.datasets  # noqa: E402,F401
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data import DataManager  # noqa: E402
from dassl.data.datasets import build_dataset  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from dept.datasets import DatasetError, UnreadableImageError  # noqa: E402
from dept.datasets.images import check_image, find_bad_images  # noqa: E402
from dept.datasets.testing import build_tree  # noqa: E402
from PIL import Image  # noqa: E402

pytestmark = pytest.mark.dassl


def noise(size=48, seed=0):
    rng = random.Random(seed)
    return Image.frombytes("RGB", (size, size), bytes(rng.randrange(256) for _ in range(size * size * 3)))


def keep_bytes(path, count=None, fraction=None, append=b""):
    """Rewrite ``path`` as its first ``count`` bytes (or ``fraction`` of them) plus ``append``."""
    with open(path, "rb") as f:
        data = f.read()
    count = int(len(data) * fraction) if fraction is not None else count
    with open(path, "wb") as f:
        f.write(data[:count] + append)


@pytest.fixture
def images(tmp_path):
    """One file per case, name -> path; "good_*" ones are readable, the rest are not."""
    made = {}

    def image(name, ext, damage=None):
        path = str(tmp_path / f"{name}.{ext}")
        noise(seed=len(made)).save(path)
        if damage:
            damage(path)
        made[name] = path

    image("good_png", "png")
    image("good_jpg", "jpg")
    image("good_jpg_nul_padded", "jpg", lambda p: keep_bytes(p, fraction=1.0, append=bytes(300)))
    image("good_png_long_nul_padding", "png", lambda p: keep_bytes(p, fraction=1.0, append=bytes(10000)))
    image("good_jpg_bytes_after_eoi", "jpg", lambda p: keep_bytes(p, fraction=1.0, append=b"camera data"))
    image("truncated_jpg", "jpg", lambda p: keep_bytes(p, fraction=0.6))
    image("truncated_jpg_padded", "jpg", lambda p: keep_bytes(p, fraction=0.6, append=bytes(5000)))
    image("truncated_png", "png", lambda p: keep_bytes(p, fraction=0.6))
    image("header_only_jpg", "jpg", lambda p: keep_bytes(p, count=20))
    image("empty", "jpg", lambda p: keep_bytes(p, count=0))
    image("html", "jpg", lambda p: open(p, "w").write("<html>Too many users have viewed this file</html>"))
    made["absent"] = str(tmp_path / "absent.png")
    return made


def test_quick_check_finds_truncated_empty_absent_and_non_images(images):
    bad = dict(find_bad_images(list(images.values())))
    assert set(bad) == {p for name, p in images.items() if not name.startswith("good")}
    assert "end-of-image marker (FF D9)" in bad[images["truncated_jpg"]]
    assert bad[images["truncated_jpg_padded"]] == ("no JPEG end-of-image marker (FF D9) before the 5000 zero "
                                                   "bytes that end the file: a truncated download")
    assert "IEND" in bad[images["truncated_png"]]
    assert bad[images["empty"]] == "empty file (0 bytes)"
    assert "FileNotFoundError" in bad[images["absent"]]
    assert images["html"] in bad[images["html"]]  # PIL's message names the file


def test_quick_refuses_only_what_full_refuses(images):
    """A file whose end is wrong but which PIL decodes is refused only when it ends in zero padding
    (a cut download in a preallocated file: it decodes, as garbage); other trailing bytes pass."""
    paths = list(images.values())
    quick, full = dict(find_bad_images(paths, "quick")), dict(find_bad_images(paths, "full"))
    assert set(quick) == set(full)
    decodable = {p for p in paths if check_image(p) is None}
    assert decodable & set(quick) == {images["truncated_jpg_padded"]}
    assert images["good_jpg_bytes_after_eoi"] in decodable


def test_full_mode_finds_damage_that_leaves_the_ends_intact(tmp_path):
    path = str(tmp_path / "corrupt.png")
    noise(seed=1).save(path)
    with open(path, "r+b") as f:  # zero 200 bytes of image data in the middle: header and IEND intact
        f.seek(os.path.getsize(path) // 2)
        f.write(bytes(200))
    assert find_bad_images([path], "quick") == []
    ((found, reason),) = find_bad_images([path], "full")
    assert found == path and "OSError" in reason


def test_order_is_kept_and_each_path_reported_once(images):
    paths = [images["empty"], images["good_png"], images["absent"], images["empty"]]
    assert [p for p, _ in find_bad_images(paths, workers=3)] == [images["empty"], images["absent"]]
    with pytest.raises(ValueError, match="mode"):
        find_bad_images(paths, "fast")


# -- before training ----------------------------------------------------------------------------


def make_cfg(root, check=None, shots=-1, subsample="all", name="DescribableTextures"):
    cfg = get_cfg_default()
    cfg.DATASET.SUBSAMPLE_CLASSES = subsample
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = shots
    cfg.SEED = 1
    cfg.VERBOSE = False
    if check is not None:  # absent: the dataset reads it with getattr, default "quick"
        cfg.DATASET.CHECK_IMAGES = check
    return cfg


def test_a_truncated_test_image_fails_the_dataset_before_training(tmp_path):
    tree = build_tree("DescribableTextures", tmp_path)
    bad = tree.lists["test"][4][0]
    noise().save(bad)  # big enough that half the file is past the header
    keep_bytes(bad, fraction=0.5)
    with pytest.raises(UnreadableImageError) as err:
        set_random_seed(1)
        DataManager(make_cfg(tmp_path))
    assert isinstance(err.value, DatasetError)
    message = str(err.value)
    assert message.startswith("DescribableTextures: 1 of 30 images this run would read are unreadable")
    assert bad in message and "end-of-image marker" in message
    assert f"python -m dept data check --verify-images --root {tmp_path} --dataset DescribableTextures" in message
    assert build_dataset(make_cfg(tmp_path, check="none")).test  # "none" skips the check


def test_only_the_images_the_run_reads_are_checked(tmp_path):
    tree = build_tree("DescribableTextures", tmp_path)
    unread = next(p for p, _, name in tree.lists["train"] if name == "braided")  # a new class
    keep_bytes(unread, count=0)
    set_random_seed(1)
    build_dataset(make_cfg(tmp_path, shots=2, subsample="base"))
    with pytest.raises(UnreadableImageError, match="empty file"):
        build_dataset(make_cfg(tmp_path, shots=-1, subsample="new"))


def test_full_mode_and_an_unknown_mode(tmp_path):
    tree = build_tree("EuroSAT", tmp_path)
    build_dataset(make_cfg(tmp_path, check="full", name="EuroSAT"))
    keep_bytes(tree.lists["val"][0][0], fraction=0.7)
    with pytest.raises(UnreadableImageError, match="CHECK_IMAGES full"):
        build_dataset(make_cfg(tmp_path, check="full", name="EuroSAT"))
    with pytest.raises(ValueError, match="DATASET.CHECK_IMAGES must be one of"):
        build_dataset(make_cfg(tmp_path, check="fast", name="EuroSAT"))


def test_test_only_sets_check_their_one_list_once(tmp_path):
    tree = build_tree("ImageNetA", tmp_path)  # train_x and test are the same list
    keep_bytes(tree.lists["test"][0][0], count=0)
    with pytest.raises(UnreadableImageError, match="1 of 9 images"):
        build_dataset(make_cfg(tmp_path, name="ImageNetA"))


# -- only the decoders of photos ---------------------------------------------------------------
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\nnewpath 0 0 moveto 8 8 lineto stroke\nshowpage\n%%EOF\n"


def test_files_of_other_formats_never_reach_their_decoders(tmp_path):
    """A PostScript file (which PIL would hand to Ghostscript) or a Photoshop file in a data folder
    is "not an image" to every reader of the package, though PIL itself identifies it."""
    import io

    from dept.analysis.predict import read_image
    from dept.util.images import open_image

    eps = tmp_path / "cat.jpg"
    eps.write_bytes(EPS)
    psd = tmp_path / "dog.png"
    buffer = io.BytesIO()
    noise(8).save(buffer, "TGA")  # a format PIL reads and photos are not in
    psd.write_bytes(buffer.getvalue())
    assert Image.open(eps).format == "EPS"  # what an unrestricted open would decode
    for path in (eps, psd):
        with pytest.raises(OSError, match="other formats are not read"):
            open_image(path)
        assert "other formats are not read" in check_image(str(path))
        with pytest.raises(OSError):
            read_image(str(path))
    assert [p for p, _ in find_bad_images([str(eps), str(psd)], "quick")] == [str(eps), str(psd)]
    noise(8).save(tmp_path / "ok.png")
    with open_image(tmp_path / "ok.png") as img:
        assert img.format == "PNG" and check_image(str(tmp_path / "ok.png")) is None


def test_a_file_of_another_format_fails_in_the_loader_too_when_the_check_is_off(tmp_path):
    from dassl.data.data_manager import build_data_loader
    from dept.datasets.images import CheckedDatasetWrapper

    tree = build_tree("DescribableTextures", tmp_path)
    bad = tree.lists["test"][0][0]
    with open(bad, "wb") as f:
        f.write(EPS)
    cfg = make_cfg(tmp_path, check="none")
    dataset = build_dataset(cfg)
    loader = build_data_loader(cfg, sampler_type="SequentialSampler", data_source=dataset.test, batch_size=4,
                               tfm=None, is_train=False, dataset_wrapper=CheckedDatasetWrapper)
    with pytest.raises(UnreadableImageError, match="other formats are not read"):
        next(iter(loader))
