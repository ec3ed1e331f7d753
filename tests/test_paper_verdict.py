"""The one-line verdict beside a paper figure: ours minus the paper in units of the seeds' sd, and
whether the paper's figure lies inside the 95% confidence interval of our mean (Student's t)."""
import pytest

from dept.results.paper import verdict
from dept.results.render import cell


def row(values, key="base"):
    per_seed = {seed: {key: v} for seed, v in enumerate(values, 1)}
    return {"per_seed": per_seed, key: sum(values) / len(values)}


def test_inside_and_outside_the_interval_by_hand():
    # 70, 72, 74: mean 72, sd 2; t(0.975, df 2) = 4.3027, half width 4.3027 * 2 / sqrt(3) = 4.968
    assert verdict(row([70, 72, 74]), "base", 76.0) == (pytest.approx(-2.0), "yes")
    assert verdict(row([70, 72, 74]), "base", 67.1) == (pytest.approx(2.45), "yes")
    assert verdict(row([70, 72, 74]), "base", 78.0) == (pytest.approx(-3.0), "no")
    assert verdict(row([70, 72, 74]), "base", 66.9) == (pytest.approx(2.55), "no")


def test_harmonic_mean_per_seed():
    r = {"per_seed": {1: {"base": 80, "new": 60}, 2: {"base": 90, "new": 70}}, "hm": 74.2}
    h1, h2 = 2 * 80 * 60 / 140, 2 * 90 * 70 / 160  # 68.571, 78.75: sd 7.198, t(df 1) = 12.706
    sd = ((h1 - h2) ** 2 / 2) ** 0.5
    z, within = verdict(r, "hm", 70.0)
    assert z == pytest.approx((74.2 - 70.0) / sd) and within == "yes"


def test_no_verdict_from_one_seed_and_a_zero_spread_compares_exactly():
    assert verdict(row([71.0]), "base", 71.0) == (None, None)
    assert verdict(row([71.0, 71.0]), "base", 71.0) == (None, "yes")
    assert verdict(row([71.0, 71.0]), "base", 71.5) == (None, "no")
    assert verdict(row([60.0, 62.0], key="accuracy"), "accuracy", 61.0)[1] == "yes"


def test_the_cell_says_it_in_words():
    assert cell(72.0, 2.0, 76.0, -4.0, -2.0, "yes") == "72.00 ± 2.00 (paper 76.00, -4.00 = -2.0 sd, within noise)"
    assert cell(72.0, 2.0, 78.0, -6.0, -3.0, "no") == "72.00 ± 2.00 (paper 78.00, -6.00 = -3.0 sd, beyond noise)"
    assert cell(72.0, None, 78.0, -6.0) == "72.00 (paper 78.00, -6.00)"
