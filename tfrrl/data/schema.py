"""The unified feature schema: ONE source of truth for the pipeline, the trainer and the server.

The Beam link (``beam_pipelines/``) writes ``tf.train.Example`` records with
:func:`encode_example` / :func:`encode_entity`; the tf.data reader parses them with
:func:`parsing_spec`; the serving signatures take the same raw (string) features. Categorical
features are stored as strings and mapped to ids by vocabulary files written by the pipeline
(:mod:`tfrrl.data.vocabulary`), so the id of a value is decided in exactly one place.

Feature groups follow the RRL paper's Table I:

=========  =====================================================================
E_u        user profile (user id, age bucket, gender, city, occupation)
E_a        unified entity features (category, brand, shop, shop level, creator,
           price, duration) — identical for every entity type (UMES, §IV-A)
E_seq      the user's exposure sequence strictly before the example's timestamp
E_aid      entity identifier (``<type>:<id>``)
E_did      domain indicator
E_ac       entity class (entity type)
=========  =====================================================================

plus the label and the entity's sampling probability for the logQ correction (Eq. 2).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

# --------------------------------------------------------------------------------------------
# Raw contract column names (impressions).
IMPRESSION_COLUMNS: Tuple[str, ...] = (
    "user_id", "entity_id", "entity_type", "domain", "timestamp", "click",
)

# Unified user fields (E_u, besides the id). All categorical.
USER_FIELDS: Tuple[str, ...] = ("age_bucket", "gender", "city", "occupation")

# Unified entity fields (E_a). Categorical ones are strings; numeric ones are floats.
ENTITY_CATEGORICAL_FIELDS: Tuple[str, ...] = ("category", "brand", "shop", "shop_level", "creator")
ENTITY_NUMERIC_FIELDS: Tuple[str, ...] = ("price", "duration")
ENTITY_FIELDS: Tuple[str, ...] = ENTITY_CATEGORICAL_FIELDS + ENTITY_NUMERIC_FIELDS
# Fields a linked content entity (video, live stream…) inherits from the product it promotes
# when its own catalog does not define them (the paper's live-stream example).
INHERITABLE_FIELDS: Tuple[str, ...] = ("category", "brand", "shop", "price")

# Explicit defaults for fields an entity type (or a user) lacks. The default token is reserved
# in every vocabulary (id DEFAULT_ID), so "missing for this type" is never confused with OOV.
DEFAULT_TOKEN = "<none>"
NUMERIC_DEFAULT = 0.0

# Id layout of every vocabulary (keras.layers.StringLookup with mask_token="" and one OOV
# bucket): 0 = padding (empty string), 1 = out-of-vocabulary, 2 = DEFAULT_TOKEN, 3… = values.
PAD_TOKEN = ""
PAD_ID, OOV_ID, DEFAULT_ID = 0, 1, 2
# The domain vocabulary lists the K domains right after DEFAULT_TOKEN: domain id − FIRST_DOMAIN_ID
# is the expert index k ∈ [0, K) of Alg. 1's routing.
FIRST_DOMAIN_ID = DEFAULT_ID + 1

DEFAULT_SEQUENCE_LENGTH = 20


@dataclasses.dataclass(frozen=True)
class Feature:
    """One feature of a TFRecord.

    ``vocabulary`` names the vocabulary file a string feature is mapped through (several
    features may share one, e.g. ``entity_id`` and ``seq_entity_id``). ``length`` > 1 means a
    fixed-length list (sequences, padded with PAD_TOKEN).
    """

    name: str
    dtype: str  # "string" | "int64" | "float32"
    group: str  # Table I group, "label", "logq" or "meta"
    vocabulary: Optional[str] = None
    length: int = 1
    default: Any = None

    @property
    def is_sequence(self) -> bool:
        return self.length > 1


def user_feature_name(field: str) -> str:
    return f"user_{field}"


def entity_feature_name(field: str) -> str:
    return f"entity_{field}"


def _entity_features() -> List[Feature]:
    feats = [
        Feature("entity_id", "string", "E_aid", vocabulary="entity_id", default=DEFAULT_TOKEN),
        Feature("entity_type", "string", "E_ac", vocabulary="entity_type", default=DEFAULT_TOKEN),
    ]
    feats += [
        Feature(entity_feature_name(f), "string", "E_a", vocabulary=f, default=DEFAULT_TOKEN)
        for f in ENTITY_CATEGORICAL_FIELDS
    ]
    feats += [
        Feature(entity_feature_name(f), "float32", "E_a", default=NUMERIC_DEFAULT)
        for f in ENTITY_NUMERIC_FIELDS
    ]
    feats.append(Feature("sampling_prob", "float32", "logq", default=0.0))
    return feats


@functools.lru_cache(maxsize=None)
def _entity_features_cached() -> Tuple[Feature, ...]:
    return tuple(_entity_features())


def entity_features() -> List[Feature]:
    """Features of one entity: the corpus records and the target-entity part of an example."""
    return list(_entity_features_cached())


def example_features(sequence_length: int = DEFAULT_SEQUENCE_LENGTH) -> List[Feature]:
    """Features of one training / eval example (user × entity × domain at a timestamp)."""
    return list(_example_features_cached(sequence_length))


@functools.lru_cache(maxsize=None)
def _example_features_cached(sequence_length: int) -> Tuple[Feature, ...]:
    L = sequence_length
    feats = [Feature("user_id", "string", "E_u", vocabulary="user_id", default=DEFAULT_TOKEN)]
    feats += [
        Feature(user_feature_name(f), "string", "E_u", vocabulary=f, default=DEFAULT_TOKEN)
        for f in USER_FIELDS
    ]
    feats += [
        Feature("seq_entity_id", "string", "E_seq", vocabulary="entity_id", length=L),
        Feature("seq_entity_type", "string", "E_seq", vocabulary="entity_type", length=L),
        Feature("seq_category", "string", "E_seq", vocabulary="category", length=L),
        Feature("seq_length", "int64", "E_seq", default=0),
    ]
    feats += entity_features()
    feats += [
        Feature("domain", "string", "E_did", vocabulary="domain", default=DEFAULT_TOKEN),
        Feature("label", "float32", "label", default=1.0),
        Feature("timestamp", "int64", "meta", default=0),
    ]
    return tuple(feats)


@functools.lru_cache(maxsize=None)
def _entity_record_features_cached() -> Tuple[Feature, ...]:
    return tuple(entity_features() + [Feature("train_count", "int64", "meta", default=0)])


def entity_record_features() -> List[Feature]:
    """Features of an entity-corpus record (entity features + its training count)."""
    return list(_entity_record_features_cached())


def vocabulary_names(sequence_length: int = DEFAULT_SEQUENCE_LENGTH) -> List[str]:
    names: List[str] = []
    for f in example_features(sequence_length):
        if f.vocabulary and f.vocabulary not in names:
            names.append(f.vocabulary)
    return names


# --------------------------------------------------------------------------------------------
# Pure-Python value normalisation shared by the pipeline and the server.

def clean_token(value: Any) -> str:
    """A categorical raw value as the string stored in the TFRecords ('' / None → default)."""
    if value is None:
        return DEFAULT_TOKEN
    if isinstance(value, float):
        if math.isnan(value):
            return DEFAULT_TOKEN
        if value.is_integer():
            value = int(value)
    text = str(value).strip()
    return text if text else DEFAULT_TOKEN


def parse_number(value: Any) -> float:
    """A numeric raw value; '' / None → the numeric default; raises ValueError otherwise."""
    if value is None:
        return NUMERIC_DEFAULT
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        number = float(value)
    else:
        text = str(value).strip()
        if not text:
            return NUMERIC_DEFAULT
        number = float(text)
    if not math.isfinite(number):
        raise ValueError(f"non-finite number {value!r}")
    return number


def pad_sequence(values: Sequence[str], length: int) -> List[str]:
    """Most recent last, left-truncated to ``length``, right-padded with PAD_TOKEN."""
    values = list(values)[-length:] if length > 0 else []
    return values + [PAD_TOKEN] * (length - len(values))


# --------------------------------------------------------------------------------------------
# tf.train.Example encoding / parsing (TensorFlow imported lazily: the link's pure functions
# and the generator must not pay for it).

def _encode(features: Sequence[Feature], values: Mapping[str, Any]) -> bytes:
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel

    example = example_pb2.Example()
    fmap = example.features.feature
    for f in features:
        v = values.get(f.name, f.default)
        if v is None:
            raise ValueError(f"feature {f.name!r} has no value and no default")
        seq = v if isinstance(v, (list, tuple)) else [v]
        if f.is_sequence and len(seq) != f.length:
            raise ValueError(f"feature {f.name!r}: expected {f.length} values, got {len(seq)}")
        if f.dtype == "string":
            fmap[f.name].bytes_list.value.extend(
                s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in seq
            )
        elif f.dtype == "int64":
            fmap[f.name].int64_list.value.extend(int(s) for s in seq)
        else:
            fmap[f.name].float_list.value.extend(float(s) for s in seq)
    # Map fields (the feature map) serialize in hash order unless asked otherwise: the same
    # example would give other bytes in another process, and the link's files would not be
    # byte-identical from run to run.
    return example.SerializeToString(deterministic=True)


def encode_example(values: Mapping[str, Any],
                   sequence_length: int = DEFAULT_SEQUENCE_LENGTH) -> bytes:
    return _encode(_example_features_cached(sequence_length), values)


def encode_entity(values: Mapping[str, Any]) -> bytes:
    return _encode(_entity_record_features_cached(), values)


def parsing_spec(features: Iterable[Feature]) -> Dict[str, Any]:
    """``tf.io.parse_example`` spec for the given features."""
    import tensorflow as tf  # pylint: disable=import-outside-toplevel

    dtypes = {"string": tf.string, "int64": tf.int64, "float32": tf.float32}
    return {
        f.name: tf.io.FixedLenFeature([f.length] if f.length > 1 else [], dtypes[f.dtype])
        for f in features
    }


_SEQUENCE_NAMES = frozenset(f.name for f in example_features() if f.group == "E_seq"
                            and f.name != "seq_length")


def decode(serialized: bytes) -> Dict[str, Any]:
    """Decodes one record to Python values (tests, debugging, the CLI's ``inspect``)."""
    from tensorflow.core.example import example_pb2  # pylint: disable=import-outside-toplevel

    example = example_pb2.Example.FromString(serialized)
    out: Dict[str, Any] = {}
    for name, feat in example.features.feature.items():
        kind = feat.WhichOneof("kind")
        vals = list(getattr(feat, kind).value)
        if kind == "bytes_list":
            vals = [v.decode("utf-8") for v in vals]
        out[name] = vals if len(vals) != 1 or name in _SEQUENCE_NAMES else vals[0]
    return out
