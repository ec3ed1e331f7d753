"""The report's figures, drawn from fixed records and read back: each series its own colour (and,
for curves, marker), bars from 0 with the seeds they rest on, partial rows hatched, legends that
list only what is drawn, titles that say what is plotted, and the demo's mark."""
import os

import pytest
from records import TINY, VIT_B16, key, put, put_base2new

from dept.results import figures as F
from dept.results.collect import collect
from dept.results.paper import demo_mark
from dept.results.render import TITLES
from dept.results.tables import build_tables

pytestmark = pytest.mark.dassl


def build(root, clip=VIT_B16):
    """CoOp and CoOpDePT: base-to-new on dtd and eurosat (CoOpDePT's eurosat lacks seed 3), few-shot
    at 1, 2, 4 shots, cross-dataset and DG from ImageNet."""
    for trainer, up in (("CoOp", 0.0), ("CoOpDePT", 3.0)):
        for dataset, base in (("dtd", 70.0), ("eurosat", 80.0)):
            for seed in (1, 2, 3):
                if (trainer, dataset, seed) != ("CoOpDePT", "eurosat", 3):
                    put_base2new(root, dataset, seed, base + up + seed, base - 20 + up, trainer=trainer, clip=clip)
            for i, shots in enumerate((1, 2, 4)):
                for seed in (1, 2):
                    put(root, key("train", dataset, trainer, seed, shots=shots), 40 + 10 * i + up + seed, clip=clip)
        for seed in (1, 2):
            put(root, key("train", "imagenet", trainer, seed), 70 + up, clip=clip)
            for target, value in (("caltech101", 90.0), ("dtd", 45.0), ("imagenetv2", 64.0), ("imagenet_r", 77.0)):
                put(root, key("eval", target, trainer, seed), value + up / 3, clip=clip)
    return build_tables(collect(root)[0], root)[0]


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("fig")))


@pytest.fixture(scope="module")
def demo_tables(tmp_path_factory):
    return build(str(tmp_path_factory.mktemp("demo")), clip=TINY)


def legend_texts(fig):
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


def bar_patches(ax):
    from matplotlib.patches import Rectangle

    return [p for p in ax.patches if isinstance(p, Rectangle)]


def colour(c):
    from matplotlib.colors import to_hex

    return to_hex(c)


def test_base_vs_new_bars_start_at_0_say_their_seeds_and_hatch_partial_rows(tables):
    fig = F.figure_base_vs_new(tables["base2new"])
    (ax,) = fig.axes
    assert ax.get_ylim()[0] == 0 and ax.get_ylim()[1] == 100
    assert ax.get_ylabel() == "accuracy (%)" and "base and new accuracy" in ax.get_title()
    assert "CoOp / CoOpDePT" in ax.get_title()
    assert [t.get_text() for t in ax.get_xticklabels()] == ["dtd", "eurosat", "average"]
    bars = bar_patches(ax)
    colours = {colour(p.get_facecolor()) for p in bars}
    assert colours == {c for *_, c in F.BASE_NEW_SERIES}  # each series its own colour
    hatched = [p for p in bars if p.get_hatch()]
    assert len(hatched) == 4  # CoOpDePT's eurosat and its average, base and new (2 of 3 seeds)
    assert {colour(p.get_facecolor()) for p in hatched} == {"#2171b5", "#d94801"}
    counts = [t.get_text() for t in ax.texts]
    assert counts.count("n=3") == 2 * 3 + 2 and "n=2" in counts
    assert legend_texts(fig) == ["base", "base + DePT", "new", "new + DePT", "fewer seeds than the table"]
    assert not fig._suptitle


def test_the_dept_gain_figure_draws_the_paired_gain(tables):
    rows = tables["base2new"]
    fig = F.figure_dept_gain(rows)
    left, right = fig.axes[:2]
    dept_average = next(r for r in rows if r["trainer"] == "CoOpDePT" and r["dataset"] == "average")
    heights = sorted(round(p.get_height(), 6) for p in bar_patches(left))
    assert heights == sorted(round(dept_average[k], 6) for k in ("dept_gain_base", "dept_gain_new", "dept_gain_hm"))
    eurosat = next(r for r in rows if r["trainer"] == "CoOpDePT" and r["dataset"] == "eurosat")
    assert eurosat["gain_over"] == "1 2"
    right_bars = bar_patches(right)
    assert [p.get_hatch() or "" for p in right_bars] == ["", F.PARTIAL_HATCH]  # dtd, eurosat (paired over 2 seeds)
    assert right.get_title() == "gain in H per dataset (paired seeds)"
    assert "over fewer seeds than either side has" in [t.get_text() for t in right.get_legend().get_texts()]
    assert "2 datasets (paired seeds)" in left.get_xticklabels()[0].get_text()


def test_few_shot_curves_give_each_series_its_own_colour_and_marker(tables):
    fig = F.figure_few_shot(tables["few_shot"])
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in axes] == [f"{d}: test accuracy vs shots per class" for d in
                                               ("dtd", "eurosat", "average")]
    assert {ax.get_xlabel() for ax in axes} == {"shots per class"} and {ax.get_ylabel() for ax in axes} == \
        {"accuracy (%)"}
    assert [t.get_text() for t in axes[0].get_xticklabels()] == ["1", "2", "4"]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["CoOp", "CoOp + DePT"]
    for ax in axes:
        lines = [container.lines[0] for container in ax.containers]  # the data line of each errorbar
        assert len(lines) == 2
        assert len({colour(line.get_color()) for line in lines}) == 2
        assert len({line.get_marker() for line in lines}) == 2
        assert [line.get_linestyle() for line in lines] == ["--", "-"]


@pytest.mark.parametrize("protocol", ["cross_dataset", "dg"])
def test_transfer_bars_show_the_paper_only_where_it_is_drawn(tables, demo_tables, protocol):
    fig = F.figure_transfer(tables[protocol], TITLES[protocol])
    (ax,) = fig.axes
    assert ax.get_ylim()[0] == 0
    assert legend_texts(fig) == ["without DePT", "with DePT", "paper"]
    assert {colour(p.get_facecolor()) for p in bar_patches(ax)} == set(F.TRANSFER_COLOURS)
    assert ax.get_xticklabels()[0].get_text() == "imagenet\n(source)"
    demo = F.figure_transfer(demo_tables[protocol], TITLES[protocol])
    assert legend_texts(demo) == ["without DePT", "with DePT"]  # no paper figure beside a demo run: no entry
    assert demo._suptitle.get_text() == demo_mark("tiny-random")


def test_demo_runs_carry_the_demo_mark_on_every_figure(demo_tables, tmp_path):
    drawn = F.draw_figures(demo_tables, str(tmp_path), TITLES)
    assert sorted(drawn) == sorted(F.NAMES)
    for fig in (F.figure_base_vs_new(demo_tables["base2new"]), F.figure_dept_gain(demo_tables["base2new"]),
                F.figure_few_shot(demo_tables["few_shot"])):
        assert fig._suptitle.get_text() == demo_mark("tiny-random") and fig._suptitle.get_color() == F.DEMO_COLOUR


def _image(path):
    from PIL import Image

    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    image = Image.open(path)
    image.load()
    return image.convert("RGB")


def _pixels(image, hex_colour, tolerance=8):
    rgb = tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return sum(count for count, pixel in image.getcolors(1 << 20)
               if all(abs(a - b) <= tolerance for a, b in zip(pixel, rgb)))


def test_saved_figures_have_their_sizes_and_their_series_colours(tables, tmp_path):
    drawn = F.draw_figures(tables, str(tmp_path), TITLES)
    assert sorted(drawn) == sorted(F.NAMES)
    sizes = {"base2new_base_vs_new.png": (800, 500), "base2new_dept_gain.png": (1000, 500), "few_shot.png": (1350, 500),
             "cross_dataset.png": (800, 450), "dg.png": (800, 450)}
    for name, size in sizes.items():
        image = _image(os.path.join(tmp_path, name))
        assert image.size == size, name
    bars = _image(os.path.join(tmp_path, "base2new_base_vs_new.png"))
    for _, _, _, hex_colour in F.BASE_NEW_SERIES:
        assert _pixels(bars, hex_colour) > 200, hex_colour
    curves = _image(os.path.join(tmp_path, "few_shot.png"))
    from matplotlib.colors import to_hex

    for i in range(2):
        assert _pixels(curves, to_hex(F.series_colour(i))) > 100, i


def test_figures_of_an_earlier_report_that_no_longer_apply_are_removed(tmp_path):
    from dept.results import report

    root = str(tmp_path)
    put(root, key("train", "dtd", shots=4), 70.0)
    put(root, key("train", "eurosat", shots=4), 60.0)
    out = os.path.join(root, "report")
    report.write_report(root, out)
    assert os.listdir(os.path.join(out, "figures")) == ["few_shot.png"]
    report.write_report(root, out, figures=False)
    assert os.listdir(os.path.join(out, "figures")) == []


def test_the_gain_of_one_dataset_is_drawn_as_the_overall_gain(tmp_path):
    root = str(tmp_path)
    for trainer, base in (("CoOp", 70.0), ("CoOpDePT", 74.0)):
        put_base2new(root, "dtd", 1, base, 50.0 + base / 10, trainer=trainer)
    rows = build_tables(collect(root)[0], root)[0]["base2new"]
    left, right = F.figure_dept_gain(rows).axes[:2]
    dtd = next(r for r in rows if r["trainer"] == "CoOpDePT")
    assert sorted(round(p.get_height(), 6) for p in bar_patches(left)) == sorted(
        round(dtd[k], 6) for k in ("dept_gain_base", "dept_gain_new", "dept_gain_hm"))
    assert "(dtd, seeds 1)" in left.get_xticklabels()[0].get_text()
