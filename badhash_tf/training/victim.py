"""A victim (or the attacker's surrogate) end to end: train a hashing model with the shared
loop, encode the query and database splits, measure retrieval (and, for a backdoored
victim, t-MAP) every few epochs and at the end, and write metrics.json, metrics.md,
codes.npz (and, for train_victim, backbone.weights.h5)."""

import dataclasses
import json
import os

import numpy as np
import tensorflow as tf

from badhash_tf import io_utils
from badhash_tf.data import inputs
from badhash_tf.eval import retrieval
from badhash_tf.eval.codes import encode
from badhash_tf.models.hashing import HashingModel
from badhash_tf.training import distribute, hashing, loop

BACKBONE_WEIGHTS = "backbone.weights.h5"  # written beside metrics.json
METRICS = "metrics.json"
CODES = "codes.npz"


def best_of(evaluations, final):
    """The release's "best over the evaluations every 5 epochs": `final` {figure: float}
    (figures `map_at_k`, `t_map`) and the periodic `evaluations` -> {map_best, t_map_best}:
    each figure's maximum over all of them."""
    names = {"map_at_k": "map_best", "t_map": "t_map_best"}
    return {names[k]: max([e[k] for e in evaluations if k in e] + [v])
            for k, v in final.items() if k in names}


def train_and_evaluate(data_config, config, train_config, retrieval_config, output_dir,
                       strategy, train_split=None, record=None, backdoor=None,
                       initialize=None, trainer=None, splits=None, save_backbone=False):
    """Trains a hashing model into `output_dir` and evaluates it: writes codes.npz,
    metrics.json, metrics.md there (chief only; with `save_backbone` also
    backbone.weights.h5, reusable as --backbone_weights: train_victim's output, where a
    pipeline's victims would only copy their checkpoint) -> (model, metrics dict, codes) with codes = {"query": (codes, labels), "database": (codes, labels)}.
    `train_split` overrides the configured one (e.g. a poisoned split); `record` (e.g. the
    command line's flags) is stored in metrics.json as is. Every `eval_every_epochs` the
    model's MAP@k (and `backdoor(model, database codes)` -> {"t_map": float}, if given) is
    measured; metrics gain the release's best-so-far `map_best` (and `t_map_best`).
    `initialize(model)` sets the weights it starts from (fine-tuning; see hashing.py).
    `trainer(evaluate, evaluate_every_epochs)` -> (model, loop.LoopResult), when given,
    trains in place of the hashing loss (DarkHash's fine-tuning), checkpointing in
    `output_dir` under the name "model". `splits` {flag: Split}: the run's loaded splits
    (engine/plan.py's DataView), else loaded and checked here."""
    r = retrieval_config
    splits = splits or inputs.check_splits(data_config, {  # every split read, checked first
        "--query_split": r.query_split, "--database_split": r.database_split,
        **({} if train_split else {"--train_split": r.train_split})})
    train_split = train_split or splits["--train_split"]
    query_data, database_data = (
        inputs.eval_dataset(splits[flag], in_memory=data_config.cache == "memory")
        for flag in ("--query_split", "--database_split"))

    def encode_splits(model):
        return {"query": encode(model, query_data), "database": encode(model, database_data)}

    latest = {}  # the codes and figures of this process's last evaluation

    def evaluate(model):
        codes = encode_splits(model)
        (qc, ql), (dc, dl) = codes["query"], codes["database"]
        figures = {"map_at_k": retrieval.mean_average_precision(qc, dc, ql, dl, r.map_top_k)}
        figures.update(backdoor(model, codes["database"]) if backdoor else {})
        latest.update(codes=codes, figures=figures)
        return figures

    if trainer:
        model, result = trainer(evaluate, r.eval_every_epochs)
    else:
        model, result = hashing.train_hashing_model(train_split, data_config, config,
                                                    train_config, output_dir, strategy,
                                                    evaluate, r.eval_every_epochs, initialize)
    evaluated_last = result.evaluations and result.evaluations[-1]["step"] == result.step
    if not (evaluated_last and latest):  # else the final step was just evaluated
        evaluate(model)
    codes, final = latest["codes"], latest["figures"]
    metrics = retrieval.retrieval_metrics(codes["query"], codes["database"], r.map_top_k,
                                          r.precision_k)
    metrics.update(best_of(result.evaluations, final))
    metrics.update(seconds=result.seconds, train_steps=result.step,
                   resumed_from=result.resumed_from, train_examples=train_split.size,
                   final_loss=result.history["loss"][-1] if result.history["loss"] else None,
                   loss_history=result.history["loss"], evaluations=result.evaluations,
                   config=dataclasses.asdict(config), data=dataclasses.asdict(data_config),
                   train=dataclasses.asdict(train_config), **(record or {}))
    if distribute.is_chief(strategy):
        if save_backbone:
            with io_utils.atomic_path(f"{output_dir}/{BACKBONE_WEIGHTS}", ".weights.h5") as tmp:
                model.backbone.save_weights(tmp)
        query, database = codes["query"], codes["database"]
        io_utils.save_npz(f"{output_dir}/{CODES}", query_codes=query[0], query_labels=query[1],
                          db_codes=database[0], db_labels=database[1])
        io_utils.write_json(f"{output_dir}/{METRICS}", metrics)
        io_utils.write_text(f"{output_dir}/metrics.md", io_utils.markdown_table(
            [{"method": config.method, "bits": config.bits, "backbone": config.backbone,
              **{k: metrics[k] for k in ("map", "map_at_k", "map_best", "k",
                                         "precision_at_k")},
              "seconds": round(metrics["seconds"], 1)}],
            ["method", "bits", "backbone", "map", "map_at_k", "map_best", "k",
             "precision_at_k", "seconds"]))
    return model, metrics, codes


def load_finished(directory, config, image_size):
    """A victim finished earlier in `directory` (its checkpoint, metrics.json, codes.npz)
    -> (model, metrics, codes) as train_and_evaluate returned them, without training or
    encoding again (and without rewriting its files)."""
    model = HashingModel(config.bits, config.backbone, image_size, config.backbone_weights)
    loop.restore_latest_intact(tf.train.Checkpoint(model=model), directory)
    with open(os.path.join(directory, METRICS), encoding="utf-8") as f:
        metrics = json.load(f)
    with np.load(os.path.join(directory, CODES)) as saved:
        codes = {"query": (saved["query_codes"], saved["query_labels"]),
                 "database": (saved["db_codes"], saved["db_labels"])}
    return model, metrics, codes
