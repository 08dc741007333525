"""Hamming-ranking retrieval metrics as the deep-hashing literature defines them.

Codes are +-1 arrays [n, K] (any numeric dtype); labels are multi-hot [n, C]. A database
item is relevant to a query when they share at least one label. The database is ranked by
Hamming distance `0.5 * (K - <b_q, b_d>)`, ties broken by database index (stable). AP over
the top k is the mean of precision@rank over the relevant items found in those k; a query
with none adds 0 but still counts in the mean (DeepHash-pytorch `CalcTopMap`).

How: codes are packed into uint64 words, distances are XOR + popcount (`np.bitwise_count`)
as uint8 (K < 256) or uint16; the whole-database ranking is a stable counting sort of those
small integers (NumPy's radix argsort); for top k, a binary search on counts of
`distance <= c` gives the cut-off distance, so only the k nearest items are ordered and
judged. Single-label relevance compares class ids; multi-label relevance ANDs packed label
bitsets. Queries run one row at a time (in cache) in tasks of bounded size on a thread
pool (NumPy releases the GIL), each task with preallocated buffers.
"""

import concurrent.futures
import os

import numpy as np

_ROWS_PER_TASK = 256  # query rows a thread handles at once (one row in memory at a time)


def _as_codes(codes, name):
    codes = np.asarray(codes)
    if codes.ndim != 2:
        raise ValueError(f"{name} must be 2-D [n, bits], got shape {codes.shape}")
    if not np.isin(codes, (-1, 1)).all():
        raise ValueError(f"{name} must hold only -1 and +1 (binarise with sign first)")
    return codes


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


def pack_bits(bits):
    """Boolean [n, K] -> uint64 [n, ceil(K / 64)] (zero-padded, so padding never differs)."""
    bits = np.asarray(bits, bool)
    words = -(-bits.shape[1] // 64)
    padded = np.zeros((len(bits), words * 64), bool)
    padded[:, :bits.shape[1]] = bits
    return np.ascontiguousarray(np.packbits(padded, axis=1)).view(np.uint64)


def pack_codes(codes):
    """+-1 codes [n, K] -> uint64 words [n, ceil(K / 64)] (bit set where the code is +1)."""
    return pack_bits(np.asarray(codes) > 0)


class _Workspace:
    """One task's preallocated [N] buffers: fresh large arrays each row would cost page
    faults, which serialise threads (measured: 2 threads ran no faster than 1)."""

    def __init__(self, n, bits):
        self.scratch = np.empty(n, np.uint64)
        self.count = np.empty(n, np.uint8)
        self.distance = np.empty(n, np.uint8 if bits < 256 else np.uint16)
        self.mask, self.ranked = np.empty(n, bool), np.empty(n, bool)


def _row_distances(query_row, db_words, bits, work=None):
    """Packed [W], [N, W] -> [N] distances: XOR + popcount, word by word (into `work`'s
    buffers when given; the returned array is then one of them)."""
    work = work or _Workspace(len(db_words), bits)
    distance = work.distance
    for w in range(len(query_row)):
        np.bitwise_xor(db_words[:, w], query_row[w], out=work.scratch)
        if w == 0 and distance.dtype == np.uint8:
            np.bitwise_count(work.scratch, out=distance)
            continue
        np.bitwise_count(work.scratch, out=work.count)
        if w == 0:
            distance[:] = work.count
        else:
            distance += work.count
    return distance


def _distances(query_words, db_words, bits):
    """Packed [b, W], [N, W] -> Hamming distances [b, N], uint8 (K < 256) or uint16."""
    return np.stack([_row_distances(row, db_words, bits).copy() for row in query_words])


def hamming_distance(query_codes, db_codes):
    """+-1 codes [Q, K], [N, K] -> [Q, N] integer Hamming distances (uint8 or uint16)."""
    q, d = _as_codes(query_codes, "query_codes"), _as_codes(db_codes, "db_codes")
    return _distances(pack_codes(q), pack_codes(d), q.shape[1])


class _Labels:
    """Relevance of database items to a query: class ids when every row holds exactly one
    label (a byte compare), packed label bitsets otherwise."""

    def __init__(self, query_labels, db_labels):
        single = lambda labels: bool(((labels > 0).sum(1) == 1).all())
        self.single = single(query_labels) and single(db_labels)
        if self.single:
            dtype = np.uint8 if query_labels.shape[1] <= 256 else np.int32
            self.query = query_labels.argmax(1).astype(dtype)
            self.db = db_labels.argmax(1).astype(dtype)
        else:
            self.query, self.db = pack_bits(query_labels > 0), pack_bits(db_labels > 0)

    def relevant(self, row, items=None, out=None):
        """Query `row` x database `items` (indices, or None for all) -> bool [n]."""
        db = self.db if items is None else self.db[items]
        if self.single:
            return np.equal(db, self.query[row], out=out)
        return np.any(db & self.query[row], axis=-1, out=out)


def _nearest(distance, k, bits, work=None):
    """Distances [N] -> the indices of the k nearest items ordered by (distance, index).
    For k < N the cut-off distance (where the k-th item falls) is found by a binary search
    on counts, so only the items within it are sorted."""
    if k >= len(distance):
        return np.argsort(distance, kind="stable")  # a counting (radix) sort of small ints
    mask = np.empty(len(distance), bool) if work is None else work.mask
    count = lambda c: np.count_nonzero(np.less_equal(distance, c, out=mask))
    low, high = 0, bits  # count(high) = N >= k
    while low < high:
        middle = (low + high) // 2
        low, high = (middle + 1, high) if count(middle) < k else (low, middle)
    np.less_equal(distance, low, out=mask)
    chosen = np.flatnonzero(mask)  # index order
    if len(chosen) > k:  # drop the last ties at the cut-off, past the k-th item
        at_cutoff = np.flatnonzero(distance[chosen] == low)
        chosen = np.delete(chosen, at_cutoff[k - len(chosen):])
    return chosen[np.argsort(distance[chosen], kind="stable")]


def _average_precision(relevant):
    """Relevance [k] in rank order -> AP from the relevant positions only."""
    ranks = np.flatnonzero(relevant) + 1.0
    return float(np.mean(np.arange(1, len(ranks) + 1) / ranks)) if len(ranks) else 0.0


def _per_query(fn, q, d, ql, dl, top_k, workers=None):
    """fn(distance [N], labels, row, k, bits, workspace) -> float for every query row, over
    batches of rows on a thread pool (NumPy releases the GIL) -> [Q] in query order."""
    bits, n = q.shape[1], len(d)
    k = n if top_k is None else min(int(top_k), n)
    query_words, db_words, labels = pack_codes(q), pack_codes(d), _Labels(ql, dl)

    def run(rows):
        work = _Workspace(n, bits)
        return [fn(_row_distances(query_words[row], db_words, bits, work), labels, row, k,
                   bits, work) for row in rows]

    batches = [range(start, min(start + _ROWS_PER_TASK, len(q)))
               for start in range(0, len(q), _ROWS_PER_TASK)]
    workers = min(workers or os.cpu_count() or 1, max(len(batches), 1))
    if workers <= 1:
        return np.array([value for rows in batches for value in run(rows)])
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return np.array([value for values in pool.map(run, batches) for value in values])


def _query_ap(distance, labels, row, k, bits, work):
    order = _nearest(distance, k, bits, work)
    if k == len(distance):  # judge every item at once, then read them in rank order
        relevant = labels.relevant(row, out=work.mask)
        return _average_precision(np.take(relevant, order, out=work.ranked))
    return _average_precision(labels.relevant(row, order))


def _average_precisions(q, d, ql, dl, top_k):
    return _per_query(_query_ap, q, d, ql, dl, top_k)


def mean_average_precision(query_codes, db_codes, query_labels, db_labels, top_k=None):
    """MAP of Hamming ranking (whole database when top_k is None) -> float."""
    return float(_average_precisions(*_check(query_codes, db_codes, query_labels, db_labels),
                                     top_k).mean())


def precision_at_k(query_codes, db_codes, query_labels, db_labels, k):
    """Mean over queries of (relevant items among the first k) / k -> float."""
    q, d, ql, dl = _check(query_codes, db_codes, query_labels, db_labels)

    def precision(distance, labels, row, top, bits, work):
        return labels.relevant(row, _nearest(distance, top, bits, work)).sum() / top

    return float(_per_query(precision, q, d, ql, dl, k).mean())


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
    q, d = q.astype(np.float32), d.astype(np.float32)
    k = len(d) if top_k is None else min(int(top_k), len(d))
    aps = []
    for i in range(len(q)):
        distance = 0.5 * (q.shape[1] - d @ q[i])
        ranked = np.argsort(distance, kind="stable")[:k]
        relevant = (dl[ranked] @ ql[i]) > 0
        positions = np.flatnonzero(relevant) + 1
        aps.append(np.mean(np.arange(1, len(positions) + 1) / positions) if len(positions) else 0)
    return float(np.mean(aps))


def retrieval_metrics(query, database, top_k, precision_k):
    """(codes, labels) of the queries and of the database -> {map, map_at_k, k,
    precision_at_k, precision_k}."""
    (qc, ql), (dc, dl) = query, database
    return {
        "map": mean_average_precision(qc, dc, ql, dl),
        "map_at_k": mean_average_precision(qc, dc, ql, dl, top_k=top_k),
        "k": min(top_k, len(dc)),
        "precision_at_k": precision_at_k(qc, dc, ql, dl, precision_k),
        "precision_k": min(precision_k, len(dc)),
    }
