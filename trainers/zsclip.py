"""Zero-shot CLIP (Radford et al., ICML 2021, https://arxiv.org/abs/2103.00020): the reference row.

No training: the dataset's hand-crafted template ("a photo of a {}, a type of pet.", the CoOp
family's table, on each dataset class) encoded once, or (``ZeroshotCLIP2``) the ensemble of CLIP's 7
selected ImageNet templates plus the dataset's own, features averaged after normalising.
Evaluate with ``--eval-only`` and no ``--model-dir``; the runner does so for both base and new.
"""
from dept.core.methods import Method, register_method
from dept.core.model import PromptCLIP
from dept.core.prompts import FixedTextPrompt
from dept.core.templates import SELECT
from dept.core.trainer import PromptTrainer


class ZeroshotModel(PromptCLIP):
    def build_prompt_learner(self, clip_model, classnames, method_cfg, templates=("a photo of a {}.",)):
        return FixedTextPrompt(classnames, clip_model, templates)


class ZeroshotCLIP(PromptTrainer):
    """CLIP with the dataset's hand-crafted prompt."""

    model_cls = ZeroshotModel
    trainable = ()

    def templates(self):
        return (self.class_template(),)

    def build_custom_model(self, clip_model, classnames):
        return self.model_cls(clip_model, classnames, self.method_cfg, templates=self.templates())


class ZeroshotCLIP2(ZeroshotCLIP):
    """CLIP with a prompt ensemble: CLIP's 7 selected templates and the dataset's own (not for
    ImageNet, whose own template the ensemble replaces; ``template_in_ensemble`` on the dataset)."""

    def templates(self):
        own = (self.class_template(),) if getattr(self.dm.dataset, "template_in_ensemble", True) else ()
        return (*SELECT, *own)


def zero_shot(name):
    """Zero-shot CLIP's record: it learns nothing (evaluated as built), it reads TRAINER.COOP.PREC."""
    return Method(name, configs={"base2new": "vit_b16"}, paper_name=name, trained=False, frozen_image_encoder=True,
                  checkpoint="zeroshot_clip", dept_checkpoint="zeroshot_clip")  # nothing is ever saved


register_method(zero_shot("ZeroshotCLIP"), ZeroshotCLIP)
register_method(zero_shot("ZeroshotCLIP2"), ZeroshotCLIP2)
