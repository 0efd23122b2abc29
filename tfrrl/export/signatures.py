"""The serving signatures of an exported :class:`~tfrrl.model.scorer.Scorer` and the root object
of its SavedModel.

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

Inputs are checked inside the graph with stock ops (Assert, CheckNumerics), so TF Serving
answers INVALID_ARGUMENT exactly like the local server: features of one request must share one
batch size (:func:`same_batch`), an encoded ``domain_index`` must name an exported expert
(:func:`domain_in_range`: 0 <= k < K), and float features (the encodings, ``entity_repr``, the
raw numeric entity fields) must be finite (:func:`all_finite`) — a NaN or Inf would otherwise
come back as a NaN score with OK.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence

import keras
import tensorflow as tf

from tfrrl.artifacts.export_folder import INDEX_OUTPUT
from tfrrl.data import schema
from tfrrl.model.encoders.features import USER_CATEGORICAL
from tfrrl.model.scorer import scorer_of

SIGNATURES = ("encode_entities", "encode_user", "score_encoded", "score_candidates",
              "score_raw", "serving_default")

_TF_DTYPES = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}

# --------------------------------------------------------------------------------------------
# Raw-feature input specs (from the ONE schema).

def entity_input_names() -> List[str]:
    """Raw entity features a signature takes (the schema's entity features, no sampling_prob)."""
    return [f.name for f in schema.entity_features() if f.group != "logq"]


def user_input_names() -> List[str]:
    return USER_CATEGORICAL + ["seq_entity_id", "seq_entity_type", "seq_category",
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
    embedding sets and PEG these are the concatenations, tfrrl.model.encoders.embedding_sets)."""
    L = sequence_length
    return {
        "e_tran": tf.TensorSpec([None, widths["e_tran"]], tf.float32, name="e_tran"),
        "seq_keys": tf.TensorSpec([None, L, widths["seq_keys"]], tf.float32, name="seq_keys"),
        "seq_mask": tf.TensorSpec([None, L], tf.float32, name="seq_mask"),
        "domain_index": tf.TensorSpec([None], tf.int32, name="domain_index"),
        "e_did": tf.TensorSpec([None, widths["e_did"]], tf.float32, name="e_did"),
    }


# --------------------------------------------------------------------------------------------
def serving_variables(model) -> List[tf.Variable]:
    """Every variable of the scorer of ``model`` (a :class:`~tfrrl.model.matching.MatchingModel`
    or a :class:`~tfrrl.model.scorer.Scorer`) — exactly what an export holds."""
    return scorer_of(model).serving_variables()


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


def domain_in_range(domain_index: tf.Tensor, num_domains: int) -> tf.Tensor:
    """``domain_index`` behind a graph-side check that every entry names an exported expert,
    ``0 <= k < num_domains`` (stock Assert ops: INVALID_ARGUMENT on TF Serving too). Clipping
    instead would answer an out-of-range index with another domain's real-looking scores."""
    message = (f"domain_index must be in [0, {num_domains}) (the exported domains' experts; "
               "encode_user gives it)")
    checks = [tf.debugging.assert_greater_equal(domain_index, tf.constant(0, tf.int32),
                                                message=message),
              tf.debugging.assert_less(domain_index, tf.constant(num_domains, tf.int32),
                                       message=message)]
    with tf.control_dependencies(checks):
        return tf.identity(domain_index)


def all_finite(features: Mapping[str, tf.Tensor], names: Sequence[str], what: str
               ) -> Dict[str, tf.Tensor]:
    """``features`` with the float ones among ``names`` behind a CheckNumerics op each
    (INVALID_ARGUMENT "… must be finite" for a NaN or Inf), the others unchanged."""
    return {k: (tf.debugging.assert_all_finite(v, f"{what} {k} must be finite (no NaN / Inf)")
                if k in names and v.dtype.is_floating else v)
            for k, v in features.items()}


class ServingScorer:
    """The signature bodies over a :class:`~tfrrl.model.scorer.Scorer` (the exported object) and
    the vocabulary tables: raw features → ids → the scorer's own encoders and pair scoring, so
    export and training share one implementation of Eq. 1–11. A plain Python object: it is
    never part of the SavedModel's object graph (see :class:`BackboneServingModule`).
    """

    def __init__(self, model, tables: VocabularyTables, sequence_length: int):
        self.scorer = scorer_of(model)
        self.tables = tables
        self.num_domains = int(self.scorer.num_domains)
        # Set 0's widths; the encodings' widths (all embedding sets) come from the scorer.
        self.embedding_dim, self.representation_dim = self.scorer.input_sets.dims[0]
        self.widths = self.scorer.input_sets.widths()
        self.sequence_length = int(sequence_length)

    # -- helpers ----------------------------------------------------------------------------
    def serving_variables(self) -> List[tf.Variable]:
        return self.scorer.serving_variables()

    def _entities(self, raw):
        raw = same_batch({k: raw[k] for k in entity_input_names()}, "entity")
        raw = all_finite(raw, list(raw), "entity feature")
        ids = self.tables(raw)
        return self.scorer.encode_entities(ids)

    def _users(self, raw):
        raw = same_batch({k: raw[k] for k in user_input_names()}, "user")
        ids = self.tables(raw)
        enc = self.scorer.encode_users(ids)
        enc["domain_known"] = tf.cast(ids["domain"] >= schema.FIRST_DOMAIN_ID, tf.int32)
        return enc

    def _encoded_users(self, inputs):
        inputs = same_batch({k: inputs[k] for k in ENCODED_USER_INPUTS}, "encoded user")
        inputs = all_finite(inputs, ENCODED_USER_INPUTS, "encoded user input")
        return {"e_tran": inputs["e_tran"], "seq_keys": inputs["seq_keys"],
                "seq_mask": inputs["seq_mask"] > 0.5,
                "domain_index": domain_in_range(inputs["domain_index"], self.num_domains),
                "e_did": inputs["e_did"]}

    def _scores(self, users, entities):
        return {"scores": self.scorer.score_pairs(users, entities)["scores"]}

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
        entity_repr = tf.debugging.assert_all_finite(
            inputs[INDEX_OUTPUT], f"{INDEX_OUTPUT} must be finite (no NaN / Inf)")
        entities = self.scorer.input_sets.entities_from_repr(entity_repr)
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
        self.model_variables = _nested_by_path(scorer.serving_variables())
        self.vocabulary_tables = scorer.tables.resources()
