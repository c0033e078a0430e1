"""experiments/prompt_breakdown.py's classification of direction misses (no model)."""
import pytest

from experiments import prompt_breakdown


@pytest.mark.parametrize("asked, detected, kind", [
    ("left", "right", "opposite"), ("up", "down", "opposite"), ("down", "up", "opposite"),
    ("left", "up", "across"), ("down", "right", "across"),
    ("right", "static", "static"), ("up", "None", "none")])
def test_miss_kind(asked, detected, kind):
  assert prompt_breakdown._miss_kind(asked, detected) == kind
