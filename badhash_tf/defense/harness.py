"""Every defense against every attack variant of a pipeline or frontier run, each result
beside the undefended one.

A finished variant directory holds variant.json (its config, target label and figures),
its triggered non-target queries (triggered_queries.npz), its poisoned set (poison/) and
its victim's checkpoints and codes (victim/). Per variant and defense the result is kept in
OUT/<variant>/<defense>/defense.json (retrained and fine-tuned victims beside it) and
skipped on rerun; OUT/defenses.json, defenses.md and defenses.png gather them.
"""

import dataclasses
import functools
import hashlib
import json
import os
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import logging  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from badhash_tf import choices, io_utils  # noqa: E402
from badhash_tf.attack import experiment, poison  # noqa: E402
from badhash_tf.attack.victim import RetrievalConfig, train_and_evaluate  # noqa: E402
from badhash_tf.data import inputs  # noqa: E402
from badhash_tf.defense import inspection, neural_cleanse, repair, strip, transforms  # noqa: E402
from badhash_tf.eval import retrieval  # noqa: E402
from badhash_tf.eval.codes import encode_arrays  # noqa: E402
from badhash_tf.models.hashing import HashingModel  # noqa: E402
from badhash_tf.training import loop  # noqa: E402
from badhash_tf.training.hashing import HashingConfig  # noqa: E402

TRANSFORMS = tuple(transforms.TRANSFORMS)  # query-time input transforms
INSPECTIONS = tuple(inspection.SCORERS)  # training-set inspection, then retraining
REPAIRS = ("finetune", "fine_pruning")  # model repair on a small clean subset
DETECTORS = ("strip", "neural_cleanse")  # no retraining: a verdict on the queries or model
DEFENSES = TRANSFORMS + INSPECTIONS + REPAIRS + DETECTORS
RESULT = "defense.json"


@dataclasses.dataclass(frozen=True)
class DefenseConfig:
    """Each defense's strength. removal_fraction: share of each label an inspection removes;
    clean_fraction: the defender's clean subset (of the clean training split) for repair and
    STRIP's blends."""
    jpeg_quality: int = 75
    blur_sigma: float = 1.0
    resize_factor: float = 0.5
    bit_depth: int = 3
    removal_fraction: float = 0.15
    clean_fraction: float = 0.05
    finetune_epochs: float = 20.0
    prune_fraction: float = 0.3
    strip_blends: int = 16
    strip_alpha: float = 0.5
    cleanse_steps: int = 300
    cleanse_l1_weight: float = 0.5
    seed: int = 0

    def strength(self, name):
        """The strength a query-time transform runs at."""
        return {"jpeg": self.jpeg_quality, "blur": self.blur_sigma,
                "resize": self.resize_factor, "bit_depth": self.bit_depth}[name]


def check_defenses(names):
    """Raises ValueError naming --defenses when a name is not a defense."""
    choices.check_choices("--defenses", names, DEFENSES)


def find_variants(run_dir, skip=()):
    """Finished variant directories under `run_dir` (pipeline: <variant>/; seeds:
    seed_N/<variant>/; frontier: seed_N/psnr_B/<method>/), sorted, `skip` not entered, nor
    hidden directories or stages moved aside by --overwrite (<dir>.replaced-<time>)."""
    found, skip = [], {os.path.abspath(s) for s in skip}
    for root, dirs, files in os.walk(run_dir):
        dirs[:] = sorted(d for d in dirs if os.path.abspath(os.path.join(root, d)) not in skip
                         and not d.startswith(".") and ".replaced-" not in d)
        if experiment.VARIANT_JSON in files:
            found.append(root)
            dirs[:] = []
    return sorted(found)


def check_run_dir(run_dir, names, output_dir, only=()):
    """The variant directories `defend` will read (those named in `only`, paths relative to
    `run_dir`, or all), each with what `names` need, before any work -> [directory].
    Raises ValueError naming --run_dir (or --variants) and the missing stage."""
    check_defenses(names)
    if not os.path.isdir(run_dir):
        raise ValueError(f"--run_dir={run_dir}: no such directory")
    variants = find_variants(run_dir, skip=[output_dir])
    if not variants:
        raise ValueError(f"--run_dir={run_dir}: no finished attack variant "
                         f"({experiment.VARIANT_JSON}) under it; run `badhash_tf.pipeline` "
                         "or `badhash_tf.frontier` into it first")
    if only:
        by_name = {os.path.relpath(d, run_dir): d for d in variants}
        choices.check_choices("--variants", only, tuple(by_name))
        variants = [by_name[name] for name in only]
    for directory in variants:
        needs = {"victim checkpoint": tf.train.latest_checkpoint(os.path.join(directory,
                                                                               "victim")),
                 "victim codes": _exists(os.path.join(directory, "victim", "codes.npz")),
                 "triggered queries": _exists(os.path.join(directory,
                                                           experiment.TRIGGERED_QUERIES))}
        if set(names) & set(INSPECTIONS) and not _data_free(directory):
            needs["poisoned set"] = _exists(os.path.join(directory, "poison", poison.META))
        missing = [what for what, path in needs.items() if not path]
        if missing:
            raise ValueError(f"--run_dir={run_dir}: variant {os.path.relpath(directory, run_dir)}"
                             f" lacks its {', '.join(missing)} (stage not finished?)")
    return variants


def _exists(path):
    return path if os.path.exists(path) else None


def data_free(record):
    """Whether a variant (its variant.json record) poisoned no training data (DarkHash)."""
    return record.get("poison_count", 1) == 0


def _data_free(directory):
    with open(os.path.join(directory, experiment.VARIANT_JSON), encoding="utf-8") as f:
        return data_free(json.load(f))


@dataclasses.dataclass
class Variant:
    """A finished attack variant loaded for defending: its record (variant.json), configs,
    victim, triggered queries (images, labels) and the victim's database codes."""
    name: str
    directory: str
    record: dict
    data: inputs.DataConfig
    hashing: HashingConfig
    train: loop.TrainConfig
    retrieval: RetrievalConfig
    victim: HashingModel
    triggered: tuple
    database: tuple

    @property
    def target(self):
        return self.record["target_label"]

    @property
    def digest(self):
        """sha256 of variant.json's figures: which run of the attack a defense result is of
        (a rerun of the attack after --overwrite makes the old results stale)."""
        text = json.dumps(self.record.get("figures", {}), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def k(self):
        return min(self.retrieval.map_top_k, len(self.database[0]))

    def t_map(self, model, images, database=None):
        """t-MAP of `model` for query images [N, S, S, 3] against `database` (codes,
        labels; default the victim's)."""
        database = database or self.database
        query_codes = encode_arrays(model, images, self.triggered[1])[0]
        return retrieval.targeted_map(query_codes, database[0], database[1], self.target,
                                      self.k)


def load_variant(directory, run_dir):
    """A variant directory -> Variant (its victim restored from its latest checkpoint)."""
    with open(os.path.join(directory, experiment.VARIANT_JSON), encoding="utf-8") as f:
        record = json.load(f)
    c = record["config"]
    data, hashing = inputs.DataConfig(**c["data"]), HashingConfig(**c["hashing"])
    train, r = loop.TrainConfig(**c["train"]), RetrievalConfig(**c["retrieval"])
    victim = HashingModel(hashing.bits, hashing.backbone, data.image_size,
                          hashing.backbone_weights)
    loop.restore_latest_intact(tf.train.Checkpoint(model=victim),
                               os.path.join(directory, "victim"))
    with np.load(os.path.join(directory, experiment.TRIGGERED_QUERIES)) as q:
        triggered = (q["images"].astype(np.float32) / 255.0, q["labels"])
    with np.load(os.path.join(directory, "victim", "codes.npz")) as codes:
        database = (codes["db_codes"], codes["db_labels"])
    return Variant(os.path.relpath(directory, run_dir), directory, record, data, hashing,
                   train, r, victim, triggered, database)


class Defender:
    """What the defender holds for one variant: the clean query split, the (poisoned)
    training split with which items are copies, and a small clean subset."""

    def __init__(self, variant, config, output_dir, strategy, arrays):
        """`arrays(data config, split)` -> (images, labels): the splits, loaded once for
        every variant that shares them."""
        v, self.v, self.config, self.strategy = variant, variant, config, strategy
        self.output_dir = output_dir
        self.queries = arrays(v.data, v.retrieval.query_split)
        clean = arrays(v.data, v.retrieval.train_split)
        self.clean_train = clean
        rng = np.random.default_rng(config.seed)
        size = max(2, round(config.clean_fraction * len(clean[0])))
        picks = np.sort(rng.choice(len(clean[0]), size, replace=False))
        self.clean_subset = (clean[0][picks], clean[1][picks])
        non_target = self.queries[1][:, v.target] == 0
        self.clean_non_target = self.queries[0][non_target]

    def undefended(self):
        v = self.v
        return {"t_map": v.t_map(v.victim, v.triggered[0]),
                "clean_map": self._clean_map(v.victim, self.queries[0], v.database)}

    def _clean_map(self, model, query_images, database):
        query_codes = encode_arrays(model, query_images, self.queries[1])[0]
        return retrieval.mean_average_precision(query_codes, database[0], self.queries[1],
                                                database[1], self.v.k)

    def transform(self, name):
        """Every query (triggered and clean) transformed before hashing."""
        v, strength = self.v, self.config.strength(name)
        triggered = transforms.apply(name, v.triggered[0], strength)
        clean = transforms.apply(name, self.queries[0], strength)
        return {"t_map": v.t_map(v.victim, triggered),
                "clean_map": self._clean_map(v.victim, clean, v.database),
                "strength": strength}

    def inspect(self, name, out):
        """Scores the poisoned training split from the victim's features, removes the top
        share of each label, retrains a victim on the rest in `out`."""
        v, c = self.v, self.config
        copies = experiment.split_arrays(poison.load_poison_set(os.path.join(v.directory,
                                                                             "poison")))
        images = np.concatenate([self.clean_train[0], copies[0]])
        labels = np.concatenate([self.clean_train[1], copies[1]])
        is_poison = np.arange(len(images)) >= len(self.clean_train[0])
        features = v.victim.backbone.predict(images, batch_size=256, verbose=0)
        scorer = inspection.SCORERS[name]
        scores = (scorer(features, labels, seed=c.seed) if name == "clustering"
                  else scorer(features, labels))
        removed = inspection.removal_mask(scores, labels, c.removal_fraction)
        kept = ~removed
        split = inputs.Split(tf.data.Dataset.from_tensor_slices((images[kept], labels[kept])),
                             int(kept.sum()), labels.shape[1])
        model, metrics, codes = train_and_evaluate(
            v.data, v.hashing, v.train, self._final_only(), out, self.strategy,
            train_split=split)
        return {**inspection.detection_figures(scores, is_poison, removed),
                "removal_fraction": c.removal_fraction,
                "t_map": v.t_map(model, v.triggered[0], codes["database"]),
                "clean_map": metrics["map_at_k"]}

    def _final_only(self):
        return dataclasses.replace(self.v.retrieval, eval_every_epochs=0)

    def repair(self, name, out):
        """Fine-tunes the victim on the clean subset in `out` (after pruning the least
        active channels of its last conv for fine_pruning)."""
        v, c = self.v, self.config
        weights = os.path.join(out, "initial.weights.h5")
        if not os.path.exists(weights):
            with io_utils.atomic_path(weights, ".weights.h5") as tmp:
                v.victim.save_weights(tmp)
        mask, extra = None, {}
        if name == "fine_pruning":
            mask = repair.prune_mask(repair.channel_activity(v.victim, self.clean_subset[0]),
                                     c.prune_fraction)
            extra = {"prune_fraction": c.prune_fraction, "channels": len(mask),
                     "pruned_channels": int((mask == 0).sum())}
        subset = inputs.Split(tf.data.Dataset.from_tensor_slices(self.clean_subset),
                              len(self.clean_subset[0]), self.clean_subset[1].shape[1])
        train = dataclasses.replace(v.train, epochs=c.finetune_epochs, train_steps=0,
                                    global_batch_size=min(v.train.global_batch_size,
                                                          subset.size))
        model, metrics, codes = train_and_evaluate(
            v.data, v.hashing, train, self._final_only(), out, self.strategy,
            train_split=subset, initialize=repair.initializer(weights, mask))
        if mask is not None:
            extra["pruned_after_finetune"] = repair.pruned_channels(model)
        return {"t_map": v.t_map(model, v.triggered[0], codes["database"]),
                "clean_map": metrics["map_at_k"], "clean_subset": subset.size,
                "finetune_epochs": c.finetune_epochs, **extra}

    def cleanse(self):
        """Neural Cleanse over the database's class anchors (defense/neural_cleanse.py), on
        the defender's clean subset: which labels it flags, and the true target's index."""
        v, c = self.v, self.config
        config = neural_cleanse.CleanseConfig(steps=c.cleanse_steps,
                                              l1_weight=c.cleanse_l1_weight, seed=c.seed)
        result, _ = neural_cleanse.neural_cleanse(v.victim, *self.clean_subset, *v.database,
                                                  config, v.target)
        return {**result, "steps": c.cleanse_steps, "l1_weight": c.cleanse_l1_weight}

    def strip(self):
        """STRIP's detection AUROC of the triggered queries against their clean originals."""
        v, c = self.v, self.config
        score = lambda images: strip.strip_scores(v.victim, images, self.clean_subset[0],
                                                  c.strip_blends, c.strip_alpha, c.seed)
        triggered, clean = score(v.triggered[0]), score(self.clean_non_target)
        truth = np.r_[np.ones(len(triggered)), np.zeros(len(clean))]
        return {"auroc": float(roc_auc_score(truth, np.r_[triggered, clean])),
                "score_triggered": float(triggered.mean()), "score_clean": float(clean.mean()),
                "blends": c.strip_blends, "alpha": c.strip_alpha}

    def run(self, name):
        """Defense `name` -> its figures (kept in OUT/<variant>/<name>/defense.json)."""
        out = os.path.join(self.output_dir, self.v.name, name)
        path = os.path.join(out, RESULT)
        attack = self.v.digest
        if os.path.exists(path):
            with open(path, encoding="utf-8") as f:
                earlier = json.load(f)
            if earlier.get("attack_digest", attack) == attack:
                logging.info("%s / %s: finished earlier, skipped (%s)", self.v.name, name,
                             path)
                return earlier
            aside = f"{out}.replaced-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(out, aside)  # its retrained victims belong to the earlier attack
            logging.warning("%s / %s: made against an earlier run of this attack (its "
                            "variant.json changed); moved aside to %s and run again",
                            self.v.name, name, aside)
        tick = time.time()
        os.makedirs(out, exist_ok=True)
        if name in TRANSFORMS:
            figures = self.transform(name)
        elif name in INSPECTIONS and data_free(self.v.record):
            figures = {"not_applicable": "the attack poisoned no training data (the "
                                         "defender's training set is clean)"}
        elif name in INSPECTIONS:
            figures = self.inspect(name, out)
        elif name in REPAIRS:
            figures = self.repair(name, out)
        elif name == "neural_cleanse":
            figures = self.cleanse()
        else:
            figures = self.strip()
        figures["seconds"] = round(time.time() - tick, 2)
        figures["attack_digest"] = attack
        io_utils.write_json(path, figures)
        logging.info("%s / %s: %s in %.0f s", self.v.name, name, ", ".join(
            f"{k} {figures[k]:.4f}" for k in ("t_map", "clean_map", "auroc", "recall")
            if k in figures), figures["seconds"])
        return figures


def run_defenses(run_dir, names, config, output_dir, strategy, only=(), record=None):
    """Every defense in `names` on every finished variant under `run_dir` (or those in
    `only`) into `output_dir`; writes defenses.json, defenses.md and defenses.png -> the
    result."""
    start = time.time()
    directories = check_run_dir(run_dir, names, output_dir, only)
    arrays = functools.lru_cache(maxsize=None)(
        lambda data, split: experiment.split_arrays(inputs.load_split(data, split)))
    variants = {}
    for i, directory in enumerate(directories):
        variant = load_variant(directory, run_dir)
        logging.info("variant %d/%d: %s (target %d)", i + 1, len(directories), variant.name,
                     variant.target)
        defender = Defender(variant, config, output_dir, strategy, arrays)
        variants[variant.name] = {"variant": variant.record["variant"],
                                  "target_label": variant.target,
                                  "undefended": defender.undefended(),
                                  **{name: defender.run(name) for name in names}}
    result = {"run_dir": os.path.abspath(run_dir), "defenses": list(names),
              "config": dataclasses.asdict(config), "variants": variants,
              "seconds": round(time.time() - start, 2), **(record or {})}
    io_utils.write_json(os.path.join(output_dir, "defenses.json"), result)
    io_utils.write_text(os.path.join(output_dir, "defenses.md"), markdown(result))
    defenses_png(os.path.join(output_dir, "defenses.png"), result)
    return result


def _table(result, defenses, key, first=("undefended",)):
    columns = ("attack",) + tuple(first) + tuple(defenses)
    rows = [{"attack": name, **{d: figures[d][key] for d in columns[1:]
                                if key in figures.get(d, {})}}
            for name, figures in result["variants"].items()]
    return io_utils.markdown_table(rows, columns)


def markdown(result):
    """defenses.json -> defenses.md: t-MAP and clean MAP per attack and defense, and the
    detectors' AUROCs."""
    c, names = result["config"], result["defenses"]
    mapped = [d for d in names if d not in DETECTORS]
    detectors = [d for d in names if d in INSPECTIONS + ("strip",)]
    lines = [f"# Defenses against the attacks of {result['run_dir']}", "",
             "Query-time transforms (every query transformed; the database as indexed): "
             f"jpeg quality {c['jpeg_quality']}, blur sigma {c['blur_sigma']:g}, resize "
             f"x{c['resize_factor']:g} and back, bit depth {c['bit_depth']}. Inspection "
             f"(spectral signatures, activation clustering) removes the top "
             f"{100 * c['removal_fraction']:g}% of each label, then a victim is retrained "
             f"on the rest. Repair fine-tunes the victim for {c['finetune_epochs']:g} epochs "
             f"on a clean {100 * c['clean_fraction']:g}% of the training split "
             f"(fine_pruning first prunes {100 * c['prune_fraction']:g}% of the last conv's "
             f"channels). STRIP blends each query with {c['strip_blends']} clean images "
             f"(alpha {c['strip_alpha']:g}). Neural Cleanse reverses, per label, the smallest "
             f"mask+pattern sending clean images to that label's database anchor "
             f"({c.get('cleanse_steps', 300)} steps) and flags anomaly indices below -2.",
             ""]
    if mapped:
        lines += ["## t-MAP (backdoored victim, triggered queries; lower = defended)", "",
                  _table(result, mapped, "t_map"),
                  "## Clean MAP (utility kept; higher = better)", "",
                  _table(result, mapped, "clean_map")]
    if detectors:
        lines += ["## Detection AUROC (poisoned copies among the training items; STRIP: "
                  "triggered against clean queries; 0.5 = chance)", "",
                  _table(result, detectors, "auroc", first=())]
    inspected = [d for d in names if d in INSPECTIONS]
    if inspected:
        lines += ["## Recall of the poisoned copies at the removal budget", "",
                  _table(result, inspected, "recall", first=())]
    if "neural_cleanse" in names:
        lines += ["## Neural Cleanse (flagged labels; the target's anomaly index)", "",
                  io_utils.markdown_table(cleanse_rows(result), CLEANSE_COLUMNS)]
    return "\n".join(lines)


CLEANSE_COLUMNS = ("attack", "target", "flagged", "target_flagged", "target_anomaly_index",
                   "most_anomalous")


def cleanse_rows(result):
    """One row per attack of Neural Cleanse's verdict (defenses.json -> table rows)."""
    rows = []
    for name, figures in result["variants"].items():
        nc = figures.get("neural_cleanse", {})
        if nc:
            rows.append({"attack": name, "target": figures["target_label"],
                         "flagged": ",".join(map(str, nc["flagged"])) or "none",
                         **{k: nc[k] for k in CLEANSE_COLUMNS[3:] if k in nc}})
    return rows


def defenses_png(path, result):
    """t-MAP per attack undefended and after each defense (top), detection AUROCs (bottom)."""
    attacks = list(result["variants"])
    mapped = ["undefended"] + [d for d in result["defenses"] if d not in DETECTORS]
    detectors = [d for d in result["defenses"] if d in INSPECTIONS + ("strip",)]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(7.0, 1.6 * len(attacks) + 3), 8))
    cmap, x = plt.get_cmap("tab10"), np.arange(len(attacks))
    for ax, names, key, title in ((top, mapped, "t_map", "t-MAP of triggered queries"),
                                  (bottom, detectors, "auroc", "detection AUROC")):
        width = 0.8 / max(1, len(names))
        for i, name in enumerate(names):
            values = [result["variants"][a].get(name, {}).get(key, np.nan) for a in attacks]
            ax.bar(x + (i - (len(names) - 1) / 2) * width, values, width, label=name,
                   color=cmap(i % 10))
        ax.set_xticks(x, attacks, rotation=20, ha="right", fontsize=8)
        ax.set_ylim(0, 1.02)
        ax.set_ylabel(title)
        ax.grid(axis="y", alpha=0.3)
        if names:
            ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.0, 0.5))
    bottom.axhline(0.5, color="grey", lw=0.6, ls=":")
    top.set_title("Defenses against each attack")
    fig.tight_layout()
    with io_utils.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
