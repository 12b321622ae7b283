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


@pytest.mark.parametrize("median, iqr, want", [
    (3.21, 0.12, "3.21 ms ± 0.12"),
    (10.0, 2.5, "10 ms ± 2.5"),  # a modest spread keeps its figure
    (3.92, 41, "3.92 ms (noisy)"),  # issue 23 (15): "3.92 ms ± 41", a spread ten times the value
    (2.0, 2.0, "2 ms (noisy)"),  # an IQR as wide as the median says only that the runs disagree
    (183, 171, "183 ms (noisy)"), (10.0, 5.0, "10 ms (noisy)"),  # from half the median on
    (5.0, float("inf"), "5 ms (noisy)"),
    (5.0, None, "5 ms"),
])
def test_a_latency_says_noisy_instead_of_a_spread_wider_than_itself(median, iqr, want):
    assert fmt.ms(median, iqr) == want


@pytest.mark.parametrize("seconds, want", [(2, "just now"), (40, "40 s ago"), (185, "3 min ago"),
                                           (3 * 3600 + 600, "3.2 h ago"), (float("nan"), "at an unknown time")])
def test_ago_says_how_long_ago_in_words(seconds, want):
    assert fmt.ago(seconds) == want


def test_a_latency_card_keeps_its_value_short_and_says_noisy_apart():
    """The metric card has room for about ten characters: "4.82 ms (noisy)" was cut to "4.82 ms (noi…"."""
    assert fmt.ms_card(4.82, 0.1) == ("4.82 ms", "± 0.1") and fmt.ms_card(112, None) == ("112 ms", None)
    assert fmt.ms_card(4.82, 47.8) == ("4.82 ms", "noisy")
    assert fmt.spread(0.12) == "12% of the median" and fmt.spread(9.91) == "9.9× the median"
