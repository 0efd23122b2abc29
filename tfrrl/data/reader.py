"""tf.data reader of a prepared dataset (the output of ``tfrrl prepare``).

Records are parsed with :func:`tfrrl.data.schema.parsing_spec` — the same schema module the Beam
link writes with — and categorical strings are mapped to ids by :class:`FeatureLookup`, built
from the link's vocabulary files (id layout: 0 padding, 1 OOV, 2 default, 3… values).
"""

from __future__ import annotations

import json
from typing import Dict, List, Mapping, Optional, Tuple

import keras
import tensorflow as tf

from tfrrl.artifacts import prepared
from tfrrl.data import schema

# The splits of a prepared dataset; each is the folder of that name (tfrrl.artifacts.prepared).
TRAIN, EVAL, CORPUS = prepared.TRAIN_DIR, prepared.EVAL_DIR, prepared.CORPUS_DIR


class PreparedDataset:
    """A prepared dataset folder: stats, vocabularies, and its TFRecord splits."""

    def __init__(self, data_dir: str):
        self.data_dir = data_dir
        stats_path = prepared.stats_path(data_dir)
        if not tf.io.gfile.exists(stats_path):
            raise prepared.PreparedDatasetError(
                f"{data_dir} is not a prepared dataset (no {prepared.STATS_FILE}): run "
                "`tfrrl prepare` and pass its --out folder")
        if not tf.io.gfile.exists(prepared.success_path(data_dir)):
            raise prepared.PreparedDatasetError(
                f"{data_dir} is incomplete (no {prepared.SUCCESS_FILE} marker): re-run "
                "`tfrrl prepare`")
        with tf.io.gfile.GFile(stats_path) as f:
            self.stats: Dict = json.load(f)
        self.sequence_length: int = int(self.stats["sequence_length"])

    # -- files -------------------------------------------------------------------------------
    def files(self, split: str) -> List[str]:
        files = sorted(tf.io.gfile.glob(prepared.split_pattern(self.data_dir, split)))
        if not files:
            raise prepared.PreparedDatasetError(
                f"no TFRecords for split {split!r} in {self.data_dir}: re-run `tfrrl prepare`")
        return files

    def vocabulary_path(self, name: str) -> str:
        return prepared.vocabulary_path(self.data_dir, name)

    def vocabulary(self, name: str) -> List[str]:
        with tf.io.gfile.GFile(self.vocabulary_path(name)) as f:
            return [line.rstrip("\n") for line in f]

    @property
    def domains(self) -> List[str]:
        return list(self.stats["domains"])

    def domains_in_vocabulary_order(self) -> List[str]:
        """The domain names by expert index k (= domain id − schema.FIRST_DOMAIN_ID): the domain
        vocabulary after its default token."""
        return self.vocabulary("domain")[schema.FIRST_DOMAIN_ID - schema.DEFAULT_ID:]

    def domain_sizes_in_vocabulary_order(self) -> Tuple[List[str], List[int]]:
        """(domain names, |D^k|) ordered by expert index k, the sizes from the stats."""
        names = self.domains_in_vocabulary_order()
        return names, [int(self.stats["domain_sizes"].get(n, 0)) for n in names]

    def features(self, split: str) -> List[schema.Feature]:
        if split == CORPUS:
            return schema.entity_record_features()
        return schema.example_features(self.sequence_length)

    # -- datasets ----------------------------------------------------------------------------
    def raw_dataset(self, split: str, batch_size: int, *, shuffle: bool = False,
                    seed: Optional[int] = None, repeat: bool = False,
                    drop_remainder: bool = False) -> tf.data.Dataset:
        """Batches of parsed string/number features (no vocabulary lookup)."""
        files = self.files(split)
        ds = tf.data.Dataset.from_tensor_slices(files)
        if shuffle:
            ds = ds.shuffle(len(files), seed=seed)
        ds = ds.interleave(tf.data.TFRecordDataset, cycle_length=min(4, len(files)),
                           num_parallel_calls=tf.data.AUTOTUNE, deterministic=not shuffle
                           or seed is not None)
        if shuffle:
            ds = ds.shuffle(buffer_size=max(1000, 20 * batch_size), seed=seed)
        if repeat:
            ds = ds.repeat()
        spec = schema.parsing_spec(self.features(split))
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
        if not repeat:
            # Known cardinality: Keras then sizes epochs and progress bars without probing.
            n = self.num_records(split)
            batches = n // batch_size if drop_remainder else -(-n // batch_size)
            ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
        return ds.map(lambda s: tf.io.parse_example(s, spec), num_parallel_calls=tf.data.AUTOTUNE)

    def num_records(self, split: str) -> int:
        key = {TRAIN: "num_train", EVAL: "num_eval", CORPUS: "corpus_size"}[split]
        return int(self.stats[key])

    def dataset(self, split: str, batch_size: int, **kwargs) -> tf.data.Dataset:
        """Batches with categorical features mapped to ids through the vocabularies."""
        lookup = FeatureLookup.from_dataset(self)
        return (self.raw_dataset(split, batch_size, **kwargs)
                .map(lookup, num_parallel_calls=tf.data.AUTOTUNE)
                .prefetch(tf.data.AUTOTUNE))


def entity_hash(keys: tf.Tensor) -> tf.Tensor:
    """int64 fingerprint of entity keys (``<type>:<id>``)."""
    return tf.strings.to_hash_bucket_fast(keys, 2 ** 62)


class FeatureLookup(keras.layers.Layer):
    """Maps every vocabulary-backed string feature of the schema to int ids.

    One ``StringLookup`` per vocabulary, shared by all features using it (``entity_id`` and
    ``seq_entity_id``…). Stock TF hash-table ops only, so it exports to a SavedModel and runs
    unchanged inside TF Serving. Non-vocabulary features pass through.
    """

    def __init__(self, vocabularies: Mapping[str, List[str]], sequence_length: int, **kwargs):
        super().__init__(**kwargs)
        self.vocabularies = {k: list(v) for k, v in vocabularies.items()}
        self.sequence_length = sequence_length
        self._features = {f.name: f for f in schema.example_features(sequence_length)}
        self._features.update({f.name: f for f in schema.entity_record_features()})
        self.lookups = {
            name: keras.layers.StringLookup(vocabulary=tokens, mask_token=schema.PAD_TOKEN,
                                            num_oov_indices=1, name=f"lookup_{name}")
            for name, tokens in self.vocabularies.items()
        }

    @classmethod
    def from_dataset(cls, data: PreparedDataset) -> "FeatureLookup":
        names = schema.vocabulary_names(data.sequence_length)
        return cls({n: data.vocabulary(n) for n in names}, data.sequence_length)

    def vocabulary_size(self, name: str) -> int:
        """Number of ids of a vocabulary, padding and OOV included."""
        return self.lookups[name].vocabulary_size()

    def build(self, input_shape=None):
        # The StringLookup tables are built from their vocabularies at construction.
        self.built = True

    def call(self, features: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        out = {}
        if "entity_id" in features and features["entity_id"].dtype == tf.string:
            # A collision-free-in-practice identity of the entity, independent of the
            # vocabulary (rare entities share the OOV id): used to mask accidental hits.
            out["entity_hash"] = entity_hash(features["entity_id"])
        for name, value in features.items():
            f = self._features.get(name)
            if f is not None and f.vocabulary is not None:
                out[name] = tf.cast(self.lookups[f.vocabulary](value), tf.int32)
            else:
                out[name] = value
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"vocabularies": self.vocabularies,
                       "sequence_length": self.sequence_length})
        return config
