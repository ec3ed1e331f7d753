"""Tiny trees in each dataset's exact on-disk layout, for tests (ours, and a user's own).

``build_tree(name, root)`` writes a few classes of 4x4 images for dataset ``name`` under
``root`` with the real folder names, file-name patterns and split/list files (the formats of
the real ones, with real class names), and returns a ``TinyTree`` that says what the loader
must produce. Every builder is registered in ``BUILDERS``, so a test that loops over it
covers every dataset.
"""
import json
import os
import random
from dataclasses import dataclass, field

from PIL import Image

from .splits import SPLITS

PER_CLASS = {"train": 5, "val": 3, "test": 2}


@dataclass
class TinyTree:
    """What was written: the data root and the lists the loader must return (all classes)."""

    name: str
    root: str
    classnames: list  # label order
    lists: dict = field(default_factory=dict)  # split -> [(absolute impath, label, classname)]
    extra: dict = field(default_factory=dict)  # dataset-specific facts (e.g. source_labels)

    def sizes(self):
        return {split: len(items) for split, items in self.lists.items()}


def write_image(path, seed=0):
    """A 4x4 image at ``path`` (format from the extension); a distinct colour per seed."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    rng = random.Random(seed)
    Image.new("RGB", (4, 4), tuple(rng.randrange(256) for _ in range(3))).save(path)


def _split_tree(name, root, folder, image_subdir, split_file, classes, relpath):
    """A split-file dataset: ``classes`` = [(key, classname)], ``relpath(key, split, i)``."""
    dataset_dir = os.path.join(root, folder)
    image_dir = os.path.join(dataset_dir, image_subdir) if image_subdir else dataset_dir
    rng = random.Random(len(name))
    split = {key: [] for key in SPLITS}
    for label, (key, classname) in enumerate(classes):
        for s in SPLITS:
            rows = [[relpath(key, s, i), label, classname] for i in range(PER_CLASS[s])]
            rng.shuffle(rows)  # the real files are shuffled within a class
            split[s] += rows
    seed = 0
    for s in SPLITS:
        for rel, _, _ in split[s]:
            write_image(os.path.join(image_dir, rel), seed)
            seed += 1
    with open(os.path.join(dataset_dir, split_file), "w") as f:
        json.dump(split, f, indent=4, separators=(",", ": "))
    lists = {s: [(os.path.join(image_dir, r), y, c) for r, y, c in split[s]] for s in SPLITS}
    return TinyTree(name, root, [c for _, c in classes], lists)


def dtd(root):
    classes = [(c, c) for c in ("banded", "blotchy", "braided")]
    return _split_tree("DescribableTextures", root, "dtd", "images", "split_zhou_DescribableTextures.json",
                       classes, lambda k, s, i: f"{k}/{k}_{s}{i:03d}.jpg")


def caltech101(root):
    classes = [("Faces", "face"), ("Leopards", "leopard"), ("accordion", "accordion")]
    return _split_tree("Caltech101", root, "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                       classes, lambda k, s, i: f"{k}/image_{s}{i:03d}.jpg")


def oxford_pets(root):
    classes = [("Abyssinian", "abyssinian"), ("american_bulldog", "american_bulldog"),
               ("yorkshire_terrier", "yorkshire_terrier")]
    return _split_tree("OxfordPets", root, "oxford_pets", "images", "split_zhou_OxfordPets.json",
                       classes, lambda k, s, i: f"{k}_{s}{i}.jpg")


def stanford_cars(root):
    classes = [(0, "2000 AM General Hummer SUV"), (1, "2012 Acura RL Sedan"), (2, "2012 Audi TTS Coupe")]

    def rel(k, s, i):
        folder = "cars_test" if s == "test" else "cars_train"
        return f"{folder}/{k}{SPLITS.index(s)}{i:03d}.jpg"

    return _split_tree("StanfordCars", root, "stanford_cars", "", "split_zhou_StanfordCars.json", classes, rel)


def oxford_flowers(root):
    classes = [(0, "pink primrose"), (1, "hard-leaved pocket orchid"), (2, "canterbury bells")]
    tree = _split_tree("OxfordFlowers", root, "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", classes,
                       lambda k, s, i: f"image_{k * 100 + SPLITS.index(s) * 10 + i + 1:05d}.jpg")
    with open(os.path.join(root, "oxford_flowers", "cat_to_name.json"), "w") as f:
        json.dump({str(k + 1): c for k, c in classes}, f)
    return tree


def food101(root):
    classes = [(c, c) for c in ("apple_pie", "baby_back_ribs", "baklava")]
    return _split_tree("Food101", root, "food-101", "images", "split_zhou_Food101.json",
                       classes, lambda k, s, i: f"{k}/{1000 + SPLITS.index(s) * 10 + i}.jpg")


def sun397(root):
    classes = [("a/abbey", "abbey"), ("a/apse/indoor", "indoor apse"), ("b/bakery/shop", "shop bakery")]
    return _split_tree("SUN397", root, "sun397", "SUN397", "split_zhou_SUN397.json",
                       classes, lambda k, s, i: f"{k}/sun_a{s}{i:04d}.jpg")


def eurosat(root):
    classes = [("AnnualCrop", "Annual Crop Land"), ("Forest", "Forest"), ("SeaLake", "Sea or Lake")]
    return _split_tree("EuroSAT", root, "eurosat", "2750", "split_zhou_EuroSAT.json",
                       classes, lambda k, s, i: f"{k}/{k}_{SPLITS.index(s) * 100 + i + 1}.jpg")


def ucf101(root):
    classes = [("Apply_Eye_Makeup", "Apply_Eye_Makeup"), ("Archery", "Archery"), ("Yo_Yo", "Yo_Yo")]
    return _split_tree("UCF101", root, "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", classes,
                       lambda k, s, i: f"{k}/v_{k.replace('_', '')}_g{SPLITS.index(s) + 1:02d}_c{i + 1:02d}.jpg")


def fgvc_aircraft(root):
    """variants.txt (label order) and ``images_variant_<split>.txt`` lines ``<id> <variant>``."""
    variants = ["707-320", "A300B4", "Cessna 172"]  # one with a space, as in the real list
    dataset_dir = os.path.join(root, "fgvc_aircraft")
    os.makedirs(os.path.join(dataset_dir, "images"))
    with open(os.path.join(dataset_dir, "variants.txt"), "w") as f:
        f.write("".join(v + "\n" for v in variants))
    lists, seed = {}, 0
    for s in SPLITS:
        rows = [(f"{1000000 + seed + i * 10 + label:07d}", label, v)
                for i in range(PER_CLASS[s]) for label, v in enumerate(variants)]
        seed += 1000
        with open(os.path.join(dataset_dir, f"images_variant_{s}.txt"), "w") as f:
            f.write("".join(f"{image_id} {v}\n" for image_id, _, v in rows))
        lists[s] = [(os.path.join(dataset_dir, "images", f"{i}.jpg"), y, v) for i, y, v in rows]
        for n, (path, _, _) in enumerate(lists[s]):
            write_image(path, seed + n)
    return TinyTree("FGVCAircraft", root, variants, lists)


# Five real ImageNet classes (WNID order); the tiny trees use subsets of them.
IMAGENET_CLASSES = [("n01440764", "tench"), ("n01443537", "goldfish"), ("n01484850", "great white shark"),
                    ("n01491361", "tiger shark"), ("n01494475", "hammerhead shark")]


def _classnames_txt(dataset_dir):
    os.makedirs(dataset_dir, exist_ok=True)
    with open(os.path.join(dataset_dir, "classnames.txt"), "w") as f:
        f.write("".join(f"{w} {n}\n" for w, n in IMAGENET_CLASSES))


def _folder_images(image_dir, folders, count, pattern, seed=0):
    """``count`` images per folder; (path, label, folder) in label order, then ``os.listdir``
    order within a folder (the order the loaders read, which few-shot sampling depends on)."""
    items = []
    for label, folder in enumerate(folders):
        class_dir = os.path.join(image_dir, folder)
        for i in range(count):
            write_image(os.path.join(class_dir, pattern.format(folder=folder, i=i)), seed + label * 100 + i)
        items += [(os.path.join(class_dir, f), label, folder) for f in os.listdir(class_dir)]
    return items


def imagenet(root):
    """``images/{train,val}/<wnid>/`` for the first three classes, classnames.txt with all five."""
    dataset_dir = os.path.join(root, "imagenet")
    _classnames_txt(dataset_dir)
    wnids = [w for w, _ in IMAGENET_CLASSES[:3]]
    names = dict(IMAGENET_CLASSES)
    train = _folder_images(os.path.join(dataset_dir, "images", "train"), wnids, 6, "{folder}_{i}.JPEG")
    val = _folder_images(os.path.join(dataset_dir, "images", "val"), wnids, 2, "ILSVRC2012_val_{folder}{i}.JPEG", 50)
    lists = {s: [(p, y, names[w]) for p, y, w in items] for s, items in (("train", train), ("test", val))}
    lists["val"] = lists["test"]
    return TinyTree("ImageNet", root, [names[w] for w in wnids], lists, {"source_labels": [0, 1, 2], "wnids": wnids})


def _variant(name, root, folder, image_subdir, wnids, readme=False):
    dataset_dir = os.path.join(root, folder)
    _classnames_txt(dataset_dir)
    names = dict(IMAGENET_CLASSES)
    image_dir = os.path.join(dataset_dir, image_subdir)
    items = _folder_images(image_dir, wnids, 3, "{i}.jpg")
    if readme:
        with open(os.path.join(image_dir, "README.txt"), "w") as f:
            f.write("not a class\n")
    order = [w for w, _ in IMAGENET_CLASSES]
    data = [(p, y, names[w]) for p, y, w in items]
    return TinyTree(name, root, [names[w] for w in wnids], {"train": data, "test": data},
                    {"source_labels": [order.index(w) for w in wnids], "wnids": list(wnids)})


def imagenet_sketch(root):
    return _variant("ImageNetSketch", root, "imagenet-sketch", "images", [w for w, _ in IMAGENET_CLASSES])


def imagenet_a(root):
    wnids = [IMAGENET_CLASSES[i][0] for i in (1, 3, 4)]  # a subset, as the 200 of ImageNet-A
    return _variant("ImageNetA", root, "imagenet-adversarial", "imagenet-a", wnids, readme=True)


def imagenet_r(root):
    wnids = [IMAGENET_CLASSES[i][0] for i in (0, 2, 3)]
    return _variant("ImageNetR", root, "imagenet-rendition", "imagenet-r", wnids, readme=True)


def imagenetv2(root):
    """Folders ``0``..``4``: folder i is the i-th line of classnames.txt."""
    dataset_dir = os.path.join(root, "imagenetv2")
    _classnames_txt(dataset_dir)
    image_dir = os.path.join(dataset_dir, "imagenetv2-matched-frequency-format-val")
    folders = [str(i) for i in range(len(IMAGENET_CLASSES))]
    items = _folder_images(image_dir, folders, 2, "{i}abc.jpeg")
    data = [(p, y, IMAGENET_CLASSES[y][1]) for p, y, _ in items]
    return TinyTree("ImageNetV2", root, [n for _, n in IMAGENET_CLASSES], {"train": data, "test": data},
                    {"source_labels": list(range(5)), "wnids": [w for w, _ in IMAGENET_CLASSES]})


BUILDERS = {
    "ImageNet": imagenet, "Caltech101": caltech101, "OxfordPets": oxford_pets, "StanfordCars": stanford_cars,
    "OxfordFlowers": oxford_flowers, "Food101": food101, "FGVCAircraft": fgvc_aircraft, "SUN397": sun397,
    "DescribableTextures": dtd, "EuroSAT": eurosat, "UCF101": ucf101, "ImageNetV2": imagenetv2,
    "ImageNetSketch": imagenet_sketch, "ImageNetA": imagenet_a, "ImageNetR": imagenet_r,
}


def build_tree(name, root):
    """Write the tiny tree of dataset ``name`` (a registered name) under ``root``."""
    return BUILDERS[name](str(root))
