"""Scorer-only SavedModel export in TF Serving layout (``tfrrl export``; RRL paper §IV: the
backbone is served, the RRL modules are training-only).

Layout written under ``base_dir``::

    <base>/models.config                 TF Serving ModelServerConfig (text proto), every model
    <base>/README.md                     how to serve it with the official TF Serving image
    <base>/<name>/<version>/             the SavedModel TF Serving loads
        saved_model.pb, variables/, assets/<vocabulary>.txt
        export_manifest.json             signatures, domains, vocab sizes, dims (tfrrl.artifacts.export_folder)

A version folder is written under a hidden temporary name (``.tmp-…``, which TF Serving's version
poller ignores: it only loads integer names) and renamed into place once complete, so a
half-written version is never visible. Stale ``.tmp-…`` folders of a killed export are removed by
the next one (:func:`tfrrl.artifacts.export_folder.remove_stale_temporary_folders`).

What is exported: the :class:`~tfrrl.model.scorer.Scorer` of a trained
:class:`~tfrrl.model.matching.MatchingModel` — shared embeddings, ad network, user transformer,
target attention, backbone — and the vocabulary tables, nothing else. The training-only modules
(the retrieval task, the RRL losses' classifiers, projections and critics, the loss weighting)
and the optimizers live outside the scorer, so they cannot reach the export. The SavedModel's
root (:class:`BackboneServingModule`) tracks exactly the scorer's variables (plain
``tf.Variable``s, named by their Keras paths) and the lookup tables. The signature bodies
(:class:`ServingScorer`) call the scorer's own ``encode_users``, ``encode_entities`` and
``score_pairs``, so served scores are the trained model's scores by construction.

The signatures and the SavedModel root are :mod:`tfrrl.export.signatures`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from tfrrl.artifacts import export_folder
from tfrrl.artifacts.export_folder import INDEX_OUTPUT, MANIFEST, MODELS_CONFIG
from tfrrl.data import schema
from tfrrl.data.corpus import ENTITY_KEY, load_corpus
from tfrrl.data.reader import FeatureLookup, PreparedDataset
from tfrrl.evaluation.prior_shift import PriorShift, domain_offsets
from tfrrl.evaluation.references import read_train_interactions
from tfrrl.evaluation.text import as_text
from tfrrl.progress import Steps
from tfrrl.export.signatures import (BackboneServingModule, ServingScorer, VocabularyTables,
                                     entity_input_names, user_input_names)
from tfrrl.training import trainer

# --------------------------------------------------------------------------------------------
def _is_local(path: str) -> bool:
    return "://" not in path


def _versions(model_dir: str) -> List[int]:
    if not tf.io.gfile.isdir(model_dir):
        return []
    versions = (export_folder.parse_version(n.rstrip("/"))
                for n in tf.io.gfile.listdir(model_dir))
    return sorted(v for v in versions if v is not None)


def next_version(model_dir: str) -> int:
    """``int(time.time())``, or the latest version + 1 if that is not newer (monotonic)."""
    existing = _versions(model_dir)
    return max([int(time.time())] + [v + 1 for v in existing])


def _write_text(path: str, text: str) -> None:
    """Writes through a temporary file and a rename, so readers never see a partial file."""
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _proto_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def read_models_config(path: str) -> Dict[str, str]:
    """``{name: base_path}`` of a ``models.config`` written by :func:`models_config_text`."""
    if not tf.io.gfile.exists(path):
        return {}
    with tf.io.gfile.GFile(path) as f:
        text = f.read()
    string = r'"((?:[^"\\]|\\.)*)"'
    pairs = re.findall(r"name:\s*" + string + r"\s*base_path:\s*" + string, text)
    unescape = lambda v: re.sub(r"\\(.)", r"\1", v)  # noqa: E731
    return {unescape(n): unescape(b) for n, b in pairs}


def models_config_text(models: Mapping[str, str]) -> str:
    """TF Serving ``ModelServerConfig`` text proto: ``{name: base_path}``, latest version."""
    blocks = []
    for name, base_path in sorted(models.items()):
        blocks.append(
            "  config {\n"
            f"    name: {_proto_string(name)}\n"
            f"    base_path: {_proto_string(base_path)}\n"
            '    model_platform: "tensorflow"\n'
            "    model_version_policy {\n"
            "      latest {\n"
            "        num_versions: 1\n"
            "      }\n"
            "    }\n"
            "  }\n")
    return "model_config_list {\n" + "".join(blocks) + "}\n"


def _exported_models(base_dir: str) -> List[str]:
    names = []
    for entry in sorted(tf.io.gfile.listdir(base_dir)):
        entry = entry.rstrip("/")
        model_dir = os.path.join(base_dir, entry)
        if tf.io.gfile.isdir(model_dir) and any(
                tf.io.gfile.exists(os.path.join(model_dir, str(v), "saved_model.pb"))
                for v in _versions(model_dir)):
            names.append(entry)
    return names


def _signature_description(fn) -> Dict:
    def spec(s):
        return {"dtype": s.dtype.name, "shape": [None if d is None else int(d) for d in s.shape]}

    args, kwargs = fn.structured_input_signature
    inputs = dict(kwargs) if kwargs else dict(args[0])
    outputs = fn.structured_outputs
    return {"inputs": {k: spec(v) for k, v in sorted(inputs.items())},
            "outputs": {k: spec(tf.TensorSpec.from_tensor(v)) for k, v in sorted(outputs.items())}}


def readme_text(base_dir: str, names: Sequence[str], manifest: Mapping) -> str:
    name = manifest["model_name"]
    sigs = manifest["signatures"]
    lines = [
        "# tfrrl backbone export (TF Serving layout)",
        "",
        "Written by `tfrrl export` (`tfrrl/export/saved_model.py`). Each `<name>/<version>/` folder is a",
        "SavedModel of the matching backbone ONLY (no RRL domain classifiers, projections,",
        "critics or uncertainty weights), with stock TensorFlow ops only: the official",
        "TF Serving image serves it as is.",
        "",
        "## Serve with the official TF Serving image",
        "",
        "```bash",
        "docker run --rm -p 8500:8500 -p 8501:8501 \\",
        f"  -v \"{os.path.abspath(base_dir) if _is_local(base_dir) else base_dir}:/models\" \\",
        f"  tensorflow/serving:{_serving_image_tag()} \\",
        "  --model_config_file=/models/models.config \\",
        "  --model_config_file_poll_wait_seconds=60",
        "```",
        "",
        f"(written with TensorFlow {tf.__version__}: use that TF Serving version or a later one.)",
        "",
        f"`models.config` names every model of this folder ({', '.join(names)}) with base path",
        "`/models/<name>` (the mount point above) and serves the latest version; TF Serving picks",
        "up new versions by itself. A single model also works without the config file:",
        "",
        "```bash",
        "docker run --rm -p 8500:8500 -p 8501:8501 \\",
        f"  -v \"<this folder>/{name}:/models/{name}\" -e MODEL_NAME={name} tensorflow/serving",
        "```",
        "",
        "Port 8500 is the gRPC `PredictionService` (what `tfrrl_serving/` talks to), 8501 REST.",
        "Versions are published atomically (written as `.tmp-*`, then renamed), so the server",
        "never loads a half-written version.",
        "",
        "## Signatures",
        "",
        "Raw features are the strings / floats of the TFRecords (`tfrrl/data/schema.py`);",
        "vocabulary lookup runs inside the graph and unknown values map to the OOV id.",
        "",
    ]
    for sig_name, sig in sigs.items():
        ins = ", ".join(f"{k} {v['dtype']}{v['shape']}" for k, v in sig["inputs"].items())
        outs = ", ".join(f"{k} {v['dtype']}{v['shape']}" for k, v in sig["outputs"].items())
        lines += [f"- `{sig_name}`: {ins} → {outs}"]
    lines += [
        "",
        f"Build the retrieval index from `encode_entities` output `{INDEX_OUTPUT}`;",
        "score cached index rows with `score_encoded` after one `encode_user` per request.",
        f"Domains in expert-index order: {manifest['domains']}. `encode_user` returns",
        "`domain_known = 0` for a domain string outside that list (it is then scored by expert 0).",
        "",
        "Example (REST, one entity with default features):",
        "",
        "```bash",
        f"curl -s localhost:8501/v1/models/{name}:predict -d '"
        + json.dumps({"signature_name": "encode_entities",
                      "inputs": {n: ([0.0] if sigs["encode_entities"]["inputs"][n]["dtype"]
                                     == "float32" else [schema.DEFAULT_TOKEN])
                                 for n in sigs["encode_entities"]["inputs"]}})
        + "'",
        "```",
        "",
    ]
    return "\n".join(lines)


def _serving_image_tag() -> str:
    # The official image version matching the TensorFlow the export was written with.
    major_minor = ".".join(tf.__version__.split(".")[:2])
    return f"{major_minor}.0"


# --------------------------------------------------------------------------------------------
def exported_domains(lookup) -> List[str]:
    """The domains of an export in expert-index order (the manifest's ``domains``)."""
    return list(lookup.vocabularies["domain"][schema.FIRST_DOMAIN_ID - 2:])


def export_backbone(model, lookup, base_dir: str, name: str = "tfrrl",
                    version: Optional[int] = None, config_base_path: Optional[str] = None,
                    extra_manifest: Optional[Mapping] = None,
                    steps: Optional[Steps] = None,
                    extra_arrays: Optional[Mapping[str, Mapping[str, np.ndarray]]] = None
                    ) -> str:
    """Exports the scorer of ``model`` (a MatchingModel or a Scorer) to
    ``<base_dir>/<name>/<version>``; returns it.

    ``lookup`` is the :class:`~tfrrl.data.reader.FeatureLookup` the model was trained with (its
    vocabularies become assets). ``version`` defaults to :func:`next_version`; an existing
    version is never overwritten. ``config_base_path`` is the model's base path written into
    ``<base_dir>/models.config`` (default ``/models/<name>``, the official image's mount point).
    ``steps``: a :class:`~tfrrl.progress.Steps` reporter told of the three steps here (tracing,
    writing the SavedModel, the serving files). ``extra_arrays``: ``{file name: {array name:
    array}}`` written (``np.savez``) into the version folder before it is published, e.g.
    :data:`~tfrrl.artifacts.export_folder.PRIOR_SHIFT`.
    """
    steps = steps or Steps("export", 3, None)
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name.startswith("."):
        raise ValueError(f"invalid model name {name!r}")
    model_dir = os.path.join(base_dir, name)
    tf.io.gfile.makedirs(model_dir)
    if _is_local(model_dir):  # a killed export / index left these; the log says so
        for path in export_folder.remove_stale_temporary_folders(model_dir):
            logging.getLogger(__name__).warning(
                "removed %s: a stale temporary folder left by an interrupted `tfrrl export` "
                "or `tfrrl index`", path)
    version = next_version(model_dir) if version is None else int(version)
    if version < 0:
        raise ValueError("version must be >= 0")
    final_dir = os.path.join(model_dir, str(version))
    if tf.io.gfile.exists(final_dir):
        raise FileExistsError(f"{final_dir} exists: versions are never overwritten")
    sequence_length = int(lookup.sequence_length)
    tmp_dir = os.path.join(model_dir, f".tmp-{version}-{uuid.uuid4().hex[:8]}")
    vocab_dir = tempfile.mkdtemp(prefix="tfrrl-vocab-")
    start = time.time()
    try:
        files = {}
        for vocab, tokens in lookup.vocabularies.items():
            bad = [t for t in tokens if "\n" in t or "\r" in t or t == schema.PAD_TOKEN]
            if bad:
                raise ValueError(f"vocabulary {vocab!r} has tokens that cannot be one line of "
                                 f"an asset file: {bad[:3]!r}")
            path = os.path.join(vocab_dir, f"{vocab}.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.writelines(f"{t}\n" for t in tokens)
            files[vocab] = path
        tables = VocabularyTables(files, sequence_length)
        for vocab in files:  # the same ids as the training lookup, or no export
            if tables.lookups[vocab].vocabulary_size() != lookup.vocabulary_size(vocab):
                raise ValueError(f"vocabulary {vocab!r}: asset table size differs from lookup")
        steps("tracing the serving signatures")
        scorer = ServingScorer(model, tables, sequence_length)
        signatures = scorer.signatures()
        module = BackboneServingModule(scorer)
        steps(f"writing the SavedModel {final_dir}")
        tf.saved_model.save(module, tmp_dir, signatures=signatures)
        domains = exported_domains(lookup)
        for file_name, arrays in (extra_arrays or {}).items():
            buffer = io.BytesIO()  # np.savez seeks; a GFile (e.g. gs://) cannot
            np.savez(buffer, **arrays)
            with tf.io.gfile.GFile(os.path.join(tmp_dir, file_name), "wb") as f:
                f.write(buffer.getvalue())
        manifest = {
            "format": "tfrrl-backbone-savedmodel/1",
            "model_name": name,
            "version": version,
            "created_unix": int(time.time()),
            "tensorflow_version": tf.__version__,
            "signatures": {k: _signature_description(fn) for k, fn in signatures.items()},
            "index_output": INDEX_OUTPUT,
            "index_signature": "encode_entities",
            "sequence_length": sequence_length,
            "domains": domains,
            "num_domains": scorer.num_domains,
            "vocabulary_sizes": {k: lookup.vocabulary_size(k)
                                 for k in sorted(lookup.vocabularies)},
            "dims": {"embedding_dim": scorer.embedding_dim,
                     "representation_dim": scorer.representation_dim,
                     "entity_repr_dim": scorer.widths["entity_repr"],
                     "encoded_widths": scorer.widths},
            "num_variables": len(scorer.serving_variables()),
            "num_parameters": int(sum(int(np.prod(v.shape))
                                      for v in scorer.serving_variables())),
            "id_layout": {"pad": schema.PAD_ID, "oov": schema.OOV_ID,
                          "default": schema.DEFAULT_ID, "first_domain": schema.FIRST_DOMAIN_ID},
            "entity_inputs": entity_input_names(),
            "user_inputs": user_input_names(),
            # The scoring path traced into score_encoded (model.pair_blocks, tfrrl.model.pairs).
            "pair_blocks": bool(scorer.scorer.pair_blocks),
        }
        if len(domains) != scorer.num_domains:
            raise ValueError(f"{len(domains)} domains in the vocabulary, model has "
                             f"{scorer.num_domains} experts")
        if extra_manifest:
            manifest.update(extra_manifest)
        manifest["export_seconds"] = round(time.time() - start, 3)
        with tf.io.gfile.GFile(os.path.join(tmp_dir, MANIFEST), "w") as f:
            json.dump(manifest, f, indent=2)
        tf.io.gfile.rename(tmp_dir, final_dir, overwrite=False)
    except BaseException:
        if tf.io.gfile.exists(tmp_dir):
            tf.io.gfile.rmtree(tmp_dir)
        raise
    finally:
        shutil.rmtree(vocab_dir, ignore_errors=True)
    steps(f"{MODELS_CONFIG} and README beside it")
    write_serving_files(base_dir, manifest,
                        {name: config_base_path or f"/models/{name}"})
    return final_dir


def write_serving_files(base_dir: str, manifest: Mapping,
                        base_paths: Optional[Mapping[str, str]] = None) -> None:
    """(Re)writes ``models.config`` (every exported model of ``base_dir``) and ``README.md``."""
    names = _exported_models(base_dir)
    config_path = os.path.join(base_dir, MODELS_CONFIG)
    previous = read_models_config(config_path)
    paths = {n: previous.get(n, f"/models/{n}") for n in names}
    paths.update(base_paths or {})
    _write_text(config_path, models_config_text(paths))
    _write_text(os.path.join(base_dir, "README.md"), readme_text(base_dir, names, manifest))


def read_manifest(version_dir: str) -> Dict:
    with tf.io.gfile.GFile(os.path.join(version_dir, MANIFEST)) as f:
        return json.load(f)


def latest_version_dir(export_dir: str, name: str = "tfrrl") -> str:
    """``<export_dir>/<name>/<latest version>`` (what TF Serving would load)."""
    model_dir = os.path.join(export_dir, name)
    versions = _versions(model_dir)
    if not versions:
        raise FileNotFoundError(f"no exported version under {model_dir}: run `tfrrl export`")
    return os.path.join(model_dir, str(versions[-1]))


def prior_shift_arrays(data: PreparedDataset, lookup: FeatureLookup, shift: PriorShift
                       ) -> Dict[str, np.ndarray]:
    """The :data:`~tfrrl.artifacts.export_folder.PRIOR_SHIFT` arrays of ``shift`` with counts
    from all of ``data``'s TRAIN rows: every corpus entity, the export's domains in expert-index
    order, β · offset [domains, entities] (:func:`tfrrl.evaluation.prior_shift.domain_offsets`)."""
    corpus = load_corpus(data, lookup)
    rows = read_train_interactions(data, corpus)
    domains = exported_domains(lookup)
    return {"entity_keys": np.asarray([as_text(k) for k in corpus[ENTITY_KEY]], dtype=str),
            "domains": np.asarray(domains, dtype=str),
            "offsets": domain_offsets(rows, shift, domains)}


def export_run(run_dir: str, data_dir: Optional[str], out_dir: str, name: str = "tfrrl",
               version: Optional[int] = None,
               progress: Optional[Callable[[str], None]] = None,
               prior_shift: Optional[Tuple[PriorShift, Mapping]] = None,
               pair_blocks: bool = False) -> str:
    """``tfrrl export``: rebuilds a trained run (config.yaml + weights) and exports it.

    ``data_dir`` None = the prepared dataset the run was trained on (``run.json``).
    ``progress``: called with one line per step (``export [k/4] …``). ``prior_shift`` = (a
    shift, the details of its choice): its offsets are exported beside the SavedModel
    (:func:`prior_shift_arrays`) and the matching service adds them to every score.
    ``pair_blocks``: the scoring path of the export, whatever the run trained with
    (``model.pair_blocks``: the first layers on r's blocks, or on r materialised; the same
    scores up to summation order, the same variables). Off by default: a request scores one
    user, where the blocks save nothing, and at 1M entities the materialised path scored the
    whole corpus ×1.2 faster and walked the index as fast (benchmarks/RESULTS.md, "The
    export's scoring path at 1M entities"). Turn it on for callers that score many users per
    call."""
    steps = Steps("export", 4, progress)
    data_dir = trainer.run_data_dir(run_dir, data_dir)
    steps(f"rebuilding the trained model of {run_dir}")
    data = PreparedDataset(data_dir)
    lookup = FeatureLookup.from_dataset(data)
    # Served scores are float32 whatever the run trained in (the variables are float32 anyway).
    model = trainer.load_run(run_dir, data_dir, overrides=[
        "model.compute_dtype=float32", f"model.pair_blocks={str(bool(pair_blocks)).lower()}"])
    extra = {"run_dir": os.path.abspath(run_dir), "data_dir": os.path.abspath(data_dir)}
    arrays = None
    if prior_shift is not None:
        arrays = {export_folder.PRIOR_SHIFT: prior_shift_arrays(data, lookup, prior_shift[0])}
        extra["prior_shift"] = dict(prior_shift[1], file=export_folder.PRIOR_SHIFT)
    return export_backbone(model, lookup, out_dir, name=name, version=version,
                           extra_manifest=extra, steps=steps, extra_arrays=arrays)
