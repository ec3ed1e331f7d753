"""What a trained model says beyond its accuracy: the words its learned context is nearest to, and
its accuracy per class.

``nearest_words`` is CoOp's ``interpret_prompt.py``: for each learned context vector, the vocabulary
tokens whose embeddings are nearest in Euclidean distance (the context lives in the token embedding
space, so its neighbours hint at what it encodes; they are hints, not words the model "reads").
``per_class`` turns an evaluation's labels and predictions into accuracy per class, in label order,
so a report can say on which classes DePT gains and loses.
"""
import torch


def nearest_words(ctx, vocabulary, k=5):
    """[[{"token", "distance"} × k] per context vector] for an M×W context and a V×W embedding table."""
    from clip.simple_tokenizer import SimpleTokenizer

    decoder = SimpleTokenizer().decoder
    with torch.no_grad():
        distance = torch.cdist(ctx.detach().float().cpu(), vocabulary.float().cpu())
        values, indices = distance.topk(k, dim=1, largest=False)
    return [[{"token": decoder[int(i)].replace("</w>", ""), "distance": round(float(d), 4)}
             for d, i in zip(row_values, row_indices)] for row_values, row_indices in zip(values, indices)]


def per_class(labels, predictions, lab2cname):
    """[{"class", "n", "accuracy"}] per label present, in label order (accuracy in %)."""
    totals, correct = {}, {}
    for y, p in zip(labels, predictions):
        totals[y] = totals.get(y, 0) + 1
        correct[y] = correct.get(y, 0) + int(y == p)
    return [{"class": lab2cname.get(y, str(y)), "n": totals[y], "accuracy": 100.0 * correct[y] / totals[y]}
            for y in sorted(totals)]
