from __future__ import annotations

from xml.etree import ElementTree

from rewards import plots


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)


def test_reliability_svg_draws_the_diagonal_and_one_point_per_filled_bin():
    curve = [
        {"predicted": 0.2, "observed": 0.25, "count": 10},
        {"predicted": 0.5, "observed": 0.5, "count": 0},
        {"predicted": 0.8, "observed": 0.7, "count": 10},
    ]
    root = parse(plots.reliability_svg(curve))
    namespace = "{http://www.w3.org/2000/svg}"
    assert len(root.findall(f"{namespace}circle")) == 2
    assert len(root.findall(f"{namespace}polyline")) == 2


def test_histogram_counts_every_value_once():
    svg = plots.histogram_svg({"chosen": [0.0, 1.0, 1.0], "rejected": [0.5]}, bins=2)
    root = parse(svg)
    heights = [
        float(r.get("height"))
        for r in root.iter("{http://www.w3.org/2000/svg}rect")
        if r.get("fill-opacity")
    ]
    assert len(heights) == 3  # chosen: two filled bins, rejected: one


def test_learning_curve_shows_the_ceiling_when_known():
    svg = plots.learning_curve_svg(
        [{"comparisons": 10, "accuracy": 0.6}, {"comparisons": 40, "accuracy": 0.7}], 0.8
    )
    assert "labeler agreement" in svg
    parse(svg)


def test_labels_are_escaped():
    svg = plots.histogram_svg({"<script>": [1.0]})
    assert "<script>" not in svg
    parse(svg)
