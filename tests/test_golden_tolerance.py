"""The golden tolerance (golden.py: Tolerance, c * eps * M) lets fp32 rounding through and nothing more:
a small but real discrepancy in a recorded tensor, or a term of the wrong sign, fails the comparison,
and fails the checks the golden tests run (through our trainers, on the real golden files)."""
import copy
import re

import golden
import pytest


def recorded():
    """Recorded tensors of different kinds and scales: a gradient, logits, a loss (CoOp + DePT)."""
    raw = golden.load("golden_coop_dept")
    return {"ctx gradient": raw["grads"]["prompt_learner.ctx"], "cwT scale gradient": raw["grads"]["film_lp_img.scale"],
            "fused base logits": raw["fused_base_logits"], "new-class logits": raw["new_logits"], "loss": raw["loss"]}


def nudged(tensor, relative, index=None):
    """``tensor`` with one entry (default: its largest in magnitude) changed by ``relative`` of itself."""
    out = tensor.clone()
    flat = out.view(-1)
    i = int(flat.abs().argmax()) if index is None else index
    flat[i] = flat[i] * (1 + relative)
    return out


@pytest.mark.parametrize("what", list(recorded()))
def test_a_1e_3_relative_change_of_one_entry_fails(what):
    expected = recorded()[what]
    golden.assert_close(expected.clone(), expected, what)  # itself: passes
    with pytest.raises(AssertionError, match=f"^{re.escape(what)}: "):
        golden.assert_close(nudged(expected, 1e-3), expected, what)
    with pytest.raises(AssertionError, match=f"^{re.escape(what)}: "):
        golden.assert_close(expected, nudged(expected, 1e-3), what)


@pytest.mark.parametrize("what", list(recorded()))
def test_a_wrong_sign_fails(what):
    expected = recorded()[what]
    with pytest.raises(AssertionError, match=f"^{re.escape(what)}: "):
        golden.assert_close(nudged(expected, -2.0), expected, what)  # the largest entry negated


def test_the_bound_is_c_eps_times_the_largest_magnitude():
    """Twice the bound on any entry fails, half of it passes: the rule is absolute at the tensor's
    scale (a rounding-sized change of a small entry is not a discrepancy, golden.py: Tolerance)."""
    expected = recorded()["ctx gradient"]
    bound = golden.EPS_MULT * golden.EPS * float(expected.abs().max())
    assert bound == golden.tolerance(expected) and 1e-4 < bound < 1e-2  # M = 51.5: 3.1e-3
    smallest = int(expected.abs().view(-1).argmin())
    for index in (None, smallest):
        i = int(expected.abs().view(-1).argmax()) if index is None else index
        for factor, fails in ((2.0, True), (0.5, False)):
            actual = expected.clone()
            actual.view(-1)[i] += factor * bound
            if fails:
                with pytest.raises(AssertionError):
                    golden.assert_close(actual, expected, "ctx gradient")
            else:
                golden.assert_close(actual, expected, "ctx gradient")


# -- through the checks, on the golden files --------------------------------------------------------
@pytest.fixture(scope="module")
def coop():
    yield golden.coop_dept()
    golden.release()


def with_result(outputs, variant, **changes):
    """A deep copy of golden outputs with ``results[variant]`` entries replaced."""
    out = copy.deepcopy(outputs)
    out["results"][variant].update(changes)
    return out


@pytest.mark.dassl
def test_training_step_check_fails_on_a_1e_3_change_of_one_gradient_entry(coop, monkeypatch, tmp_path):
    ref = coop["results"]["dept_base"]
    golden.check_training_step("CoOpDePT", "dept", coop, "full", monkeypatch, tmp_path)  # as recorded: passes
    grads = {**ref["grads"], "prompt_learner.ctx": nudged(ref["grads"]["prompt_learner.ctx"], 1e-3)}
    with pytest.raises(AssertionError, match="^gradient of prompt_learner.ctx: "):
        golden.check_training_step("CoOpDePT", "dept", with_result(coop, "dept_base", grads=grads), "full",
                                   monkeypatch, tmp_path)


@pytest.mark.dassl
@pytest.mark.parametrize("split", ("base", "new"))
def test_logit_checks_fail_on_a_1e_3_change_of_one_logit(split, coop, monkeypatch, tmp_path):
    variant = f"dept_{split}"
    check = golden.check_base_logits if split == "base" else golden.check_new_logits
    logits = nudged(coop["results"][variant]["logits"], 1e-3)
    with pytest.raises(AssertionError, match=f"^prediction \\({split}\\): "):
        check("CoOpDePT", "dept", with_result(coop, variant, logits=logits), "full", monkeypatch, tmp_path)


@pytest.fixture(scope="module")
def promptsrc():
    yield golden.load("golden_promptsrc")
    golden.release()


@pytest.mark.dassl
def test_training_step_check_fails_on_a_loss_term_of_the_wrong_sign(promptsrc, monkeypatch, tmp_path):
    """PromptSRC's L_SCL-logits term recorded with the wrong sign (and the total with it): the loss
    changes by 2 x 0.13 of 14.1, and the check fails."""
    ref = promptsrc["results"]["baseline_base"]
    term = ref["loss_terms"]["scl_logits"]
    assert float(term) > 100 * golden.tolerance(ref["loss"])  # a real term, far above rounding
    terms = {**ref["loss_terms"], "scl_logits": -term}
    wrong = with_result(promptsrc, "baseline_base", loss_terms=terms, loss=ref["loss"] - 2 * term)
    with pytest.raises(AssertionError, match="^loss: "):
        golden.check_training_step("PromptSRC", "baseline", wrong, "full", monkeypatch, tmp_path)
    del terms["scl_logits"]  # the term alone wrong, the total as recorded
    wrong = with_result(promptsrc, "baseline_base", loss_terms={**terms, "scl_logits": -term})
    with pytest.raises(AssertionError, match="^loss term scl_logits: "):
        golden.check_training_step("PromptSRC", "baseline", wrong, "full", monkeypatch, tmp_path)


@pytest.mark.dassl
def test_dept_terms_check_fails_on_a_1e_3_change_of_the_original_logits(promptsrc, monkeypatch, tmp_path):
    """The DePT-variant check (the original's numbers plus DePT's terms) catches a change in what it
    builds its expectation from."""
    ref = promptsrc["results"]["baseline_base"]
    wrong = with_result(promptsrc, "baseline_base", logits=nudged(ref["logits"], 1e-3))
    with pytest.raises(AssertionError, match="^ITM logits \\(base\\): "):
        golden.check_dept_terms("PromptSRCDePT", wrong, "full", monkeypatch, tmp_path)
