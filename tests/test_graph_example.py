"""The 3 x 4 example of docs/method.md ("Why Pearson and not cosine"), computed by hand there."""

import torch
import torch.nn.functional as F

from egalib.graph import pearson

X = torch.tensor([[1.0, 2, 3, 4], [4, 3, 2, 1], [1, 1, 2, 2]], dtype=torch.float64)


def test_the_pearson_graph_is_the_one_computed_by_hand():
    r = 2 / 5**0.5
    by_hand = torch.tensor([[1, -1, r], [-1, 1, -r], [r, -r, 1]], dtype=torch.float64)
    assert torch.allclose(pearson(X), by_hand, atol=1e-12)


def test_cosine_calls_reversed_rows_alike_where_pearson_calls_them_opposite():
    cosine = F.normalize(X, dim=1) @ F.normalize(X, dim=1).T
    assert torch.isclose(cosine[0, 1], torch.tensor(2 / 3, dtype=torch.float64))
    assert pearson(X)[0, 1] == -1
