"""Every plot helper returns a Figure holding the data it was given, without touching pyplot."""

import io
import math

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from discomm_lite.method.coding_rate import coding_rate
from discomm_lite.viz import code_plots, grids, illustrations, plots

plt.switch_backend("Agg")


@pytest.fixture(autouse=True)
def _no_pyplot_figures():
    """Helpers must not register figures with pyplot (they would leak and show twice)."""
    before = plt.get_fignums()
    yield
    assert plt.get_fignums() == before


def _render(fig):
    assert isinstance(fig, Figure)
    fig.savefig(io.BytesIO(), format="png")  # layout and drawing must not fail


def _run(n_epochs, loss_scale):
    records = [{"kind": "train", "epoch": e, "step": 10 * e, "loss": loss_scale / (e + 1)}
               for e in range(n_epochs)]
    records.insert(2, {"kind": "eval", "epoch": 1, "knn20_top1": 0.5})  # lacks "loss"
    records.append({"kind": "eval", "epoch": n_epochs, "knn20_top1": 0.7, "note": "end"})
    return records


def test_plot_metrics_one_run():
    fig = plots.plot_metrics(_run(5, 1.0), ["loss", "knn20_top1"], x="step")
    _render(fig)
    loss_ax, knn_ax = fig.axes
    (line,) = loss_ax.lines
    assert list(line.get_xdata()) == [0, 10, 20, 30, 40]
    assert list(line.get_ydata()) == pytest.approx([1 / (e + 1) for e in range(5)])
    assert len(knn_ax.lines) == 0  # eval records have no "step"
    # Readable titles and y labels, not raw keys.
    assert (loss_ax.get_title(), loss_ax.get_ylabel()) == ("total loss", "loss")
    assert (knn_ax.get_title(), knn_ax.get_ylabel()) == ("k-NN top-1 (k = 20)", "accuracy")
    assert plots.metric_label("some_new_key") == ("some_new_key", "")


def test_plot_metrics_several_runs_side_by_side():
    fig = plots.plot_metrics([_run(4, 1.0), _run(6, 2.0)], ["loss", "knn20_top1"],
                             labels=["fixed", "reset"])
    _render(fig)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert [line.get_label() for line in ax.lines] == ["fixed", "reset"]
        assert ax.get_legend() is None  # one legend for the figure, not one per panel
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["fixed", "reset"]
    assert list(fig.axes[1].lines[1].get_ydata()) == [0.5, 0.7]
    with pytest.raises(ValueError, match="labels"):
        plots.plot_metrics([_run(2, 1.0)], ["loss"], labels=["a", "b"])


def test_plot_metrics_markers_make_a_one_point_series_visible():
    one_point = [{"kind": "eval", "epoch": 1, "knn20_top1": 0.5}]
    long = [{"epoch": e, "knn20_top1": e / 100} for e in range(60)]
    fig = plots.plot_metrics([one_point, long], ["knn20_top1"], labels=["short", "long"])
    short_line, long_line = fig.axes[0].lines
    assert short_line.get_marker() == "o" and short_line.get_markevery() == 1
    assert long_line.get_marker() == "o" and long_line.get_markevery() == 4  # ~15 markers


def test_plot_metrics_seeds_of_a_setting_share_a_colour_and_a_legend_entry():
    fig = plots.plot_metrics([_run(3, 1.0), _run(3, 2.0), _run(3, 3.0)], ["loss"],
                             labels=["beta=0", "beta=0", "beta=0.1"])
    a, b, c = fig.axes[0].lines
    assert a.get_color() == b.get_color() != c.get_color()
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["beta=0", "beta=0.1"]


def test_reference_lines_and_the_channel_references():
    k, eps = 32, 0.05
    references = plots.channel_references(n_bits=k, eps=eps)
    rank_one = torch.rand(64, 1, dtype=torch.float64) * torch.randn(1, k, dtype=torch.float64)
    one_direction = references["coding_rate"][f"all logits one direction (K = {k})"]
    # coding_rate works in float32: its logdet of a rank-one update is good to ~4e-5 relative.
    assert one_direction == pytest.approx(coding_rate(rank_one, eps).item(), rel=1e-4)
    assert references["agreement"] == {"ln 2 (a student that knows nothing)": math.log(2)}
    assert references["bit_agreement"] == {"chance (0.5)": 0.5}
    assert "agreement" not in plots.channel_references(agreement="cosine")
    references["knn20_top1"] = {"random-init floor": 0.45}
    records = [{"epoch": e, "agreement": 0.6, "knn20_top1": 0.5} for e in range(3)]
    fig = plots.plot_metrics(records, ["agreement", "knn20_top1"], references=references)
    _render(fig)
    agreement_ax, knn_ax = fig.axes
    assert [line.get_ydata()[0] for line in agreement_ax.lines[1:]] == [math.log(2)]
    (floor,) = knn_ax.lines[1:]
    assert floor.get_label() == "random-init floor" and list(floor.get_ydata()) == [0.45, 0.45]
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["ln 2 (a student that knows nothing)", "random-init floor"]


def test_bce_and_cosine_agreement_never_share_an_axis():
    bce = [{"epoch": e, "agreement": 0.69 - e / 100} for e in range(3)]
    cosine = [{"epoch": e, "agreement": 0.9 - e / 10} for e in range(3)]
    fig = plots.plot_metrics([bce, cosine], ["agreement"], labels=["bce", "cosine"],
                             agreement=["bce", "cosine"])
    _render(fig)
    bce_ax, cosine_ax = fig.axes  # the panel and its twin
    assert [line.get_label() for line in bce_ax.lines] == ["bce"]
    assert [line.get_label() for line in cosine_ax.lines] == ["cosine"]
    assert (bce_ax.get_ylabel(), cosine_ax.get_ylabel()) == ("BCE (nats)", "1 - cos")
    only_cosine = plots.plot_metrics(cosine, ["agreement"], agreement="cosine")
    assert only_cosine.axes[0].get_title() == "cosine agreement"
    assert only_cosine.axes[0].get_ylabel() == "1 - cos"
    assert plots.plot_metrics(bce, ["agreement"]).axes[0].get_title() == "BCE agreement (Eq. 8)"
    with pytest.raises(ValueError, match="agreement must be one of"):
        plots.plot_metrics(bce, ["agreement"], agreement="mse")


def test_plot_final_shows_the_mean_and_every_seed():
    values = {"BITS": {"knn20_top1": [0.5, 0.7]}, "DINO": {"knn20_top1": [0.4, float("nan")]},
              "none": {"knn20_top1": []}}
    fig = plots.plot_final(values, ["knn20_top1"],
                           references={"knn20_top1": {"random-init floor": 0.3}})
    _render(fig)
    (ax,) = fig.axes
    mean_bits, seeds_bits, mean_dino, seeds_dino, floor = ax.lines
    assert list(mean_bits.get_ydata()) == pytest.approx([0.6])
    assert list(seeds_bits.get_xdata()) == [0, 0] and list(seeds_bits.get_ydata()) == [0.5, 0.7]
    assert list(mean_dino.get_ydata()) == [0.4] and list(seeds_dino.get_xdata()) == [1]
    assert floor.get_label() == "random-init floor"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["BITS", "DINO", "none"]
    assert ax.get_title() == "k-NN top-1 (k = 20)"


def test_plot_lab_curves_above_final_evaluations_below():
    records = {"base": [_run(3, 1.0), _run(3, 1.5)], "n_bits=32": [_run(3, 2.0)]}
    finals = {"base": [{"knn20_top1": 0.5}, {"knn20_top1": 0.6}], "n_bits=32": [None]}
    fig = plots.plot_lab(records, finals, curves=["loss"], final_keys=["knn20_top1"],
                         final_references={"knn20_top1": {"random-init floor": 0.4}})
    _render(fig)
    top, bottom = fig.subfigs
    (curves,) = top.axes
    assert [line.get_label() for line in curves.lines] == ["base", "base", "n_bits=32"]
    (final,) = bottom.axes
    assert list(final.lines[1].get_ydata()) == [0.5, 0.6]
    assert final.lines[-1].get_label() == "random-init floor"
    assert all(line.get_label() != "random-init floor" for line in curves.lines)


def test_channel_diagram_names_every_part_of_the_channel():
    fig = illustrations.plot_channel_diagram()
    _render(fig)
    text = " ".join(t.get_text() for t in fig.axes[0].texts)
    for part in ("view 1", "view 2", "teacher", "student", "threshold", "sigmoid", "BCE",
                 "Eq. 8", "coding rate", "Eq. 9", "Eq. 10", "EMA", "head reset"):
        assert part in text, part


def test_plot_views_places_each_view_beside_its_image():
    images = torch.randint(0, 256, (3, 3, 8, 8), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(2))
    views = [torch.rand(3, 3, 6, 6, generator=torch.Generator().manual_seed(i)) for i in (0, 1)]
    fig = illustrations.plot_views(images, views, names=["global 1", "global 2"])
    _render(fig)
    assert len(fig.axes) == 3 * 3
    np.testing.assert_array_equal(fig.axes[3].images[0].get_array(),
                                  images[1].permute(1, 2, 0).numpy())
    expected = (views[1][2].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    np.testing.assert_array_equal(fig.axes[8].images[0].get_array(), expected)
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "global 1", "global 2"]
    with pytest.raises(ValueError, match="names"):
        illustrations.plot_views(images, views, names=["one"])


def test_plot_bit_entropy():
    entropy = torch.linspace(0.2, 1.0, 12, dtype=torch.float64)
    fig = code_plots.plot_bit_entropy(entropy)
    _render(fig)
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == pytest.approx(entropy.tolist())
    assert len(ax.lines) == 2  # maximum and mean


def test_plot_bit_correlation():
    corr = torch.eye(5) * 2 - 1
    fig = code_plots.plot_bit_correlation(corr)
    _render(fig)
    assert len(fig.axes) == 2  # heat map and colour bar
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), corr.numpy())


def test_plot_map_vs_bits():
    results = {"codes": {256: 0.47, 32: 0.40, 64: 0.43}, "small": {16: 0.2, 32: 0.3}}
    fig = code_plots.plot_map_vs_bits(results)
    _render(fig)
    (ax,) = fig.axes
    assert len(ax.lines) == 2
    assert list(ax.lines[0].get_xdata()) == [32, 64, 256]  # sorted by bits
    assert list(ax.lines[0].get_ydata()) == [0.40, 0.43, 0.47]


def test_plot_tsne():
    embedding = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 3] * 10)
    fig = code_plots.plot_tsne(embedding, labels, classes=["tench", "dog", "horn", "church"])
    _render(fig)
    (ax,) = fig.axes
    collections = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(collections) == 3  # one per label present
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["tench", "horn", "church"]
    np.testing.assert_allclose(collections[1].get_offsets(), embedding[labels == 2].numpy())


def test_plot_gallery_places_each_image_in_its_cell():
    images = torch.randint(0, 256, (10, 3, 4, 5), dtype=torch.uint8,
                           generator=torch.Generator().manual_seed(1))
    index_dict = {0: {0: [3, 7], 1: [1]}, 2: {0: [], 1: [2, 4, 9]}}
    fig = code_plots.plot_gallery(images, index_dict, ["a", "b", "c"], bit=0)
    _render(fig)
    assert len(fig.axes) == 4  # 2 classes x (bit off, bit on)
    strip = fig.axes[3].images[0].get_array()  # class 2, bit on: three images side by side
    assert strip.shape == (4, 3 * 5, 3)
    np.testing.assert_array_equal(strip[:, 5:10], images[4].permute(1, 2, 0).numpy())
    assert (fig.axes[2].images[0].get_array() == 255).all()  # class 2 has no bit-off item
    assert fig.axes[0].get_title() == "bit 0 = 0"
    assert fig.axes[2].get_ylabel() == "c"


def test_plot_factor_mi_shows_the_top_bits():
    mi = torch.zeros(20, 3)
    mi[7, 1], mi[3, 0], mi[12, 2] = 0.9, 0.5, 0.7
    fig = code_plots.plot_factor_mi(mi, ["person", "dog", "indoor"], top=3)
    _render(fig)
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), mi[[7, 12, 3]].numpy())
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["bit 7", "bit 12", "bit 3"]


def test_plot_heatmap_annotates_finite_cells_and_names_the_others():
    table = [[0.1, 0.25, float("nan")], [0.4, 0.5, 0.6]]
    fig = grids.plot_heatmap(table, ["beta 0.05", "beta 0.1"], ["n=1", "n=5", "n=10"], "mAP")
    _render(fig)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0.100", "0.250", "0.400", "0.500",
                                                      "0.600", "not run"]
    assert ax.get_title() == "mAP"
    with pytest.raises(ValueError, match="labels"):
        grids.plot_heatmap(table, ["one row"], ["a", "b", "c"])


def test_plot_heatmaps_write_each_cells_spread_and_outline_the_chosen_one():
    mean = [[0.5, 0.6], [0.7, float("nan")]]
    spread = [[0.01, float("nan")], [0.02, float("nan")]]  # NaN: one seed, no spread to write
    fig = grids.plot_heatmaps({"k-NN": (mean, spread), "dim": (mean, None)}, ["16", "32"],
                              ["never", "1"], row_name="K", col_name="period", highlight=(1, 0))
    _render(fig)
    knn, dim = fig.axes[:2]  # the colour bars come after the panels
    assert sorted(t.get_text() for t in knn.texts) == ["0.500\n± 0.010", "0.600",
                                                      "0.700\n± 0.020", "not run"]
    assert sorted(t.get_text() for t in dim.texts) == ["0.500", "0.600", "0.700", "not run"]
    (outline,) = knn.patches
    assert (outline.get_x(), outline.get_y()) == (-0.5, 0.5)  # column 0, row 1
    assert (knn.get_xlabel(), knn.get_ylabel()) == ("period", "K")


def test_head_resets_are_marked_in_every_panel_in_the_runs_colour():
    run = [{"kind": "train", "step": s, "epoch": s / 4, "loss": 1.0 / s, "coding_rate": 10.0 + s}
           for s in range(1, 9)]
    run.insert(4, {"kind": "reinit", "step": 4, "epoch": 1})
    fig = plots.plot_metrics([run, run[:4]], ["loss", "coding_rate"], labels=["reset", "fixed"])
    _render(fig)
    for ax in fig.axes:
        verticals = [line for line in ax.lines if list(line.get_xdata()) == [1, 1]]
        assert len(verticals) == 1 and verticals[0].get_linestyle() == ":"
        (curve,) = [line for line in ax.lines if line.get_label() == "reset"]
        assert verticals[0].get_color() == curve.get_color()  # the reset run's colour
    assert "head reset" in [t.get_text() for t in fig.legends[0].get_texts()]
