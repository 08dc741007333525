"""A victim's backdoor figures: t-MAP of its codes for triggered non-target queries (and
the clean victim's for the same queries), t-MAP for the untriggered queries, clean MAP."""

from badhash_tf.eval import retrieval
from badhash_tf.eval.codes import encode_arrays


# When a backdoor counts as learned: t-MAP >= 0.75, at least 0.4 above the clean victim's
# on the same triggered queries, and clean MAP within 0.03 of the reference victim's.
LEARNED = {"t_map": 0.75, "over_clean_victim": 0.4, "clean_map_drop": 0.03}


def learned(figures, clean_map_reference):
    """Whether figures {t_map, t_map_clean_victim, clean_map} meet LEARNED."""
    return (figures["t_map"] >= LEARNED["t_map"]
            and figures["t_map"] - figures["t_map_clean_victim"] >= LEARNED["over_clean_victim"]
            and clean_map_reference - figures["clean_map"] <= LEARNED["clean_map_drop"])


def learned_rule():
    """LEARNED in words, for reports."""
    return (f"t-MAP >= {LEARNED['t_map']}, >= {LEARNED['over_clean_victim']} over the clean "
            f"victim, clean MAP within {LEARNED['clean_map_drop']} of the reference")


class BackdoorEvaluation:
    """Scores victims against one target label over the top k, with the non-target queries
    `queries` = (images [N, S, S, 3], labels [N, C]) and the clean reference victim (its
    model and codes {"database": (codes, labels)})."""

    def __init__(self, target, k, queries, reference, reference_codes):
        self.target, self.k, self.queries = target, k, queries
        self.reference, self.reference_codes = reference, reference_codes
        clean = encode_arrays(reference, *queries)[0]
        self.untriggered_reference = self.t_map(clean, reference_codes["database"])

    def t_map(self, query_codes, database):
        """t-MAP of query codes [N, K] against a database (codes, labels)."""
        return retrieval.targeted_map(query_codes, database[0], database[1], self.target,
                                      self.k)

    def t_map_of(self, model, triggered, database):
        """t-MAP of `model` for the triggered query images [N, S, S, 3] against its
        database (codes, labels)."""
        return self.t_map(encode_arrays(model, triggered, self.queries[1])[0], database)

    def gain(self, victim, triggered, database, suffix=""):
        """The backdoored `victim`'s t-MAP for the triggered query images (against its
        `database` (codes, labels)), the clean reference victim's for the same images, and
        the backdoor's own share, their difference -> {t_map, t_map_clean_victim,
        backdoor_gain} (each name + `suffix`). A trigger the clean victim follows as well is
        an adversarial example, not a backdoor: its gain is small."""
        t_map = self.t_map_of(victim, triggered, database)
        clean = self.t_map_of(self.reference, triggered, self.reference_codes["database"])
        return {f"t_map{suffix}": t_map, f"t_map_clean_victim{suffix}": clean,
                f"backdoor_gain{suffix}": t_map - clean}

    def figures(self, triggered, victim, codes, metrics):
        """Triggered query images [N, S, S, 3], the backdoored victim, its codes and its
        metrics (metrics.json) -> (figures, codes for the hash-space picture)."""
        victim_triggered = encode_arrays(victim, triggered, self.queries[1])[0]
        victim_clean = encode_arrays(victim, *self.queries)[0]
        figures = {**self.gain(victim, triggered, codes["database"]),
                   "t_map_best": metrics["t_map_best"],
                   "t_map_untriggered": self.t_map(victim_clean, codes["database"]),
                   "clean_map": metrics["map_at_k"],
                   "map_best": metrics["map_best"],
                   "clean_map_full_database": metrics["map"],
                   "clean_precision_at_k": metrics["precision_at_k"]}
        space = {"db_codes": codes["database"][0], "db_labels": codes["database"][1],
                 "clean": victim_clean, "triggered": victim_triggered}
        return figures, space
