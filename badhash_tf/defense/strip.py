"""STRIP (Gao et al., 2019) adapted to hashing: a query is blended with clean images; a
triggered query's code stays unusually stable under the blending (the trigger dominates),
a clean query's changes. Score = mean over bits of |mean over blends of the blended codes'
bit| in [0, 1] (1: every blend gives the same code)."""

import numpy as np
from sklearn.metrics import roc_auc_score

from badhash_tf import registry


def strip_scores(model, queries, clean_pool, blends=16, alpha=0.5, seed=0, batch_size=256):
    """queries [N, S, S, 3], clean_pool [P, S, S, 3] -> stability scores [N] (higher = more
    likely triggered): each query blended as alpha q + (1 - alpha) c with `blends` clean
    images c drawn from the pool."""
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(clean_pool), (len(queries), blends))
    mixed = (alpha * queries[:, None] + (1.0 - alpha) * clean_pool[picks]).reshape(
        (-1,) + queries.shape[1:])
    u = model.predict(mixed.astype(np.float32), batch_size=batch_size, verbose=0)
    bits = np.where(u >= 0, 1.0, -1.0).reshape(len(queries), blends, -1)
    return np.abs(bits.mean(axis=1)).mean(axis=1)


def run(defender, out):
    """STRIP's detection AUROC of the triggered queries against the clean non-target ones."""
    del out  # (nothing is trained)
    v, c = defender.variant, defender.config
    score = lambda images: strip_scores(v.victim, images, defender.clean_subset[0],
                                        c.strip_blends, c.strip_alpha, c.seed)
    triggered, clean = score(v.triggered[0]), score(defender.clean_non_target)
    truth = np.r_[np.ones(len(triggered)), np.zeros(len(clean))]
    return {"auroc": float(roc_auc_score(truth, np.r_[triggered, clean])),
            "score_triggered": float(triggered.mean()), "score_clean": float(clean.mean()),
            "blends": c.strip_blends, "alpha": c.strip_alpha}


registry.register_defense(registry.DefenseSpec(
    "strip", "STRIP (Gao et al., 2019): how stable a query's code stays under blending",
    "detector", run, fields=("clean_fraction", "strip_blends", "strip_alpha"), order=30))
