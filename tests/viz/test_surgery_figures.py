"""The surgery block diagram: every label stays inside its own box."""
from __future__ import annotations

from core.viz.surgery import LABEL_CHARS, block_sequence_figure


def _block(name: str, adapter: bool = False) -> dict:
    return {"name": name, "out_shape": [8, 4, 4], "params": 100, "adapter": adapter}


def test_block_labels_are_written_inside_their_own_box_and_never_over_an_adapter():
    """A pasted donor block has a long name ("digits_resnet_1"): written across at the box's
    centre it spilled over the adapter boxes beside it."""
    before = [_block(f"features.{i}") for i in range(4)]
    after = [_block("features.0"), _block("features.adapter_0", True), _block("features.digits_resnet_layers_1"),
             _block("features.adapter_1", True), _block("features.1"), _block("features.2")]
    fig = block_sequence_figure(before, after)
    boxes = [(s.x0, s.x1, s.y0, s.y1) for s in fig.layout.shapes]
    labels = list(fig.layout.annotations)
    assert len(labels) == len(before) + len(after) - 2  # adapters carry no label
    for a in labels:
        assert a.textangle == -90 and len(a.text) <= LABEL_CHARS  # upwards, no longer than the box is high
        inside = [b for b in boxes if b[0] <= a.x <= b[1] and b[2] <= a.y <= b[3]]
        assert len(inside) == 1 and inside[0][1] - inside[0][0] > 0.8, (a.text, inside)
    assert "digits_…" in [a.text for a in labels]  # the long name cut to fit (whole in the hover)
