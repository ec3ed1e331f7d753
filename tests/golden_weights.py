"""Tiny CLIP weights of the golden tests (CoCoOp, KgCoOp, MaPLe), regenerated exactly from a recipe.

MaPLe's official code hard-codes text width 512 and vision width 768, so even a 4-layer CLIP for it
holds 66M weights (130 MB in fp16): too big to commit. So the golden files keep a recipe instead
of the weights: tensor by tensor, value = offset + k·2^-e, with the integers k drawn uniformly from
[-K, K] by NumPy's legacy ``RandomState`` (a stream NumPy keeps unchanged across versions) and
|k| <= 1024, so every value is fp16-exact (11 significant bits) and its fp32 copy is exact. The
recipe also keeps the sha256 of the weights (as fp16, in recipe order); ``materialize`` checks it,
so weights that differ from the ones the official outputs were computed with fail loudly.
"""
import hashlib

import numpy as np
import torch


def materialize(recipe):
    """The fp32 weights a recipe describes: {name: tensor}, checked against its sha256."""
    rs = np.random.RandomState(recipe["seed"])
    state = {}
    for name, shape, bound, exponent, offset in recipe["tensors"]:
        size = int(np.prod(shape, dtype=np.int64))
        if bound:
            k = torch.from_numpy(rs.randint(-bound, bound + 1, size=size, dtype=np.int32))
            value = k.float() * 2.0 ** -exponent + offset
        else:
            value = torch.full((size,), float(offset))
        state[name] = value.reshape(tuple(shape))
    found = digest(state, recipe["tensors"])
    if found != recipe["sha256"]:
        raise AssertionError(f"golden weights differ from the recorded ones (sha256 {found}, recorded "
                             f"{recipe['sha256']}): NumPy's RandomState stream or this file changed")
    return state


def digest(state, tensors):
    """sha256 of the weights as fp16, in recipe order (fp16 holds them exactly)."""
    h = hashlib.sha256()
    for name, *_ in tensors:
        value = state[name]
        if not torch.equal(value.half().float(), value):
            raise AssertionError(f"{name} is not fp16-exact")
        h.update(name.encode())
        h.update(value.half().contiguous().numpy().tobytes())
    return h.hexdigest()


def clip_model(spec, recipe):
    """A ``clip.model.CLIP`` of ``spec`` (its constructor's arguments) holding the recipe's weights, fp32."""
    from clip.model import CLIP

    model = CLIP(**spec)
    model.load_state_dict(materialize(recipe))
    return model.float().eval()
