"""The channel-importance measure of the paper's motivation (its Fig. 2; the official
``tests/channel_importance.py``), streamed so that it never holds a dataset's features at once.

For a feature window of ``width`` channels starting at channel ``s`` (circular: D/8 = 64 of 512 at
ViT-B/16), each sample's similarities to the classes are computed on those channels only and clamped
at 0; the window's importance is the similarity to the true class over the mean similarity over the
classes (+1e-12, as the official code), averaged over samples. Base classes are the first ceil(n/2)
labels and new the rest, each measured among its own classes (the official split). A window whose
importance is much higher for base than for new classes (base/new ratio above 1) carries knowledge
that helps the training classes only: the paper's "channel bias".

Features are L2-normalised over all D channels before windows are taken, as the official stats
trainers saved them.
"""
import math

import torch

EPS = 1e-12
_CHUNK = 1 << 22  # elements of the per-chunk (samples × classes × channels) product


def default_width(dim):
    """The official window: an eighth of the channels (64 of 512)."""
    return max(1, dim // 8)


def check_width(width, dim):
    """A clear error for a window the features cannot hold (checked before any compute)."""
    if not isinstance(width, int) or width < 1:
        raise ValueError(f"the channel window must be a positive number of channels, not {width!r}")
    if width > dim:
        raise ValueError(f"a window of {width} channels is larger than the features' {dim} channels: pass "
                         f"--window {default_width(dim)} (D/8, the paper's) or any value up to {dim}")


def split_point(n_classes):
    """Labels below this are base classes (the official ``ceil(n / 2)``)."""
    return math.ceil(n_classes / 2)


class ChannelImportance:
    """Importance per window start for base and new classes, fed batch by batch (``add``)."""

    def __init__(self, dim, n_classes, width=None):
        self.dim, self.n_classes = dim, n_classes
        self.width = default_width(dim) if width is None else width
        check_width(self.width, dim)
        self.m = split_point(n_classes)
        self.sums = {"base": torch.zeros(dim, dtype=torch.float64), "new": torch.zeros(dim, dtype=torch.float64)}
        self.counts = {"base": 0, "new": 0}

    def add(self, image, text, labels):
        """``image`` B×D, ``text`` C×D (or B×C×D where prompts depend on the image), ``labels`` B."""
        image, text = _normalise(image), _normalise(text)
        labels = labels.long().cpu()
        for part, lo, hi in (("base", 0, self.m), ("new", self.m, self.n_classes)):
            keep = (labels >= lo) & (labels < hi)
            if not keep.any():
                continue
            txt = text[lo:hi] if text.dim() == 2 else text[keep][:, lo:hi]
            self.sums[part] += window_ratios(image[keep], txt, labels[keep] - lo, self.width).sum(0)
            self.counts[part] += int(keep.sum())

    def result(self):
        """{"base": D, "new": D, "ratio": D} importance per window start (float64 tensors)."""
        missing = [p for p, n in self.counts.items() if n == 0]
        if missing:
            raise ValueError(f"no test sample of the {' and '.join(missing)} classes: the measure needs both (the "
                             f"first {self.m} of {self.n_classes} labels are base, the rest new)")
        base, new = (self.sums[p] / self.counts[p] for p in ("base", "new"))
        return {"base": base, "new": new, "ratio": base / new}


def window_ratios(image, text, labels, width):
    """B×D: per sample and window start, clamped true-class similarity over the mean over classes."""
    image, text = image.double().cpu(), text.double().cpu()
    n, dim = image.shape
    n_classes = text.shape[-2]
    step = max(1, _CHUNK // max(1, n_classes * (dim + width)))
    out = []
    for i in range(0, n, step):
        img = image[i:i + step]
        txt = text if text.dim() == 2 else text[i:i + step]
        product = img[:, None, :] * (txt[None] if txt.dim() == 2 else txt)  # b×C×D
        wrapped = torch.cat([product, product[..., :width]], dim=-1)
        cums = torch.nn.functional.pad(wrapped.cumsum(-1), (1, 0))
        sims = (cums[..., width:width + dim] - cums[..., :dim]).clamp_min(0)  # b×C×D: window at each start
        true = sims[torch.arange(len(img)), labels[i:i + step]]
        out.append(true / (sims.mean(1) + EPS))
    return torch.cat(out) if out else torch.zeros(0, dim, dtype=torch.float64)


def _normalise(x):
    x = x.detach().float().cpu()
    return x / x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
