"""Predictions from a finished run, without Dassl's training loop: ``dept.load(run_dir)``.

The run is rebuilt from its record on the classes it was trained on (a base-to-new training run: its
base classes) and its trained tensors loaded (``dept.analysis.loaded``). An image goes through the
run's test transform (Dassl's ``build_transform(cfg, is_train=False)``) and the model's one forward;
the class scores are the trainer's own ``predict``: for a DePT run on its classes the fused
(1-λ)·ITM + λ·CAT of the paper's inference, as its evaluation computed them; ITM for other methods.

    clf = dept.load("output/base2new/train_base/dtd/shots_16/CoOpDePT/vit_b16_c4_ep10_batch1/seed1")
    clf.classes                          # the run's class names, in label order
    clf.predict(["a.jpg", pil_image], top_k=3)   # [[(class, probability), ...], ...] per image
"""
import contextlib
import io
import logging
import os

from dept.analysis.loaded import RunError, build_trainer, check_run

logger = logging.getLogger(__name__)



def load(run_dir, root=None, classes=None, clip=""):
    """The classifier of a finished training run (``Classifier``), or of an export file of one
    (``python -m dept export``: no dataset needed; ``clip`` the CLIP file it was trained with, where its
    config does not find it). Raises ``RunError`` for a folder that is not a finished run, an export
    made with another CLIP, or an empty class list, before any compute.

    ``root``: the dataset root where it is not the one the run recorded (a run folder's class names
    come from its dataset). ``classes``: other class names (a list, or a text file with one per line):
    the learned prompts classify them by ITM, the new-class path of the paper (the DePT head is fused
    in only where it was trained on every one of them)."""
    from dept.core.class_list import read_class_names

    if isinstance(classes, str):
        classes = read_class_names(classes)
    if classes is not None:
        from dept.core.class_list import ClassList

        try:
            classes = ClassList(list(classes)).classnames  # empty, blank or repeated names: refused here
        except ValueError as err:
            raise RunError(str(err)) from None
    if os.path.isfile(run_dir):
        from dept.analysis.export import build_exported

        trainer, record = build_exported(run_dir, clip, classes)
        return Classifier(trainer, record)
    record = check_run(run_dir)
    return Classifier(build_trainer(run_dir, record, root, classes=None, class_names=classes), record)


def read_image(path):
    """The image at ``path`` as RGB (PIL); raises ``OSError`` (or ``ValueError``) when it cannot be read."""
    from dept.util.images import open_image

    with open_image(path) as image:
        return image.convert("RGB")


class Classifier:
    """A trained run's model as a classifier of images into the run's classes.

    Images are paths, PIL images, or tensors already transformed (C×H×W, or B×C×H×W for a batch).
    """

    def __init__(self, trainer, record=None):
        from dassl.data.transforms import build_transform

        self.trainer = trainer
        self.record = record or {}
        with contextlib.redirect_stdout(io.StringIO()):  # Dassl prints the transform's steps
            self.transform = build_transform(trainer.cfg, is_train=False)
        self.classes = [trainer.lab2cname[i] for i in range(trainer.num_classes)]
        trainer.set_model_mode("eval")
        before_test = getattr(trainer, "before_test", None)
        if before_test is not None:
            before_test()  # DePT: the head applies iff it was trained on these classes
        #: "fused (<fusion>)" when the DePT head's CAT scores are fused in, else "itm"
        self.mode = getattr(trainer, "head_mode", "itm")

    def __repr__(self):
        return f"Classifier({self.record.get('trainer')}, {len(self.classes)} classes, {self.mode})"

    def _batch(self, images):
        import torch

        if isinstance(images, torch.Tensor):
            batch = images if images.dim() == 4 else images.unsqueeze(0)
        else:
            if isinstance(images, (str, bytes)) or not isinstance(images, (list, tuple)):
                images = [images]
            batch = torch.stack([self._tensor(image) for image in images])
        return batch.to(self.trainer.device)

    def _tensor(self, image):
        import torch

        if isinstance(image, torch.Tensor):
            return image
        if not hasattr(image, "convert"):  # a path
            image = read_image(image)
        return self.transform(image.convert("RGB"))

    def probabilities(self, images, batch_size=64):
        """N×C class probabilities (the softmax of the trainer's scores; the fused probabilities
        themselves where DEPT.FUSION is "probs")."""
        import torch

        batch = self._batch(images)
        out = []
        with torch.no_grad(), self.trainer.model.cached_text_features():
            for start in range(0, len(batch), batch_size):
                scores = self.trainer.model_inference(batch[start:start + batch_size]).float()
                out.append(scores if self.mode == "fused (probs)" else scores.softmax(-1))
        return torch.cat(out).cpu()

    def predict(self, images, top_k=1):
        """Per image, its ``top_k`` (class, probability) pairs, most probable first."""
        probs = self.probabilities(images)
        top = probs.topk(min(top_k, len(self.classes)), dim=-1)
        return [[(self.classes[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]
                for values, indices in zip(top.values, top.indices)]

    def encode_image(self, images):
        """N×D image features (not normalised), after what the method does to them (an adapter)."""
        import torch

        model = self.trainer.model
        with torch.no_grad(), model.cached_text_features():
            return model.features(self._batch(images)).image.cpu()

    def encode_text(self):
        """C×D text features of the run's classes with the learned prompts (not normalised); for a
        method whose prompts depend on the image (CoCoOp) there is no single answer: an error."""
        import torch

        model = self.trainer.model
        if not model.image_independent_text:
            raise ValueError(f"{self.record.get('trainer')}: the text features depend on the image "
                             "(conditioned prompts); read them per image with model.features(images).text")
        with torch.no_grad():
            return model.encode_text().cpu()
