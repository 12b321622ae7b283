"""One number format: a delta says its sign and shows no change that rounds to nothing."""
from __future__ import annotations

import pytest

from core.ground import formatting as fmt


@pytest.mark.parametrize("cur, base, kind, want", [
    (0.5, 0.2, "pp", "+30.0 pp"),
    (0.2, 0.5, "pp", "-30.0 pp"),
    (0.0, 0.0004, "pp", None),  # issue 23 (15): "Sparsity 0.0% [-0.0 pp]"
    (0.4, 0.4, "pp", None),
    (46, 100, "ratio", "-54% (0.46× base)"),
    (100.2, 100, "ratio", None),  # "+0% (1.00× base)" is no change at the precision shown
    (0, 0, "ratio", None),
    (1500, 1000, "count", "+500"),
])
def test_delta_has_its_sign_and_hides_what_rounds_to_nothing(cur, base, kind, want):
    assert fmt.delta(cur, base, kind) == want
