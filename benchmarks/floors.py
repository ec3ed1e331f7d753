"""The training floor of a method: its image encoder alone, on one training batch.

A training step cannot cost less than encoding its images: the forward pass of the (prompted)
image encoder, and, where visual prompts train (MaPLe, IVLP, VPT, PromptSRC), the backward pass
through it, since their gradient reaches the first layer's tokens through every frozen block. The
floor runs exactly that part of the method's own model (``PromptCLIP.encode_image`` with the
prompt learner's prompts, autograd as the training step has it), so "× floor" in the report says how
much the text side, the losses and the optimizer add to what no implementation can avoid.

The test floor is the method's own image encoder (with its visual prompts, if any) forward on one
test batch without autograd, as its evaluation runs it: an evaluation cannot cost less than encoding
every test image once. Runs saved before it was measured per method show the stock image encoder's
forward instead (``benchmark.run_job``'s ``floor`` job, still measured: the report's first row).
"""
import statistics

import torch


def training_floor(trainer, images):
    """A function running the floor once (the method's image encoder on ``images``, forward, and
    backward where the features need gradients) and a dict whose ``backward`` says, after a run,
    whether it ran backward."""
    model = trainer.model
    params = [p for p in model.parameters() if p.requires_grad]
    seen = {"backward": False}

    def step():
        prompts = model.prompt_learner.prompts()
        features = model.encode_image(images, prompts)
        seen["backward"] = features.requires_grad
        if features.requires_grad:
            features.float().sum().backward()
            for p in params:  # nothing kept between runs, as the optimizer's zero_grad does
                p.grad = None

    return step, seen


def measure_training_floor(trainer, batch_images, job, device, timed):
    """The floor's figures for a result dict: its median seconds, timed runs, and whether it ran
    backward. Timed like the training step (its warm-up, repeats and budget)."""
    step, seen = training_floor(trainer, batch_images)
    trainer.set_model_mode("train")
    times = timed(step, device, job["warmup"], job["steps"], job["budget"])
    return dict(floor_step_s=statistics.median(times), floor_steps_timed=len(times), floor_backward=seen["backward"])


def measure_test_floor(trainer, images, job, device, timed):
    """The test floor's figure for a result dict: the median seconds of the method's own image
    encoder on one test batch, in eval mode without autograd (timed like the test batch)."""
    model = trainer.model
    trainer.set_model_mode("eval")
    with torch.no_grad():
        prompts = model.prompt_learner.prompts()
        model.encode_image(images[:2], prompts)  # warm-up, as the test batch's
        times = timed(lambda: model.encode_image(images, prompts), device, 0, job["eval_repeats"], job["budget"])
    return dict(floor_test_batch_s=statistics.median(times))


def floor_columns(r):
    """The report's "floor s/step" and "× floor" cells of one result row."""
    if "floor_step_s" not in r:
        return "", ""
    mark = " (fwd+bwd)" if r.get("floor_backward") else ""
    ratio = f"{r['step_s'] / r['floor_step_s']:.1f}" if r.get("step_s") else ""
    return f"{r['floor_step_s']:.2f}{mark}", ratio
