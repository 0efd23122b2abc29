"""Backbone-only SavedModel export in TF Serving layout (``tfrrl export``, DESIGN.md §6).

Layout written under ``base_dir``::

    <base>/models.config                 TF Serving ModelServerConfig (text proto), every model
    <base>/README.md                     how to serve it with the official TF Serving image
    <base>/<name>/<version>/             the SavedModel TF Serving loads
        saved_model.pb, variables/, assets/<vocabulary>.txt
        export_manifest.json             signatures, domains, vocab sizes, dims (read by tfrrl_serving/)

A version folder is written under a hidden temporary name (``.tmp-…``, which TF Serving's version
poller ignores: it only loads integer names) and renamed into place once complete, so a
half-written version is never visible.

What is exported: the serving parts of a :class:`~tfrrl.model.matching.MatchingModel` — shared
embeddings, ad network, user transformer, target attention, hybrid-expert backbone — and the
vocabulary tables, nothing else. The SavedModel's root (:class:`BackboneServingModule`) tracks
exactly :func:`serving_variables` (plain ``tf.Variable``s, named by their Keras paths) and the
lookup tables; it never holds the model object, so the training-only RRL modules (domain
classifiers, projections, critics, σ's / fixed weights) and the optimizers cannot reach it. The
scoring code is the model's own (:meth:`MatchingModel.encode_users`, ``encode_entities``,
``pair_representations``, ``score_pairs`` are bound to :class:`ServingScorer`, a plain object that
holds only the serving layers), so served scores are the trained model's scores by construction;
should those methods ever touch an RRL module, export fails (``AttributeError``, or TF's
"untracked resource" error) instead of exporting it.

Keras 3 caveat handled here: ``tf.saved_model.save`` of Keras layers/variables writes a second,
unconnected copy of every variable, which TF2's ``tf.saved_model.load`` tolerates but TF
Serving's session-based C++ loader does not ("Could not find variable …",
keras-team/keras#20095, tensorflow/serving#2250). Tracking the underlying ``tf.Variable``s
avoids it; the tests run every signature through ``tf.compat.v1`` session loading to prove it.

Signatures (all take features as in the TFRecords; strings are mapped to vocabulary ids INSIDE
the graph by stock hash-table ops over ``assets/`` vocabulary files — unknown strings map to the
OOV id, never an error; B users, C candidates, L = the dataset's sequence length)::

    encode_entities  entity_* [N]                     → entity_repr [N, R+E], e_uee [N, R],
                                                        e_aid [N, E]
    encode_user      user_id, user_* [B], seq_* [B,L],
                     domain [B]                       → e_tran [B, R], seq_keys [B, L, E],
                                                        seq_mask [B, L] (float 0/1),
                                                        domain_index [B] (int32 expert k),
                                                        e_did [B, E], domain_known [B] (int32 0/1)
    score_encoded    encode_user outputs [B…] + entity_repr [C, R+E]            → scores [B, C]
    score_candidates encode_user outputs [B…] + raw entity_* features [C]        → scores [B, C]
    score_raw        raw user features [B] + raw entity_* features [C]          → scores [B, C]
    serving_default  = score_raw

``entity_repr`` (= E_uee ⊕ E_aid, the query of the target attention) is THE entity
representation: the retrieval index is built from it (L2 / HNSW graph over ``entity_repr``), and
``score_encoded`` takes cached ``entity_repr`` rows directly, so a server encodes the corpus once
and per request only runs ``encode_user`` (once) and ``score_encoded`` (per candidate batch).
A user's domain picks the expert/tower; an unknown domain string is routed to expert 0 like in
training, and reported by ``domain_known = 0`` so a server can reject the request.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
import uuid
from typing import Dict, List, Mapping, Optional, Sequence

import keras
import numpy as np
import tensorflow as tf

from tfrrl.data import schema
from tfrrl.model import inputs as input_modules
from tfrrl.model.matching import FIRST_DOMAIN_ID, MatchingModel

# Substrings of the training-only modules' variable paths; none may appear in an export.
RRL_MARKERS = ("dal", "mvwdl", "critic", "projection", "uwl", "fixed_weights", "optimizer")

INDEX_OUTPUT = "entity_repr"
SIGNATURES = ("encode_entities", "encode_user", "score_encoded", "score_candidates",
              "score_raw", "serving_default")
MANIFEST = "export_manifest.json"
MODELS_CONFIG = "models.config"

_TF_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}


# --------------------------------------------------------------------------------------------
# Raw-feature input specs (from the ONE schema).

def entity_input_names() -> List[str]:
    """Raw entity features a signature takes (the schema's entity features, no sampling_prob)."""
    return [f.name for f in schema.entity_features() if f.group != "logq"]


def user_input_names() -> List[str]:
    return input_modules.USER_CATEGORICAL + ["seq_entity_id", "seq_entity_type", "seq_category",
                                             "domain"]


def _raw_specs(names: Sequence[str], sequence_length: int) -> Dict[str, tf.TensorSpec]:
    features = {f.name: f for f in schema.example_features(sequence_length)}
    out = {}
    for name in names:
        f = features[name]
        shape = [None, f.length] if f.is_sequence else [None]
        out[name] = tf.TensorSpec(shape, _TF_DTYPES[f.dtype], name=name)
    return out


def _encoded_user_specs(sequence_length: int, widths: Mapping[str, int]
                        ) -> Dict[str, tf.TensorSpec]:
    """``widths``: last-axis widths of e_tran, seq_keys, e_did (EmbeddingSets.widths(): with M
    embedding sets and PEG these are the concatenations, tfrrl/model/embedding_sets.py)."""
    L = sequence_length
    return {
        "e_tran": tf.TensorSpec([None, widths["e_tran"]], tf.float32, name="e_tran"),
        "seq_keys": tf.TensorSpec([None, L, widths["seq_keys"]], tf.float32, name="seq_keys"),
        "seq_mask": tf.TensorSpec([None, L], tf.float32, name="seq_mask"),
        "domain_index": tf.TensorSpec([None], tf.int32, name="domain_index"),
        "e_did": tf.TensorSpec([None, widths["e_did"]], tf.float32, name="e_did"),
    }


# --------------------------------------------------------------------------------------------
# input_sets: embedding sets 1…M−1 and PEG's prior embeddings (no variables when M = 1).
SERVING_PARTS = ("embeddings", "ad_network", "user_transformer", "target_attention", "input_sets",
                 "backbone")


def serving_variables(model) -> List[tf.Variable]:
    """Every variable of the serving parts of ``model`` (deduplicated: the embeddings are shared
    by the ad network and the user transformer) — exactly what an export holds."""
    seen, out = set(), []
    for part in SERVING_PARTS:
        for v in getattr(model, part).weights:
            if id(v) not in seen:
                seen.add(id(v))
                out.append(v)
    return out


class VocabularyTables:
    """String → vocabulary id, the :class:`~tfrrl.data.reader.FeatureLookup` mapping over
    asset files.

    Same ``StringLookup`` configuration as ``FeatureLookup`` (mask "" → 0, one OOV bucket → 1,
    file line i → i + 2), but the vocabularies are SavedModel assets instead of graph constants,
    so a corpus of millions of entity ids does not bloat ``saved_model.pb``.
    """

    def __init__(self, vocabulary_files: Mapping[str, str], sequence_length: int):
        self.lookups = {
            name: keras.layers.StringLookup(vocabulary=path, mask_token=schema.PAD_TOKEN,
                                            num_oov_indices=1, name=f"lookup_{name}")
            for name, path in sorted(vocabulary_files.items())
        }
        self._vocabulary_of = {f.name: f.vocabulary
                               for f in schema.example_features(sequence_length)}

    def resources(self) -> Dict[str, tf.lookup.StaticHashTable]:
        """The hash tables (each with its vocabulary file as an asset) the SavedModel tracks."""
        return {name: layer.lookup_table for name, layer in self.lookups.items()}

    def __call__(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        out = {}
        for name, value in features.items():
            vocab = self._vocabulary_of.get(name)
            out[name] = (tf.cast(self.lookups[vocab](value), tf.int32) if vocab is not None
                         else value)
        return out


def _nested_by_path(variables: Sequence) -> Dict:
    """``{"backbone": {"tower_0": {…: tf.Variable}}}`` from the variables' Keras paths, so the
    checkpoint keys read ``model_variables/<keras path>/.ATTRIBUTES/VARIABLE_VALUE``."""
    root: Dict = {}
    for v in variables:
        parts = v.path.split("/")
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"variable path {v.path!r} clashes with another variable")
        if parts[-1] in node:
            raise ValueError(f"two serving variables share the path {v.path!r}")
        # The tf.Variable itself, not the Keras wrapper: a Keras 3 variable is exported as a
        # second, unconnected copy that TF Serving's session loader restores instead of the
        # one the functions read ("Could not find variable …", keras-team/keras#20095).
        tf_variable = v if isinstance(v, tf.Variable) else v.value
        if not isinstance(tf_variable, tf.Variable):
            raise TypeError(f"{v.path}: expected a tf.Variable under the Keras variable, got "
                            f"{type(tf_variable).__name__}")
        node[parts[-1]] = tf_variable
    return root


ENCODED_USER_INPUTS = ("e_tran", "seq_keys", "seq_mask", "domain_index", "e_did")


def same_batch(features: Mapping[str, tf.Tensor], what: str) -> Dict[str, tf.Tensor]:
    """``features`` behind a graph-side check that they share one batch size (stock Assert ops,
    so TF Serving answers INVALID_ARGUMENT too). Without it, a request whose features disagree
    in length could broadcast silently and be answered with scores of no user."""
    names = sorted(features)
    first = tf.shape(features[names[0]])[0]
    checks = [tf.debugging.assert_equal(
        tf.shape(features[n])[0], first,
        message=f"{what} features must share one batch size ({n} vs {names[0]})")
        for n in names[1:]]
    with tf.control_dependencies(checks):
        return {k: tf.identity(v) for k, v in features.items()}


class ServingScorer:
    """The serving parts of a :class:`MatchingModel` — and nothing else — with the signature
    bodies.

    The model's scoring methods are reused as this object's own (duck typing on the attributes
    below), so export and training share one implementation of Eq. 1–11. A plain Python object:
    it is never part of the SavedModel's object graph (see :class:`BackboneServingModule`).
    """

    encode_users = MatchingModel.encode_users
    encode_entities = MatchingModel.encode_entities
    pair_representations = MatchingModel.pair_representations
    score_pairs = MatchingModel.score_pairs

    def __init__(self, model: MatchingModel, tables: VocabularyTables, sequence_length: int):
        for part in SERVING_PARTS:
            setattr(self, part, getattr(model, part))
        self.tables = tables
        self.num_domains = int(model.num_domains)
        # Set 0's widths; the encodings' widths (all embedding sets) come from the model.
        self.embedding_dim, self.representation_dim = model.input_sets.dims[0]
        self.widths = model.input_sets.widths()
        self.sequence_length = int(sequence_length)

    # -- helpers ----------------------------------------------------------------------------
    def serving_variables(self) -> List[tf.Variable]:
        return serving_variables(self)

    def _entities(self, raw):
        raw = same_batch({k: raw[k] for k in entity_input_names()}, "entity")
        ids = self.tables(raw)
        return self.encode_entities(ids)

    def _users(self, raw):
        raw = same_batch({k: raw[k] for k in user_input_names()}, "user")
        ids = self.tables(raw)
        enc = self.encode_users(ids)
        enc["domain_known"] = tf.cast(ids["domain"] >= FIRST_DOMAIN_ID, tf.int32)
        return enc

    def _encoded_users(self, inputs):
        inputs = same_batch({k: inputs[k] for k in ENCODED_USER_INPUTS}, "encoded user")
        return {"e_tran": inputs["e_tran"], "seq_keys": inputs["seq_keys"],
                "seq_mask": inputs["seq_mask"] > 0.5,
                "domain_index": tf.clip_by_value(inputs["domain_index"], 0, self.num_domains - 1),
                "e_did": inputs["e_did"]}

    def _scores(self, users, entities):
        return {"scores": self.score_pairs(users, entities)["scores"]}

    # -- signature bodies ------------------------------------------------------------------
    def _encode_entities_raw(self, raw):
        enc = self._entities(raw)
        return {INDEX_OUTPUT: enc["target"], "e_uee": enc["e_uee"], "e_aid": enc["e_aid"]}

    def _encode_user_raw(self, raw):
        enc = self._users(raw)
        return {"e_tran": enc["e_tran"], "seq_keys": enc["seq_keys"],
                "seq_mask": tf.cast(enc["seq_mask"], tf.float32),
                "domain_index": tf.cast(enc["domain_index"], tf.int32),
                "e_did": enc["e_did"], "domain_known": enc["domain_known"]}

    def _score_encoded(self, inputs):
        entities = self.input_sets.entities_from_repr(inputs[INDEX_OUTPUT])
        return self._scores(self._encoded_users(inputs), entities)

    def _score_candidates(self, inputs):
        return self._scores(self._encoded_users(inputs), self._entities(inputs))

    def _score_raw(self, raw):
        return self._scores(self._users(raw), self._entities(raw))

    def signatures(self) -> Dict[str, tf.types.experimental.ConcreteFunction]:
        """The exported signatures (traced here; not attributes of the module, so each graph is
        saved once, as a signature)."""
        L = self.sequence_length
        entity_specs = _raw_specs(entity_input_names(), L)
        user_specs = _raw_specs(user_input_names(), L)
        encoded_specs = _encoded_user_specs(L, self.widths)
        repr_spec = {INDEX_OUTPUT: tf.TensorSpec([None, self.widths["entity_repr"]], tf.float32,
                                                 name=INDEX_OUTPUT)}

        def concrete(fn, specs):
            return tf.function(fn, input_signature=[specs]).get_concrete_function()

        score_raw = concrete(self._score_raw, {**user_specs, **entity_specs})
        return {"encode_entities": concrete(self._encode_entities_raw, entity_specs),
                "encode_user": concrete(self._encode_user_raw, user_specs),
                "score_encoded": concrete(self._score_encoded, {**encoded_specs, **repr_spec}),
                "score_candidates": concrete(self._score_candidates,
                                             {**encoded_specs, **entity_specs}),
                "score_raw": score_raw,
                "serving_default": score_raw}


class BackboneServingModule(tf.Module):
    """Root of the SavedModel: the serving variables and vocabulary tables, nothing else.

    It tracks the plain ``tf.Variable``s of :func:`serving_variables` (by Keras path) and the
    lookup tables, not Keras layers: TF Serving restores variables through the SavedModel's
    TF1 ``saver_def`` into the graph's variable handles, and only the handles the signature
    functions capture may be in it.
    """

    def __init__(self, scorer: ServingScorer):
        super().__init__(name="tfrrl_backbone")
        self.model_variables = _nested_by_path(serving_variables(scorer))
        self.vocabulary_tables = scorer.tables.resources()


# --------------------------------------------------------------------------------------------
def _is_local(path: str) -> bool:
    return "://" not in path


def _versions(model_dir: str) -> List[int]:
    if not tf.io.gfile.isdir(model_dir):
        return []
    return sorted(int(n.rstrip("/")) for n in tf.io.gfile.listdir(model_dir)
                  if re.fullmatch(r"\d+/?", n))


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
        f"docker run --rm -p 8500:8500 -p 8501:8501 \\",
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
        f"docker run --rm -p 8500:8500 -p 8501:8501 \\",
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
def export_backbone(model: MatchingModel, lookup, base_dir: str, name: str = "tfrrl",
                    version: Optional[int] = None, config_base_path: Optional[str] = None,
                    extra_manifest: Optional[Mapping] = None) -> str:
    """Exports the serving parts of ``model`` to ``<base_dir>/<name>/<version>``; returns it.

    ``lookup`` is the :class:`~tfrrl.data.reader.FeatureLookup` the model was trained with (its
    vocabularies become assets). ``version`` defaults to :func:`next_version`; an existing
    version is never overwritten. ``config_base_path`` is the model's base path written into
    ``<base_dir>/models.config`` (default ``/models/<name>``, the official image's mount point).
    """
    if not re.fullmatch(r"[A-Za-z0-9_.\-]+", name) or name.startswith("."):
        raise ValueError(f"invalid model name {name!r}")
    model_dir = os.path.join(base_dir, name)
    tf.io.gfile.makedirs(model_dir)
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
        scorer = ServingScorer(model, tables, sequence_length)
        signatures = scorer.signatures()
        module = BackboneServingModule(scorer)
        tf.saved_model.save(module, tmp_dir, signatures=signatures)
        domains = list(lookup.vocabularies["domain"][FIRST_DOMAIN_ID - 2:])
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
            "num_variables": len(serving_variables(scorer)),
            "num_parameters": int(sum(int(np.prod(v.shape))
                                      for v in serving_variables(scorer))),
            "id_layout": {"pad": schema.PAD_ID, "oov": schema.OOV_ID,
                          "default": schema.DEFAULT_ID, "first_domain": FIRST_DOMAIN_ID},
            "entity_inputs": entity_input_names(),
            "user_inputs": user_input_names(),
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


def export_run(run_dir: str, data_dir: Optional[str], out_dir: str, name: str = "tfrrl",
               version: Optional[int] = None) -> str:
    """``tfrrl export``: rebuilds a trained run (config.yaml + weights) and exports it.

    ``data_dir`` None = the prepared dataset the run was trained on (``run.json``)."""
    from tfrrl.data.reader import FeatureLookup, PreparedDataset
    from tfrrl.training import trainer

    data_dir = trainer.run_data_dir(run_dir, data_dir)
    data = PreparedDataset(data_dir)
    lookup = FeatureLookup.from_dataset(data)
    model = trainer.load_run(run_dir, data_dir)
    return export_backbone(model, lookup, out_dir, name=name, version=version,
                           extra_manifest={"run_dir": os.path.abspath(run_dir),
                                           "data_dir": os.path.abspath(data_dir)})


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m tfrrl.export --run RUN --data DATA --out EXPORT_DIR`` (= ``tfrrl export``)."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--run", required=True, help="training run folder (tfrrl train --out)")
    parser.add_argument("--data", required=True, help="the prepared dataset it was trained on")
    parser.add_argument("--out", required=True, help="export base folder (TF Serving layout)")
    parser.add_argument("--name", default="tfrrl")
    parser.add_argument("--version", type=int)
    args = parser.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    start = time.time()
    path = export_run(args.run, args.data, args.out, name=args.name, version=args.version)
    manifest = read_manifest(path)
    print(f"exported {path} in {time.time() - start:.1f}s; signatures: "
          f"{', '.join(manifest['signatures'])}")
    print(f"TF Serving config: {os.path.join(args.out, MODELS_CONFIG)}; "
          f"see {os.path.join(args.out, 'README.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
