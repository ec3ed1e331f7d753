"""Pickled dataset caches in a shared data root are read without running anything they name.

Each payload below runs code under a plain ``pickle.load`` (checked first, so the other tests
cannot pass vacuously): it creates a marker file. Placed where a cache lives (the few-shot cache
of a split-file dataset and of ImageNet, ImageNet's ``preprocessed.pkl``), the dataset build must
not create the marker, must warn naming the file and the global, set the file aside as
``*.stale`` and rebuild a cache equal to a clean build's. Caches written by our code and by the
CoOp family's (``pickle.dump`` of Dassl ``Datum`` objects, any protocol) still load.
"""
import collections
import logging
import os
import pickle

import pytest

pytest.importorskip("dassl")

import dept.datasets  # noqa: E402,F401
from dassl.config import get_cfg_default  # noqa: E402
from dassl.data.datasets import Datum, build_dataset  # noqa: E402
from dassl.utils import set_random_seed  # noqa: E402
from dept.datasets.fewshot import fewshot_cache_path  # noqa: E402
from dept.datasets.imagenet import PREPROCESSED  # noqa: E402
from dept.datasets.safe_cache import RefusedCache, load_cache  # noqa: E402
from dept.datasets.testing import build_tree  # noqa: E402

pytestmark = pytest.mark.dassl

SHOTS, SEED = 2, 1


class _OsSystem:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch '{self.marker}'",)


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({self.marker!r}, 'w').close()",)


class EvilDatum(Datum):
    """A Datum subclass: pickled under its own name, its ``__setstate__`` runs on a plain load."""

    def __setstate__(self, state):
        open(state.pop("marker"), "w").close()
        self.__dict__.update(state)


class MarkerOnLoad:
    """Another class: its ``__setstate__`` runs on a plain load."""

    def __setstate__(self, state):
        open(state["marker"], "w").close()


def _evil_datum(marker):
    d = Datum.__new__(EvilDatum)
    d.__dict__.update(_impath="/x.jpg", _label=0, _domain=0, _classname="x", marker=marker)
    return d


def _marker_on_load(marker):
    obj = MarkerOnLoad()
    obj.__dict__["marker"] = marker
    return obj


PAYLOADS = {  # name -> (payload object for a marker path, the global the refusal must name)
    "os.system": (_OsSystem, f"{os.system.__module__}.system"),
    "builtins.eval": (_Eval, "builtins.eval"),
    "Datum subclass": (_evil_datum, f"{__name__}.EvilDatum"),
    "other class": (_marker_on_load, f"{__name__}.MarkerOnLoad"),
}
KINDS = {  # cache kind -> (dataset, the cache's path under the data root, the list the payload joins)
    "few-shot": ("DescribableTextures", lambda root: fewshot_cache_path(os.path.join(root, "dtd"), SHOTS, SEED),
                 "train"),
    "ImageNet few-shot": ("ImageNet", lambda root: fewshot_cache_path(os.path.join(root, "imagenet"), SHOTS, SEED),
                          "train"),
    "ImageNet preprocessed": ("ImageNet", lambda root: os.path.join(root, "imagenet", PREPROCESSED), "test"),
}


def make_cfg(name, root):
    cfg = get_cfg_default()
    cfg.DATASET.NAME = name
    cfg.DATASET.ROOT = str(root)
    cfg.DATASET.NUM_SHOTS = SHOTS
    cfg.SEED = SEED
    cfg.VERBOSE = False
    return cfg


def build(name, root):
    """What DataManager does first: seed (it drives few-shot sampling), then build the dataset."""
    cfg = make_cfg(name, root)
    set_random_seed(cfg.SEED)
    return build_dataset(cfg)


def records(items):
    return [(d.impath, d.label, d.domain, d.classname) for d in items]


def lists(dataset):
    return {split: records(getattr(dataset, split)) for split in ("train_x", "val", "test")}


def cache_records(path):
    return {split: records(items) for split, items in load_cache(path).items()}


@pytest.mark.parametrize("payload", PAYLOADS)
def test_each_payload_runs_code_under_a_plain_pickle_load(payload, tmp_path):
    marker = tmp_path / "marker"
    make, _ = PAYLOADS[payload]
    pickle.loads(pickle.dumps({"train": [make(str(marker))]}, protocol=pickle.HIGHEST_PROTOCOL))
    assert marker.exists()


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_a_crafted_cache_runs_nothing_is_set_aside_and_rebuilt(kind, payload, tmp_path, caplog):
    name, cache_of, split = KINDS[kind]
    make, global_name = PAYLOADS[payload]
    root, marker = tmp_path / "data", tmp_path / "marker"
    build_tree(name, root)
    clean = lists(build(name, root))
    path = cache_of(str(root))
    clean_cache = cache_records(path)

    data = load_cache(path)
    data[split].append(make(str(marker)))  # behind genuine records: nothing before it may be kept either
    with open(path, "wb") as f:
        pickle.dump(data, f, protocol=pickle.HIGHEST_PROTOCOL)
    crafted = open(path, "rb").read()

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        rebuilt = lists(build(name, root))
    assert not marker.exists()
    assert f"{path} was refused" in caplog.text and global_name in caplog.text
    assert f"set aside as {path}.stale and rebuilt" in caplog.text
    assert open(f"{path}.stale", "rb").read() == crafted
    assert rebuilt == clean
    assert cache_records(path) == clean_cache


def test_a_global_is_refused_before_its_module_is_imported(tmp_path, monkeypatch):
    marker = tmp_path / "marker"
    (tmp_path / "dept_evil_cache_module.py").write_text(f"open({str(marker)!r}, 'w').close()\nthing = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "cache.pkl"
    path.write_bytes(b"cdept_evil_cache_module\nthing\n.")  # protocol 0: GLOBAL, STOP
    with pytest.raises(RefusedCache, match="dept_evil_cache_module.thing"):
        load_cache(str(path))
    assert not marker.exists()


@pytest.mark.parametrize("bad, what", [
    ({"_impath": ["/x.jpg"], "_label": 0, "_domain": 0, "_classname": "x"}, "attributes"),
    ({"_impath": "/x.jpg", "_label": 0, "_domain": 0, "_classname": "x", "extra": 1}, "attributes"),
    ({"_impath": "/x.jpg", "_label": 0}, "attributes"),
])
def test_a_datum_with_other_attributes_is_refused(bad, what, tmp_path):
    d = Datum.__new__(Datum)
    d.__dict__.update(bad)
    path = tmp_path / "cache.pkl"
    path.write_bytes(pickle.dumps({"train": [d]}))
    with pytest.raises(RefusedCache, match=what) as err:
        load_cache(str(path))
    assert str(path) in str(err.value)


@pytest.mark.parametrize("value", [{1, 2}, b"bytes", bytearray(b"x")])
def test_values_a_cache_never_holds_are_refused(value, tmp_path):
    path = tmp_path / "cache.pkl"
    path.write_bytes(pickle.dumps({"train": [value]}, protocol=pickle.HIGHEST_PROTOCOL))
    with pytest.raises(RefusedCache, match=type(value).__name__):
        load_cache(str(path))


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_a_coop_style_cache_loads_at_every_protocol(protocol, tmp_path):
    """CoOp's datasets ``pickle.dump`` Dassl ``Datum`` objects (built by Dassl's constructor) in a
    dict; Dassl itself writes no such cache. Shared and nested objects, an OrderedDict and every
    plain value come back as they were, the Datum objects as Dassl's own class."""
    image = tmp_path / "a.jpg"
    image.write_bytes(b"")
    first = Datum(impath=str(image), label=3, domain=1, classname="cat")
    second = Datum(impath=str(image), label=4, classname="dog")
    data = {"train": [first, second, first], "val": (second,),
            "meta": collections.OrderedDict(k=[1, 2.5, True, None, "s", (1, 2)])}
    path = tmp_path / "cache.pkl"
    path.write_bytes(pickle.dumps(data, protocol=protocol))
    out = load_cache(str(path))
    assert all(type(d) is Datum for d in out["train"] + list(out["val"]))
    assert records(out["train"]) == records(data["train"]) and records(out["val"]) == records(data["val"])
    assert out["train"][0] is out["train"][2]
    assert out["meta"] == data["meta"] and type(out["meta"]) is collections.OrderedDict


@pytest.mark.parametrize("kind", KINDS)
def test_a_cache_written_by_our_code_is_reused(kind, tmp_path, caplog):
    name, cache_of, _ = KINDS[kind]
    root = tmp_path / "data"
    build_tree(name, root)
    first = lists(build(name, root))
    path = cache_of(str(root))
    written = open(path, "rb").read()
    caplog.clear()  # only the second build's messages
    with caplog.at_level(logging.INFO):
        again = lists(build(name, root))
    assert again == first
    assert "refused" not in caplog.text and "unusable" not in caplog.text and "does not match" not in caplog.text
    if kind == "ImageNet preprocessed":
        assert "listing" not in caplog.text  # the folders were not listed again
    else:
        assert f"loaded few-shot data from {path}" in caplog.text
    assert open(path, "rb").read() == written and not os.path.exists(f"{path}.stale")
