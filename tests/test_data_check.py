"""``python -m dept data check / fetch-splits / prepare-demo`` and the checksum rules."""
import hashlib
import io
import json
import os

import pytest

pytest.importorskip("dassl")

from dept.datasets import BENCHMARK, DescribableTextures, ImageNetA  # noqa: E402
from dept.datasets import check as data_check  # noqa: E402
from dept.datasets.checksums import Checksum, canonical_content, git_blob_sha1, verify_bytes  # noqa: E402
from dept.datasets.report import Piece  # noqa: E402
from dept.datasets.testing import build_tree  # noqa: E402

pytestmark = pytest.mark.dassl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPLITS = os.path.join(REPO, "..", "shared", "reference", "splits")


def run_check(root, classes=None, verify_images=False):
    out = io.StringIO()
    reports = data_check.check(str(root), classes or list(BENCHMARK), verify_images=verify_images, out=out)
    return {r.name: r for r in reports}, out.getvalue()


def test_found_missing_and_where_each_missing_piece_belongs(tmp_path):
    build_tree("DescribableTextures", tmp_path)
    reports, text = run_check(tmp_path)
    assert reports["DescribableTextures"].status == "found"
    assert [(c.split, c.listed, c.found) for c in reports["DescribableTextures"].counts] == [
        ("train", 15, 15), ("val", 9, 9), ("test", 6, 6)]
    assert all(r.status == "missing" for name, r in reports.items() if name != "DescribableTextures")
    # every missing piece: its exact place and where to get it
    assert f"{tmp_path}/caltech-101/split_zhou_Caltech101.json" in text
    assert "drive.google.com/file/d/1hyarUivQE36mY6jSomru6Fjd-JzwcCzN" in text
    assert f"{tmp_path}/imagenet/images/train" in text and "image-net.org" in text
    assert "Summary: 1 found, 0 partial, 14 missing." in text
    # the tiny split is not the official one: said, but the data is complete
    assert any("official split has 2820" in w for w in reports["DescribableTextures"].warnings)


def test_partial_when_images_or_the_split_file_are_missing(tmp_path):
    tree = build_tree("DescribableTextures", tmp_path)
    os.remove(tree.lists["test"][0][0])
    reports, text = run_check(tmp_path, [DescribableTextures])
    assert reports["DescribableTextures"].status == "partial"
    assert "1 of 6 test images listed in the split are absent" in text
    assert tree.lists["test"][0][0] in text
    os.remove(tmp_path / "dtd" / "split_zhou_DescribableTextures.json")
    reports, text = run_check(tmp_path, [DescribableTextures])
    assert reports["DescribableTextures"].status == "partial"
    assert f"missing split file: {tmp_path}/dtd/split_zhou_DescribableTextures.json" in text


def test_folder_datasets_count_against_the_official_sizes(tmp_path):
    build_tree("ImageNetA", tmp_path)
    reports, text = run_check(tmp_path, [ImageNetA])
    report = reports["ImageNetA"]
    assert report.status == "partial"  # 9 images of the official 7,500
    assert report.num_classes == 3 and report.counts[0].found == 9
    assert "test 9 (official 7,500)" in text


@pytest.mark.parametrize("name", ["FGVCAircraft", "ImageNet", "ImageNetV2", "StanfordCars", "Food101"])
def test_every_layout_is_understood(name, tmp_path):
    tree = build_tree(name, tmp_path)
    cls = next(c for c in BENCHMARK if c.__name__ == name)
    report = cls.inspect(str(tmp_path))
    assert report.num_classes == len(tree.classnames)
    assert report.counts and all(c.found == len(tree.lists[c.split]) for c in report.counts)


def test_verify_images_finds_a_truncated_file(tmp_path):
    tree = build_tree("DescribableTextures", tmp_path)
    bad = tree.lists["val"][2][0]
    with open(bad, "r+b") as f:
        f.truncate(25)
    reports, text = run_check(tmp_path, [DescribableTextures])
    assert reports["DescribableTextures"].status == "found"  # listing alone cannot tell
    reports, text = run_check(tmp_path, [DescribableTextures], verify_images=True)
    assert reports["DescribableTextures"].status == "partial"
    assert f"unreadable image: {bad}" in text


def test_main_exit_status_and_dataset_selection(tmp_path, capsys):
    build_tree("DescribableTextures", tmp_path)
    assert data_check.main(["check", "--root", str(tmp_path), "--dataset", "dtd"]) == 0
    assert data_check.main(["check", "--root", str(tmp_path), "--dataset", "DescribableTextures", "eurosat"]) == 1
    assert "[missing] EuroSAT" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        data_check.main(["check", "--root", str(tmp_path), "--dataset", "nope"])


def test_prepare_demo_then_check(tmp_path, capsys):
    pytest.importorskip("sklearn")
    assert data_check.main(["prepare-demo", "--root", str(tmp_path)]) == 0
    assert data_check.main(["check", "--root", str(tmp_path), "--dataset", "digits"]) == 0
    assert "[found  ] Digits" in capsys.readouterr().out


# -- checksums ---------------------------------------------------------------------------------------


SPLIT = {"train": [["a/1.jpg", 0, "a"]], "val": [["a/2.jpg", 0, "a"]], "test": [["b/3.jpg", 1, "b"]]}
RAW = json.dumps(SPLIT, indent=4, separators=(",", ": ")).encode()


def test_checksum_variants_are_accepted_and_other_content_is_not():
    pinned = Checksum(sha256=hashlib.sha256(RAW).hexdigest())
    assert verify_bytes(RAW, pinned) is True
    assert verify_bytes(RAW + b"\n", pinned) is True  # a copy with a trailing newline
    assert verify_bytes(RAW.replace(b'"b"', b'"c"'), pinned) is False
    assert verify_bytes(RAW, Checksum()) is None
    assert verify_bytes(RAW + b"\n", Checksum(git_blob=git_blob_sha1(RAW))) is True
    by_content = Checksum(content=hashlib.sha256(canonical_content(RAW, "json")).hexdigest())
    assert verify_bytes(json.dumps(SPLIT).encode(), by_content, "x.json") is True  # reformatted
    assert verify_bytes(b"{not json", by_content, "x.json") is False


# -- fetch-splits ------------------------------------------------------------------------------------


class FakeDataset:
    __name__ = "FakeDataset"
    dataset_dir = "fake"
    pieces = (Piece("split_zhou_Fake.json", "split file", "Drive", gdrive_id="ID1",
                    checksum=Checksum(sha256=hashlib.sha256(RAW).hexdigest())),
              Piece("images", "image folder", "somewhere", is_dir=True))


def serve(content):
    calls = []

    def download(file_id, dest):
        calls.append(file_id)
        with open(dest, "wb") as f:
            f.write(content)
        return dest

    download.calls = calls
    return download


def test_fetch_installs_a_verified_file(tmp_path):
    out = io.StringIO()
    assert data_check.fetch_splits(str(tmp_path), [FakeDataset], download=serve(RAW), out=out) == 0
    assert (tmp_path / "fake" / "split_zhou_Fake.json").read_bytes() == RAW
    assert "downloaded and verified" in out.getvalue()
    again = serve(RAW)
    data_check.fetch_splits(str(tmp_path), [FakeDataset], download=again, out=out)
    assert again.calls == [] and "already there (verified)" in out.getvalue()


def test_fetch_refuses_a_file_that_does_not_match(tmp_path):
    out = io.StringIO()
    assert data_check.fetch_splits(str(tmp_path), [FakeDataset], download=serve(b"<html>quota</html>"), out=out) == 1
    assert not (tmp_path / "fake" / "split_zhou_Fake.json").exists()
    assert (tmp_path / "fake" / "split_zhou_Fake.json.download").exists()
    assert "does not match the pinned checksum" in out.getvalue()


def test_fetch_reports_a_failed_download_with_the_manual_route(tmp_path):
    def fail(file_id, dest):
        raise OSError("Too many users have viewed or downloaded this file recently")

    out = io.StringIO()
    assert data_check.fetch_splits(str(tmp_path), [FakeDataset], download=fail, out=out) == 1
    assert "Too many users" in out.getvalue() and "drive.google.com/file/d/ID1" in out.getvalue()


def test_fetch_covers_every_drive_file_of_the_benchmark():
    files = {(cls.__name__, p.path) for cls, p in data_check.fetchable_pieces(BENCHMARK)}
    assert ("OxfordFlowers", "cat_to_name.json") in files and ("ImageNetA", "classnames.txt") in files
    split_files = {(cls.__name__, cls.split_file) for cls in BENCHMARK if cls.split_file}
    assert split_files <= files and len(split_files) == 9


def test_fetch_verifies_the_real_dtd_split(tmp_path):
    path = os.path.join(SPLITS, "split_zhou_DescribableTextures.json")
    if not os.path.exists(path):
        pytest.skip("shared reference splits are not there")
    with open(path, "rb") as f:
        real = f.read()
    out = io.StringIO()
    assert data_check.fetch_splits(str(tmp_path), [DescribableTextures], download=serve(real), out=out) == 0
    reports, _ = run_check(tmp_path, [DescribableTextures])
    assert any("matches the official file" in n for n in reports["DescribableTextures"].notes)


def test_fetch_without_network_says_where_to_get_each_file_by_hand(tmp_path):
    """What gdown raises with no network: the message gives the link and the place, not
    "run fetch-splits" (what just failed)."""
    requests = pytest.importorskip("requests")

    def offline(file_id, dest):
        raise requests.exceptions.ConnectionError("Failed to resolve 'drive.google.com'")

    out = io.StringIO()
    assert data_check.fetch_splits(str(tmp_path), [DescribableTextures, ImageNetA], download=offline, out=out) == 2
    text = out.getvalue()
    assert "fetch-splits" not in text
    assert text.count("ConnectionError: Failed to resolve") == 2
    dtd_split = os.path.join(str(tmp_path), "dtd", "split_zhou_DescribableTextures.json")
    assert "By hand: open https://drive.google.com/file/d/1u3_QfB467jqHgNXC00UIzbLZRQCg2S7x/view in a browser" in text
    assert f"save it as\n        {dtd_split}\n" in text
    assert f"copy {tmp_path}/imagenet/classnames.txt, or get" in text  # ImageNet-A: the copy route first
    assert 'DATASETS.md, section "Getting the split files by hand"' in text
    assert f"python -m dept data check --root {tmp_path}" in text
    assert not os.path.exists(dtd_split) and not os.path.exists(dtd_split + ".download")


def test_datasets_md_lists_every_drive_file_with_its_place():
    with open(os.path.join(REPO, "DATASETS.md")) as f:
        doc = f.read()
    section = doc.split(f"### {data_check.MANUAL_SECTION}\n", 1)[1].split("\n#", 1)[0]
    for cls, piece in data_check.fetchable_pieces(BENCHMARK):
        row = (f"| `{cls.dataset_dir}/{piece.path}` | {cls.__name__} | "
               f"<https://drive.google.com/file/d/{piece.gdrive_id}/view> |")
        assert row in section


def test_a_users_registered_dataset_can_be_checked_by_name(tmp_path, capsys):
    """The image-check error of any CoOpDataset names ``data check --dataset <its name>``."""
    from dassl.data.datasets import DATASET_REGISTRY

    from dept.core.registry import register

    class MyTextures(DescribableTextures):
        """A user's own dataset on the shared base."""

    register(DATASET_REGISTRY, MyTextures)
    build_tree("DescribableTextures", tmp_path)
    assert data_check.main(["check", "--root", str(tmp_path), "--dataset", "MyTextures", "--verify-images"]) == 0
    assert "[found  ] MyTextures" in capsys.readouterr().out
