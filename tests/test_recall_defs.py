"""recall@K (hits / min(K, |T|)), recall_full@K (hits / |T|, LightGCN/BARS) and NDCG@K
against numbers worked out by hand on a tiny example, through `metrics.evaluate` and
`metrics.evaluate_scores`."""

import numpy as np
import pytest

from jaxrec import metrics

# Scores S[u, j] for 5 users x 6 items; with items = I_6 the model's score is S itself.
S = np.array(
    [
        [6, 5, 4, 3, 2, 1],  # user 0 ranks 0 1 2 3 4 5
        [1, 2, 3, 4, 5, 6],  # user 1 ranks 5 4 3 2 1 0
        [6, 5, 4, 3, 2, 1],  # user 2: no test item, not evaluated
        [0, 0.5, 3, 2, 1, -1],  # user 3 ranks 2 3 4 1 0 5
        [1, 1, 1, 1, 1, 1],  # user 4: no test item, not evaluated
    ],
    np.float32,
)
TRAIN = (np.array([0, 1, 2, 3]), np.array([0, 5, 1, 2]))
TEST = (
    np.array([0, 0, 0, 0, 1, 3, 3, 3]),
    np.array([2, 3, 4, 5, 4, 0, 1, 2]),
)  # (3, 2) is also a train pair: dropped
# After masking train items:
#   user 0: ranking 1 2 3 4 5, T = {2, 3, 4, 5} (|T| = 4)
#     top-2 = [1, 2]: hits [0, 1];  top-3 = [1, 2, 3]: hits [0, 1, 1]
#   user 1: ranking 4 3 2 1 0, T = {4} (|T| = 1)
#     top-2 = [4, 3]: hits [1, 0];  top-3: hits [1, 0, 0]
#   user 3: ranking 3 4 1 0 5, T = {0, 1} (|T| = 2; item 2 dropped, it is a train item)
#     top-2 = [3, 4]: hits [0, 0];  top-3 = [3, 4, 1]: hits [0, 0, 1]
# With d_r = 1 / log2(r + 1): d_1 = 1, d_2 = 1 / log2(3) = 0.6309297536, d_3 = 0.5.
EXPECTED = {
    # (1/min(2,4) + 1/min(2,1) + 0) / 3 = (0.5 + 1 + 0) / 3
    "recall@2": 0.5,
    # (1/4 + 1/1 + 0) / 3 = 1.25 / 3
    "recall_full@2": 0.4166666667,
    # user 0: d_2 / (d_1 + d_2) = 0.6309297536 / 1.6309297536 = 0.3868528072
    # user 1: d_1 / d_1 = 1;  user 3: 0.   (0.3868528072 + 1 + 0) / 3
    "ndcg@2": 0.4622842691,
    # (2/min(3,4) + 1/min(3,1) + 1/min(3,2)) / 3 = (2/3 + 1 + 1/2) / 3 = 13/18
    "recall@3": 0.7222222222,
    # (2/4 + 1/1 + 1/2) / 3 = 2 / 3
    "recall_full@3": 0.6666666667,
    # user 0: (d_2 + d_3) / (d_1 + d_2 + d_3) = 1.1309297536 / 2.1309297536 = 0.5307212739
    # user 1: 1;  user 3: d_3 / (d_1 + d_2) = 0.5 / 1.6309297536 = 0.3065735964
    # (0.5307212739 + 1 + 0.3065735964) / 3
    "ndcg@3": 0.6124316234,
    # first hit at rank 2, 1, 3 (within max K = 3): (1/2 + 1 + 1/3) / 3 = 11/18
    "mrr": 0.6111111111,
}


def _check(got):
  for key, want in EXPECTED.items():
    np.testing.assert_allclose(got[key], want, rtol=0, atol=1e-7, err_msg=key)


def test_evaluate_both_recalls_and_ndcg_by_hand():
  _check(metrics.evaluate(S, np.eye(6, dtype=np.float32), TRAIN, TEST, ks=(2, 3)))


@pytest.mark.parametrize("query_batch", [1, 2, 1024])
def test_evaluate_scores_same_numbers(query_batch):
  calls = []

  def score_fn(users):
    calls.append(users.tolist())
    return S[users]

  got = metrics.evaluate_scores(score_fn, 5, 6, TRAIN, TEST, ks=(2, 3), query_batch=query_batch)
  _check(got)
  assert sum(calls, []) == [0, 1, 3]  # only the users with a test item, in order
  assert set(got) == {
      "recall@2",
      "recall@3",
      "recall_full@2",
      "recall_full@3",
      "ndcg@2",
      "ndcg@3",
      "mrr",
      "coverage@2",
      "coverage@3",
  }


def test_recall_full_equals_recall_when_every_user_has_at_most_k_test_items():
  got = metrics.evaluate(S, np.eye(6, dtype=np.float32), TRAIN, TEST, ks=(4, 5))
  for k in (4, 5):
    assert got[f"recall_full@{k}"] == got[f"recall@{k}"]


def test_evaluate_scores_rejects_a_wrong_shape():
  with pytest.raises(ValueError, match=r"score_fn returned shape \(3, 5\)"):
    metrics.evaluate_scores(lambda u: S[u][:, :5], 5, 6, TRAIN, TEST, ks=(2,))
