"""The test oracles themselves tell different graphs apart (symbolic evaluation, brute-force split points)."""

from __future__ import annotations

from support.passes_graphs import CHAIN, DIAMOND, INPUT_SKIP, ir, symbolic


def test_symbolic_oracle_sees_changes():
    """The oracle itself must tell different computations apart."""
    g = ir(DIAMOND)
    swapped = ir(DIAMOND.replace("[%l, %r]", "[%r, %l]"))
    assert symbolic(g) != symbolic(swapped)
    other_layer = ir(DIAMOND.replace("%l = Dense @l#0(%s)", "%l = Dense @l#0(%x)"))
    assert symbolic(g) != symbolic(other_layer)
    assert symbolic(g) == symbolic(ir(DIAMOND))


def test_brute_split_points_oracle_on_known_graphs(brute_split_points):
    assert brute_split_points(ir(CHAIN)) == ["a", "b"]
    assert brute_split_points(ir(DIAMOND)) == ["s", "add"]
    assert brute_split_points(ir(INPUT_SKIP)) == []
