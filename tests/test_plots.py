"""Every plot helper returns a Figure holding the data it was given, without touching pyplot."""

import io

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure

from discomm_lite import plots

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


def test_plot_metrics_several_runs_side_by_side():
    fig = plots.plot_metrics([_run(4, 1.0), _run(6, 2.0)], ["loss", "knn20_top1"],
                             labels=["fixed", "reset"])
    _render(fig)
    assert len(fig.axes) == 2
    for ax in fig.axes:
        assert [line.get_label() for line in ax.lines] == ["fixed", "reset"]
    assert list(fig.axes[1].lines[1].get_ydata()) == [0.5, 0.7]
    with pytest.raises(ValueError, match="labels"):
        plots.plot_metrics([_run(2, 1.0)], ["loss"], labels=["a", "b"])


def test_plot_bit_entropy():
    entropy = torch.linspace(0.2, 1.0, 12, dtype=torch.float64)
    fig = plots.plot_bit_entropy(entropy)
    _render(fig)
    (ax,) = fig.axes
    assert [p.get_height() for p in ax.patches] == pytest.approx(entropy.tolist())
    assert len(ax.lines) == 2  # maximum and mean


def test_plot_bit_correlation():
    corr = torch.eye(5) * 2 - 1
    fig = plots.plot_bit_correlation(corr)
    _render(fig)
    assert len(fig.axes) == 2  # heat map and colour bar
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), corr.numpy())


def test_plot_map_vs_bits():
    results = {"codes": {256: 0.47, 32: 0.40, 64: 0.43}, "small": {16: 0.2, 32: 0.3}}
    fig = plots.plot_map_vs_bits(results)
    _render(fig)
    (ax,) = fig.axes
    assert len(ax.lines) == 2
    assert list(ax.lines[0].get_xdata()) == [32, 64, 256]  # sorted by bits
    assert list(ax.lines[0].get_ydata()) == [0.40, 0.43, 0.47]


def test_plot_tsne():
    embedding = torch.randn(30, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.tensor([0, 2, 3] * 10)
    fig = plots.plot_tsne(embedding, labels, classes=["tench", "dog", "horn", "church"])
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
    fig = plots.plot_gallery(images, index_dict, ["a", "b", "c"], bit=0)
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
    fig = plots.plot_factor_mi(mi, ["person", "dog", "indoor"], top=3)
    _render(fig)
    assert len(fig.axes) == 2
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), mi[[7, 12, 3]].numpy())
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["bit 7", "bit 12", "bit 3"]


def test_plot_heatmap_annotates_finite_cells():
    table = [[0.1, 0.25, float("nan")], [0.4, 0.5, 0.6]]
    fig = plots.plot_heatmap(table, ["beta 0.05", "beta 0.1"], ["n=1", "n=5", "n=10"], "mAP")
    _render(fig)
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert sorted(t.get_text() for t in ax.texts) == ["0.10", "0.25", "0.40", "0.50", "0.60"]
    assert ax.get_title() == "mAP"
    with pytest.raises(ValueError, match="labels"):
        plots.plot_heatmap(table, ["one row"], ["a", "b", "c"])
