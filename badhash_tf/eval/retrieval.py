"""Hamming-ranking retrieval metrics as the deep-hashing literature defines them.

Codes are +-1 arrays [n, K] (any numeric dtype); labels are multi-hot [n, C]. A database
item is relevant to a query when they share at least one label. The database is ranked by
Hamming distance `0.5 * (K - <b_q, b_d>)`, ties broken by database index (stable). AP over
the top k is the mean of precision@rank over the relevant items found in those k; a query
with none adds 0 but still counts in the mean (DeepHash-pytorch `CalcTopMap`).
Vectorised: distances by matrix product and a radix (stable integer) sort per batch of queries.
"""

import numpy as np

_ELEMENTS_PER_BATCH = 1 << 24  # query rows x database items handled at once


def _as_codes(codes, name):
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, bits], got shape {codes.shape}")
    if not np.isin(codes, (-1, 1)).all():
        raise ValueError(f"{name} must hold only -1 and +1 (binarise with sign first)")
    return codes.astype(np.float32)


def _check(query_codes, db_codes, query_labels, db_labels):
    q, d = _as_codes(query_codes, "query_codes"), _as_codes(db_codes, "db_codes")
    ql = np.asarray(query_labels, np.float32)
    dl = np.asarray(db_labels, np.float32)
    if q.shape[1] != d.shape[1]:
        raise ValueError(f"query_codes have {q.shape[1]} bits but db_codes have {d.shape[1]}")
    if ql.ndim != 2 or dl.ndim != 2 or ql.shape[1] != dl.shape[1]:
        raise ValueError(f"labels must be multi-hot [n, C] of one width, got {ql.shape} and "
                         f"{dl.shape}")
    if len(ql) != len(q) or len(dl) != len(d):
        raise ValueError(f"{len(q)} query codes but {len(ql)} query labels, or {len(d)} "
                         f"database codes but {len(dl)} database labels")
    return q, d, ql, dl


def hamming_distance(query_codes, db_codes):
    """[Q, K], [N, K] +-1 float32 -> [Q, N] integer distances (uint16).

    `<b_q, b_d>` has the parity of K, so `(K - <b_q, b_d>) / 2` is exact in float32."""
    distance = query_codes @ db_codes.T
    np.subtract(query_codes.shape[1], distance, out=distance)
    distance *= 0.5
    return distance.astype(np.uint16)


def _ranked_relevance(q, d, ql, dl, top_k):
    """Yields [b, k] bool relevance of each query's top-k list, batch by batch."""
    n = len(d)
    k = n if top_k is None else min(int(top_k), n)
    rows = max(1, _ELEMENTS_PER_BATCH // max(n, 1))
    for start in range(0, len(q), rows):
        dist = hamming_distance(q[start:start + rows], d)
        if k < n:  # select the k smallest (distance, index) keys, then order them
            keys = dist.astype(np.int64) * n + np.arange(n)
            top = np.argpartition(keys, k - 1, axis=1)[:, :k]
            order = np.take_along_axis(top, np.argsort(
                np.take_along_axis(keys, top, axis=1), axis=1), axis=1)
        else:
            order = np.argsort(dist, axis=1, kind="stable")
        relevant = (ql[start:start + rows] @ dl.T) > 0
        yield np.take_along_axis(relevant, order, axis=1)


def _average_precisions(q, d, ql, dl, top_k):
    """AP per query from the positions of its relevant items only (sparse, no cumsum over
    the whole ranking): precision at the i-th relevant item = i / its rank."""
    out = []
    for rel in _ranked_relevance(q, d, ql, dl, top_k):
        rows, cols = np.nonzero(rel)  # row-major: each row's relevant ranks in order
        found = np.bincount(rows, minlength=len(rel))
        first = np.concatenate([[0], np.cumsum(found)[:-1]])
        nth = np.arange(1, len(rows) + 1) - first[rows]
        precision_sum = np.bincount(rows, weights=nth / (cols + 1.0), minlength=len(rel))
        out.append(np.where(found > 0, precision_sum / np.maximum(found, 1), 0.0))
    return np.concatenate(out)


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, top_k=None):
    """MAP of Hamming ranking (whole database when top_k is None) -> float."""
    return float(_average_precisions(*_check(query_codes, db_codes, query_labels, db_labels),
                                     top_k).mean())


def precision_at_k(query_codes, db_codes, query_labels, db_labels, k):
    """Mean over queries of (relevant items among the first k) / k -> float."""
    q, d, ql, dl = _check(query_codes, db_codes, query_labels, db_labels)
    k = min(int(k), len(d))
    return float(np.concatenate([rel.sum(1) / k for rel in _ranked_relevance(q, d, ql, dl, k)]
                                ).mean())


def targeted_map(query_codes, db_codes, db_labels, target_label, top_k=None):
    """t-MAP: MAP with every query judged against the one target class index -> float."""
    db_labels = np.asarray(db_labels)
    if not 0 <= target_label < db_labels.shape[1]:
        raise ValueError(f"target_label {target_label} outside 0..{db_labels.shape[1] - 1}")
    target = np.zeros((len(query_codes), db_labels.shape[1]), np.float32)
    target[:, target_label] = 1.0
    return mean_average_precision(query_codes, db_codes, target, db_labels, top_k)


def mean_average_precision_loop(query_codes, db_codes, query_labels, db_labels, top_k=None):
    """The straightforward per-query reference (one stable argsort per query): the
    definition spelled out, for tests and the benchmark of the vectorised version."""
    q, d, ql, dl = _check(query_codes, db_codes, query_labels, db_labels)
    k = len(d) if top_k is None else min(int(top_k), len(d))
    aps = []
    for i in range(len(q)):
        distance = 0.5 * (q.shape[1] - d @ q[i])
        ranked = np.argsort(distance, kind="stable")[:k]
        relevant = (dl[ranked] @ ql[i]) > 0
        positions = np.flatnonzero(relevant) + 1
        aps.append(np.mean(np.arange(1, len(positions) + 1) / positions) if len(positions) else 0)
    return float(np.mean(aps))
