"""Training-set inspection: the defender holds the (poisoned) training split and the
victim, scores every training item from the victim's features [N, D] per label, and removes
the highest-scoring share of each label before retraining. Items are grouped by their
first label (single-label datasets: their label).

- spectral signatures (Tran et al., 2018): the squared projection of an item's centred
  feature on its label's top singular direction;
- activation clustering (Chen et al., 2019): 2-means on the label's features reduced to a
  few principal components; the score is how much nearer an item is to the smaller
  cluster's centre than to the larger one's.
"""

import math
import os

import numpy as np
import tensorflow as tf
from sklearn.cluster import KMeans
from sklearn.metrics import roc_auc_score

from badhash_tf import registry
from badhash_tf.attack import poison
from badhash_tf.data import inputs
from badhash_tf.training.victim import train_and_evaluate


def groups(labels):
    """Multi-hot labels [N, C] -> the label each item is inspected under [N]."""
    return np.argmax(labels, axis=1)


def spectral_signature_scores(features, labels):
    """features [N, D], labels [N, C] -> outlier scores [N] (higher = more suspect)."""
    scores, group = np.zeros(len(features)), groups(labels)
    for g in np.unique(group):
        rows = group == g
        centred = features[rows] - features[rows].mean(0)
        if len(centred) < 2:
            continue
        direction = np.linalg.svd(centred, full_matrices=False)[2][0]
        scores[rows] = np.square(centred @ direction)
    return scores


def activation_clustering_scores(features, labels, components=10, seed=0):
    """features [N, D], labels [N, C] -> scores [N]: per label, distance to the larger
    2-means cluster's centre minus distance to the smaller one's, in the label's top
    `components` principal components."""
    scores, group = np.zeros(len(features)), groups(labels)
    for g in np.unique(group):
        rows = group == g
        if rows.sum() < 3:
            continue
        centred = features[rows] - features[rows].mean(0)
        k = min(components, *centred.shape)
        reduced = centred @ np.linalg.svd(centred, full_matrices=False)[2][:k].T
        fit = KMeans(2, n_init=10, random_state=seed).fit(reduced)
        small = int(np.argmin(np.bincount(fit.labels_, minlength=2)))
        distance = np.linalg.norm(reduced[:, None] - fit.cluster_centers_[None], axis=-1)
        scores[rows] = distance[:, 1 - small] - distance[:, small]
    return scores


SCORERS = {"spectral": spectral_signature_scores, "clustering": activation_clustering_scores}


def removal_mask(scores, labels, fraction):
    """True for the ceil(fraction x n) highest-scoring items of each label's n items (what
    the defender removes)."""
    removed, group = np.zeros(len(scores), bool), groups(labels)
    for g in np.unique(group):
        rows = np.flatnonzero(group == g)
        top = rows[np.argsort(-scores[rows], kind="stable")[:math.ceil(fraction * len(rows))]]
        removed[top] = True
    return removed


def detection_figures(scores, is_poison, removed):
    """-> {auroc (poisoned copies against the clean items), recall (share of the copies
    removed), removed (count), precision (share of the removed that are copies)}."""
    return {"auroc": float(roc_auc_score(is_poison, scores)),
            "recall": float(removed[is_poison].mean()), "removed": int(removed.sum()),
            "precision": float(is_poison[removed].mean()) if removed.any() else 0.0}


def _defense(name):
    """Scores the poisoned training split from the attacked victim's features, removes the
    top --removal_fraction of each label, retrains a victim on the rest in `out`."""
    def run(defender, out):
        v, c = defender.variant, defender.config
        copies = inputs.split_arrays(poison.load_poison_set(os.path.join(v.directory,
                                                                         "poison")))
        images = np.concatenate([defender.clean_train[0], copies[0]])
        labels = np.concatenate([defender.clean_train[1], copies[1]])
        is_poison = np.arange(len(images)) >= len(defender.clean_train[0])
        features = v.victim.backbone.predict(images, batch_size=256, verbose=0)
        scores = (SCORERS[name](features, labels, seed=c.seed) if name == "clustering"
                  else SCORERS[name](features, labels))
        removed = removal_mask(scores, labels, c.removal_fraction)
        kept = ~removed
        split = inputs.Split(tf.data.Dataset.from_tensor_slices((images[kept], labels[kept])),
                             int(kept.sum()), labels.shape[1])
        model, metrics, codes = train_and_evaluate(
            v.data, v.hashing, v.train, defender.final_only(), out, defender.strategy,
            train_split=split, splits=defender.eval_splits)
        return {**detection_figures(scores, is_poison, removed),
                "removal_fraction": c.removal_fraction,
                "t_map": defender.t_map(model, v.triggered[0], codes["database"]),
                "clean_map": metrics["map_at_k"]}
    return run


registry.register_defense(registry.DefenseSpec(
    "spectral", "spectral signatures (Tran et al., 2018), then retraining", "inspection",
    _defense("spectral"), fields=("removal_fraction",), needs_poisoned_set=True, order=10))
registry.register_defense(registry.DefenseSpec(
    "clustering", "activation clustering (Chen et al., 2019), then retraining", "inspection",
    _defense("clustering"), fields=("removal_fraction",), needs_poisoned_set=True, order=11))
