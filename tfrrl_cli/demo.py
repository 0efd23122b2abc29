"""``tfrrl demo``: every stage once on the synthetic default — generate → prepare → read back →
train Backbone&RRL briefly → Recall@N vs popularity → export → index → serve → query (prints
the top-k)."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from typing import List, Sequence, Tuple

from tfrrl.data import synthetic  # light: numpy, no TensorFlow
from tfrrl_cli.console import quiet_tensorflow, say
# light: grpc + protos and numpy, no TensorFlow at import
from tfrrl_serving.matching.client import format_response, query
from tfrrl_serving.matching.server import start_server

NAME = "demo"
HELP = "run the pipeline end to end on the synthetic default"
STEPS = 7
# Backbone&RRL (Table IV's last row, configs/synthetic/backbone_rrl.yaml) over the built-in
# defaults, which equal configs/common.yaml: every RRL module on.
RRL_OVERRIDES = ("name=demo_backbone_rrl", "model.rrl.dal=true", "model.rrl.mvwdl=true",
                 "model.rrl.orthogonality=true", "model.rrl.uwl=true")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default="runs/demo")
    parser.add_argument("--impressions", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--steps-per-epoch", type=int, default=300)


def run(args: argparse.Namespace) -> int:
    # Beam (~1 s, logs at import) and TensorFlow (seconds) are kept out of `tfrrl --help`.
    from beam_pipelines.run import run_prepare
    from tfrrl_serving.indexing.build import build_indexes

    raw_dir = os.path.join(args.workdir, "raw")
    data_dir = os.path.join(args.workdir, "data")
    if os.path.exists(args.workdir):
        shutil.rmtree(args.workdir)
    say(f"[1/{STEPS}] generate {args.impressions:,} impressions → {raw_dir}")
    synthetic.generate(synthetic.SyntheticConfig(impressions=args.impressions, seed=args.seed),
                       raw_dir)
    say(f"[2/{STEPS}] prepare → {data_dir}")
    result = run_prepare(raw_dir, data_dir, beam_args=args.beam_args)
    say(f"[3/{STEPS}] read back through the tf.data reader")
    quiet_tensorflow()
    from tfrrl.data.reader import PreparedDataset

    data = PreparedDataset(data_dir)
    counts = {}
    for split in ("train", "eval", "corpus"):
        counts[split] = sum(int(b["entity_id"].shape[0]) for b in data.dataset(split, 4096))
    print(f"records parsed: {counts}")
    acc = result["accounting"]["impressions"]
    if counts["train"] != acc["train"] or counts["eval"] != acc["eval"]:
        print("error: records on disk differ from the accounting", file=sys.stderr)
        return 1
    from tfrrl import config, export
    from tfrrl.training import trainer

    run_dir = os.path.join(args.workdir, "run_backbone_rrl")
    exp = config.load_experiment(None, [*RRL_OVERRIDES, f"train.epochs={args.epochs}",
                                        f"train.steps_per_epoch={args.steps_per_epoch}"])
    say(f"[4/{STEPS}] train {exp.name} for {args.epochs} epoch(s) of {args.steps_per_epoch} "
        f"steps → {run_dir}; evaluate")
    model, _ = trainer.train(exp, data_dir, run_dir, verbose=2)
    print(trainer.recall_vs_popularity(model, data_dir, run_dir, max_queries=1000))

    export_dir = os.path.join(args.workdir, "export")
    say(f"[5/{STEPS}] export the backbone (TF Serving layout) → {export_dir}")
    version_dir = export.export_run(run_dir, data_dir, export_dir)
    print(f"SavedModel: {version_dir}")
    say(f"[6/{STEPS}] index: ScaNN + 4-layer HNSW over the entity representations")
    build_indexes(export_dir, data_dir)
    say(f"[7/{STEPS}] serve (gRPC on 127.0.0.1) and query")
    server = start_server(export_dir, port=0, data_dir=data_dir)
    try:
        store = server.servicer.user_store
        domains = server.servicer.model.domains
        print(f"MatchingService on {server.address}: model version {server.model_version}, "
              f"{server.servicer.model.num_entities:,} entities, {len(store):,} users")
        for user, domain in eval_queries(data, domains, store):
            print(f"\n$ tfrrl query --user {user} --domain {domain} --k 10 "
                  f"--port {server.port}")
            print(format_response(query(server.address, domain, 10, user)))
    finally:
        server.stop(grace=1.0)
    say(f"demo finished; data in {data_dir}, run in {run_dir}, export in {export_dir}. "
        f"Serve it with: tfrrl serve --export {export_dir}")
    return 0


def eval_queries(data, domains: Sequence[str], store, n: int = 2) -> List[Tuple[str, str]]:
    """``n`` (user, domain) pairs of eval-split impressions whose user is in the store, in
    different domains when the first rows allow it."""
    rows: List[Tuple[str, str]] = []
    for batch in data.raw_dataset("eval", 256).take(4):
        rows += [(u.decode(), d.decode()) for u, d in zip(batch["user_id"].numpy(),
                                                          batch["domain"].numpy())]
    rows = [(u, d) for u, d in rows if d in domains and store.get(u) is not None]
    picked: List[Tuple[str, str]] = []
    for u, d in rows:  # one per domain first, then any
        if len(picked) < n and d not in {pd for _, pd in picked}:
            picked.append((u, d))
    picked += [r for r in rows if r not in picked][:n - len(picked)]
    return picked
