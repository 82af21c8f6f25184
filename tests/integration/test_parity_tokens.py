"""tests/parity.py's token checks: a miss names the first differing row and position and shows both rows;
a different count of tokens is a miss too."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

from parity import assert_same_tokens  # noqa: E402


def test_equal_tokens_pass_whether_tensors_or_numpy():
    ids = torch.tensor([[1, 2, 3], [4, 5, 6]])
    assert_same_tokens(ids, ids.clone(), "same")
    assert_same_tokens(ids.numpy(), ids, "numpy against a tensor")


def test_a_miss_names_the_first_differing_position_and_shows_both_rows():
    want = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    got = want.clone()
    got[1, 2], got[1, 3] = 70, 80
    with pytest.raises(AssertionError) as e:
        assert_same_tokens(got, want, "tiny")
    assert str(e.value) == ("tiny: tokens differ first at row 1, position 2:\n"
                            "  ours      [5, 6, 70, 80]\n  reference [5, 6, 7, 8]")


def test_a_different_count_of_tokens_is_a_miss():
    with pytest.raises(AssertionError, match=r"tiny: \(1, 3\) tokens vs reference \(1, 4\)"):
        assert_same_tokens(np.array([[1, 2, 3]]), torch.tensor([[1, 2, 3, 4]]), "tiny")
