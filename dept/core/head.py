"""DePT's decoupled head, written once for every prompt method.

Beside the image-text-matching (ITM) head, the CAT head (Channel Adjusted Transfer) reads the same
features through a channel-wise transform (cwT) and a linear classifier trained on the
concatenation of the ground-truth text features and the image features, labels duplicated:

    T' = cwT_text(T),  I' = cwT_img(I)
    training:   Z_CAT = W·[T'_y ; I'] + b     targets [y ; y]
    inference:  Z_CAT = W·I' + b
    L = (1-λ)·CE(Z_ITM, y) + λ·CE(Z_CAT, [y; y])

On the classes the head was trained on, inference fuses the heads; elsewhere (new classes) only ITM
is used. Head and cwT are kept in fp32 whatever CLIP's precision (the official code trains an fp16
head with fp16 SGD updates).
"""
import logging

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)


class ChannelTransform(nn.Module):
    """cwT: y = scale ⊙ x + bias, per channel; identity at initialisation (scale 1, bias 0)."""

    def __init__(self, dim):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        return x * self.scale + self.bias


def itm_logits(image_features, text_features, logit_scale):
    """exp(τ)·cos(I, T). Text features are C×D, or B×C×D when prompts depend on the image."""
    image_features = image_features / image_features.norm(dim=-1, keepdim=True)
    text_features = text_features / text_features.norm(dim=-1, keepdim=True)
    scale = logit_scale.exp()
    if text_features.dim() == 3:
        return scale * torch.einsum("bd,bcd->bc", image_features, text_features)
    return scale * image_features @ text_features.t()


class DePTHead(nn.Module):
    """The CAT head (cwT for image and text features + classifier) and the fused prediction.

    ``classes`` identify the classes the classifier is trained on, in label order (class names, or
    WNIDs for ImageNet and its variants); they decide where the head applies (``rows_for``), instead
    of dataset names or protocol strings.
    """

    def __init__(self, dim, classes, weight=0.7, fusion="logits", head="linear", cwt=True):
        super().__init__()
        self.classes = list(classes)
        self.weight = weight
        self.fusion = fusion
        self.head = head
        self.film_img = ChannelTransform(dim) if cwt else nn.Identity()
        self.film_text = ChannelTransform(dim) if cwt else nn.Identity()
        self.linear_probe = nn.Linear(dim, len(self.classes)) if head == "linear" else None
        self.rows = None  # classifier rows used at inference; None = all (set from ``rows_for``)

    @classmethod
    def from_options(cls, dim, classes, opts):
        return cls(dim, classes, weight=opts.weight, fusion=opts.fusion, head=opts.head, cwt=opts.cwt)

    def rows_for(self, classes):
        """Classifier rows for the evaluated classes, or None where the head does not apply.

        The head applies when every evaluated class is one it was trained on: the training classes
        themselves (base), or a subset of them (ImageNet-A/R within ImageNet's 1000). New classes,
        or other datasets' classes, get ITM only.
        """
        classes = list(classes)
        index = {key: i for i, key in enumerate(self.classes)}
        if len(index) != len(self.classes):  # repeated keys: only the identical list is unambiguous
            return list(range(len(classes))) if classes == self.classes else None
        if all(key in index for key in classes):
            return [index[key] for key in classes]
        return None

    def cat_logits(self, image_features, text_features=None, labels=None, logit_scale=None):
        """CAT logits and their targets (labels duplicated in training, text rows first)."""
        img = self.film_img(image_features.float())
        if self.head == "similarity":
            txt = self.film_text(text_features.float())
            return itm_logits(img, txt, logit_scale), labels
        if labels is None:
            logits = self.linear_probe(img)
            return (logits if self.rows is None else logits[:, self.rows]), None
        txt = text_features.float()
        if txt.dim() == 3:  # image-conditioned prompts: each image's own text features
            txt_y = txt[torch.arange(len(labels), device=txt.device), labels]
        else:
            txt_y = txt[labels]
        txt_y = self.film_text(txt_y)
        return self.linear_probe(torch.cat([txt_y, img])), torch.cat([labels, labels])

    def cat_loss(self, image_features, text_features, labels, logit_scale):
        """λ·CE(Z_CAT, [y; y])."""
        cat, targets = self.cat_logits(image_features, text_features, labels, logit_scale)
        return self.weight * F.cross_entropy(cat, targets)

    def losses(self, itm, image_features, text_features, labels, logit_scale):
        """Named, already weighted: {"itm": (1-λ)·CE(Z_ITM), "cat": λ·CE(Z_CAT)}."""
        return {
            "itm": (1 - self.weight) * F.cross_entropy(itm.float(), labels),
            "cat": self.cat_loss(image_features, text_features, labels, logit_scale),
        }

    def predict(self, itm, image_features, text_features, logit_scale):
        """Fused base-class prediction (as ``fusion`` says)."""
        cat, _ = self.cat_logits(image_features, text_features, None, logit_scale)
        itm = itm.float()
        if self.fusion == "cat":
            return cat
        if self.fusion == "probs":
            return (1 - self.weight) * itm.softmax(-1) + self.weight * cat.softmax(-1)
        return (1 - self.weight) * itm + self.weight * cat
