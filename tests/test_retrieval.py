"""MAP, precision@k and t-MAP on hand-computed cases (ties, multi-label, empty queries)."""

import numpy as np
import pytest

from badhash_tf.eval import retrieval

# Query 0 = [1, 1] (class 0): distances to the database are 2, 1, 0, 1, so the stable
# ranking is d2, d1, d3, d0 and the relevant items (d0, d3) sit at ranks 4 and 3.
# Query 1 = [-1, -1] (class 2) has no relevant item.
Q = np.array([[1, 1], [-1, -1]], np.int8)
D = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.int8)
QL = np.array([[1, 0, 0], [0, 0, 1]])
DL = np.array([[1, 0, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]])


def test_map_breaks_ties_by_database_index():
    # Query 0: relevant at ranks 3 and 4 -> AP = (1/3 + 2/4) / 2; query 1 adds 0.
    assert retrieval.mean_average_precision(Q, D, QL, DL) == pytest.approx((1 / 3 + 2 / 4) / 4)


def test_map_top_k_normalises_by_relevant_found():
    assert retrieval.mean_average_precision(Q, D, QL, DL, top_k=2) == 0.0
    assert retrieval.mean_average_precision(Q, D, QL, DL, top_k=3) == pytest.approx(1 / 6)


def test_map_multi_label_shares_any_label():
    q, d = np.ones((1, 4)), np.ones((3, 4))  # all distances tie: ranking is database order
    ql = np.array([[1, 1, 0]])
    dl = np.array([[0, 0, 1], [0, 1, 0], [1, 0, 1]])
    assert retrieval.mean_average_precision(q, d, ql, dl) == pytest.approx((1 / 2 + 2 / 3) / 2)


def test_precision_at_k():
    assert retrieval.precision_at_k(Q, D, QL, DL, 2) == 0.0
    assert retrieval.precision_at_k(Q, D, QL, DL, 3) == pytest.approx(1 / 6)


def test_targeted_map_judges_every_query_against_the_target():
    # Query 1 against class 0 ranks d0, d1, d3, d2: relevant at 1 and 3 -> (1 + 2/3) / 2.
    expected = ((1 / 3 + 2 / 4) / 2 + (1 + 2 / 3) / 2) / 2
    assert retrieval.targeted_map(Q, D, DL, target_label=0) == pytest.approx(expected)
    with pytest.raises(ValueError, match="target_label 3 outside 0..2"):
        retrieval.targeted_map(Q, D, DL, target_label=3)


@pytest.mark.parametrize("top_k", [None, 1, 7, 50])
def test_vectorised_matches_per_query_loop(top_k):
    rng = np.random.default_rng(0)
    q = rng.choice([-1, 1], (37, 12)).astype(np.float64)
    d = rng.choice([-1, 1], (300, 12)).astype(np.int32)
    ql = (rng.random((37, 5)) < 0.3).astype(np.float32)
    dl = (rng.random((300, 5)) < 0.3).astype(np.float32)
    assert retrieval.mean_average_precision(q, d, ql, dl, top_k) == pytest.approx(
        retrieval.mean_average_precision_loop(q, d, ql, dl, top_k), abs=1e-12)


@pytest.mark.parametrize("args, message", [
    ((Q * 0.5, D, QL, DL), "query_codes must hold only -1 and \\+1"),
    ((Q, D[:, :1], QL, DL), "query_codes have 2 bits but db_codes have 1"),
    ((Q, D, QL, DL[:3]), "4 database codes but 3 database labels"),
    ((Q, D, QL[:, :2], DL), "labels must be multi-hot"),
])
def test_bad_inputs_are_named(args, message):
    with pytest.raises(ValueError, match=message):
        retrieval.mean_average_precision(*args)


@pytest.mark.parametrize("bits", [16, 32, 48, 64, 100, 128, 300])
def test_packed_distances_equal_the_definition(bits):
    """XOR + popcount over packed words equals 0.5 (K - <b_q, b_d>), for widths that are not
    multiples of 64 (zero padding) and past 255 bits (uint16 distances)."""
    rng = np.random.default_rng(bits)
    q = rng.choice([-1, 1], (9, bits)).astype(np.int8)
    d = rng.choice([-1, 1], (31, bits)).astype(np.int8)
    expected = 0.5 * (bits - q.astype(np.int64) @ d.T.astype(np.int64))
    distance = retrieval.hamming_distance(q, d)
    np.testing.assert_array_equal(distance, expected)
    assert distance.dtype == (np.uint8 if bits < 256 else np.uint16)
    assert retrieval.pack_codes(q).shape == (9, -(-bits // 64))


@pytest.mark.parametrize("bits", [16, 32, 48, 64, 128])
@pytest.mark.parametrize("top_k", [None, 1, 10, 64, 200, 10_000])
@pytest.mark.parametrize("multi_label", [False, True])
def test_packed_path_equals_the_definition(bits, top_k, multi_label):
    """Few distinct codes (so many ties), single- and multi-label rows, k past the database,
    queries with no relevant item (the last class has no database item)."""
    rng = np.random.default_rng(bits + (top_k or 0))
    centres = rng.choice([-1, 1], (4, bits))
    q = centres[rng.integers(0, 4, 23)].astype(np.int8)
    d = centres[rng.integers(0, 4, 150)].astype(np.int8)
    if multi_label:
        ql = (rng.random((23, 6)) < 0.3).astype(np.float32)
        dl = (rng.random((150, 6)) < 0.3).astype(np.float32)
        dl[:, 5] = 0
    else:
        ql = np.eye(6, dtype=np.float32)[rng.integers(0, 6, 23)]
        dl = np.eye(6, dtype=np.float32)[rng.integers(0, 5, 150)]
    ql[0] = np.eye(6)[5]  # relevant to nothing: AP 0, still counted
    assert retrieval.mean_average_precision(q, d, ql, dl, top_k) == pytest.approx(
        retrieval.mean_average_precision_loop(q, d, ql, dl, top_k), abs=1e-12)
    k = 150 if top_k is None else min(top_k, 150)
    expected = np.mean([((dl[np.argsort(0.5 * (bits - d @ qi.astype(float)),
                                        kind="stable")[:k]] @ qli) > 0).sum() / k
                        for qi, qli in zip(q, ql)])
    assert retrieval.precision_at_k(q, d, ql, dl, k) == pytest.approx(expected, abs=1e-12)


def test_batches_and_threads_keep_query_order(monkeypatch):
    """Several query batches spread over threads give the one-batch result."""
    rng = np.random.default_rng(1)
    q = rng.choice([-1, 1], (50, 32))
    d = rng.choice([-1, 1], (400, 32))
    ql = np.eye(5)[rng.integers(0, 5, 50)]
    dl = np.eye(5)[rng.integers(0, 5, 400)]
    whole = retrieval._average_precisions(*retrieval._check(q, d, ql, dl), None)
    monkeypatch.setattr(retrieval, "_ROWS_PER_TASK", 3)  # 17 tasks over the threads
    np.testing.assert_array_equal(
        retrieval._average_precisions(*retrieval._check(q, d, ql, dl), None), whole)


def test_class_anchor_is_the_sign_of_the_class_mean_output():
    import keras
    from badhash_tf.eval.codes import class_anchor
    # a "model" whose output is each image's first pixel row (4 values): the anchor of a
    # class is the sign of its images' mean row, other classes' images ignored
    model = keras.Sequential([keras.layers.Input((2, 4, 1)),
                              keras.layers.Lambda(lambda x: x[:, 0, :, 0])])
    images = np.zeros((3, 2, 4, 1), np.float32)
    images[0, 0, :, 0] = [1, -2, 3, -4]
    images[1, 0, :, 0] = [1, 4, -5, -4]
    images[2, 0, :, 0] = [-9, -9, 9, 9]  # class 1: not counted for class 0
    labels = np.array([[1, 0], [1, 0], [0, 1]], np.float32)
    np.testing.assert_array_equal(class_anchor(model, images, labels, 0), [1, 1, -1, -1])
    np.testing.assert_array_equal(class_anchor(model, images, labels, 1), [-1, -1, 1, 1])
