"""Pure functions of the unified entity feature link (UMES, RRL paper §IV-A).

Everything here is plain Python on dicts so it can be unit-tested without Beam and reused by
the single-process baseline of ``benchmarks/pipeline_throughput.py``; the modules of
``beam_pipelines/stages`` wire these functions into an Apache Beam pipeline.

A row that cannot be used raises :class:`RowError` with a machine-readable ``reason``; the
pipeline turns it into a dead-letter record. Reasons (each counted):

``empty_line`` ``bad_encoding`` ``bad_json`` ``missing_column`` ``missing_value``
``bad_number`` ``unknown_entity_type`` ``unknown_entity`` ``unknown_user`` ``duplicate_row``
``duplicate_entity`` ``duplicate_user``
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import hashlib
import heapq
import json
import re
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

from beam_pipelines import encoding
from tfrrl.data import schema
from tfrrl.data.link_spec import DatasetSpec, EntityTypeSpec, UsersSpec, entity_key

DEAD_LETTER_REASONS = (
    "empty_line", "bad_encoding", "bad_json", "missing_column", "missing_value", "bad_number",
    "unknown_entity_type", "unknown_entity", "unknown_user", "duplicate_row",
    "duplicate_entity", "duplicate_user",
)
# Rows removed by an explicit rule (not errors): counted separately.
FILTER_RULES = ("not_clicked",)

TRAIN, EVAL = "train", "eval"


class RowError(ValueError):
    """A raw row that cannot be used; ``reason`` is one of DEAD_LETTER_REASONS."""

    def __init__(self, reason: str, detail: str = ""):
        assert reason in DEAD_LETTER_REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def dead_letter_row(row: Any) -> Any:
    """The row as a dead-letter record shows it (JSON-able primitives, no ``_`` fields).

    Idempotent, so a row can be reduced to this form as soon as it is validated and carried
    compactly (a dict of primitives) until a later step dead-letters it.
    """
    if isinstance(row, bytes):
        return row.decode("utf-8", errors="backslashreplace")
    if isinstance(row, dict):
        return {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
                for k, v in row.items() if not str(k).startswith("_")}
    return row


def dead_letter(source: str, reason: str, row: Any, detail: str = "") -> Dict[str, Any]:
    """The JSON-able dead-letter record: where it came from, why, and the row itself."""
    return {"source": source, "reason": reason, "detail": detail, "row": dead_letter_row(row)}


# --------------------------------------------------------------------------------------------
# Reading raw text rows.

def decode_text_line(line: bytes) -> str:
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as e:
        raise RowError("bad_encoding", str(e)) from None
    if text.startswith("\ufeff"):  # a BOM on a data line
        text = text[1:]
    if not text.strip():
        raise RowError("empty_line")
    return text


_CSV_SPECIAL = re.compile('["\\r\\n\\x00]')  # what csv.reader handles specially


def parse_delimited_line(line: bytes, header: Sequence[str], delimiter: str) -> Dict[str, str]:
    """One CSV/TSV data line → dict by header. Wrong field count → ``missing_column``.

    A line without a quote, line break or NUL is split on the delimiter directly: for such a
    line that IS what ``csv.reader`` returns (tests/test_transforms.py compares both); any other
    line goes through ``csv.reader``."""
    text = decode_text_line(line)
    if _CSV_SPECIAL.search(text) is None:
        fields = text.split(delimiter)
    else:
        try:
            fields = next(csv.reader([text], delimiter=delimiter, strict=True))
        except csv.Error as e:
            raise RowError("missing_column", f"unparseable line: {e}") from None
    if len(fields) != len(header):
        raise RowError("missing_column", f"expected {len(header)} fields, got {len(fields)}")
    return dict(zip(header, fields))


def parse_json_line(line: bytes) -> Dict[str, Any]:
    text = decode_text_line(line)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as e:
        raise RowError("bad_json", str(e)) from None
    if not isinstance(value, dict):
        raise RowError("bad_json", f"expected an object, got {type(value).__name__}")
    return value


def parse_header(first_line: bytes, delimiter: str) -> List[str]:
    text = first_line.decode("utf-8-sig").rstrip("\r\n")
    return [h.strip() for h in next(csv.reader([text], delimiter=delimiter))]


def _get(row: Mapping[str, Any], column: str) -> Any:
    if column not in row:
        raise RowError("missing_column", f"column {column!r} absent")
    return row[column]


def _required_token(row: Mapping[str, Any], column: str) -> str:
    value = schema.clean_token(_get(row, column))
    if value == schema.DEFAULT_TOKEN:
        raise RowError("missing_value", f"column {column!r} is empty")
    return value


def _number(row: Mapping[str, Any], column: str) -> float:
    try:
        return schema.parse_number(_get(row, column))
    except ValueError:
        raise RowError("bad_number", f"column {column!r}={row.get(column)!r}") from None


# --------------------------------------------------------------------------------------------
# Catalogs → unified entity records.

def normalize_entity(row: Mapping[str, Any], type_name: str,
                     spec: EntityTypeSpec) -> Dict[str, Any]:
    """One catalog row → a unified entity record (UMES).

    Fields the catalog maps are parsed; every other unified field takes its explicit default
    (schema.DEFAULT_TOKEN / schema.NUMERIC_DEFAULT). A linked entity keeps the key of the
    entity it promotes in ``_link`` so :func:`inherit_linked` can complete it.
    """
    entity_id = _required_token(row, spec.id_column)
    record: Dict[str, Any] = default_entity(type_name, entity_id)
    for field, column in spec.fields.items():
        if field in schema.ENTITY_NUMERIC_FIELDS:
            record[schema.entity_feature_name(field)] = _number(row, column)
        else:
            record[schema.entity_feature_name(field)] = schema.clean_token(_get(row, column))
    if spec.link is not None:
        linked = schema.clean_token(_get(row, spec.link.column))
        record["_link"] = (
            entity_key(spec.link.entity_type, linked) if linked != schema.DEFAULT_TOKEN else None
        )
    return record


def default_entity(type_name: str, entity_id: str) -> Dict[str, Any]:
    """An entity with every unified field at its default (types without a catalog)."""
    record: Dict[str, Any] = {
        "entity_id": entity_key(type_name, entity_id),
        "entity_type": type_name,
    }
    for field in schema.ENTITY_CATEGORICAL_FIELDS:
        record[schema.entity_feature_name(field)] = schema.DEFAULT_TOKEN
    for field in schema.ENTITY_NUMERIC_FIELDS:
        record[schema.entity_feature_name(field)] = schema.NUMERIC_DEFAULT
    return record


def _is_default(value: Any) -> bool:
    return value == schema.DEFAULT_TOKEN or value == schema.NUMERIC_DEFAULT


def inherit_linked(record: Dict[str, Any], linked: Optional[Mapping[str, Any]]) -> Dict[str, Any]:
    """A content entity takes the features of the product it promotes (RRL §IV-A).

    Only schema.INHERITABLE_FIELDS that the entity's own catalog left at default are filled.
    ``linked`` None (the linked product is not in its catalog) keeps the defaults.
    """
    out = {k: v for k, v in record.items() if k != "_link"}
    if linked is None:
        return out
    for field in schema.INHERITABLE_FIELDS:
        name = schema.entity_feature_name(field)
        if _is_default(out[name]):
            out[name] = linked[name]
    return out


# --------------------------------------------------------------------------------------------
# Users.

def normalize_user(row: Mapping[str, Any], spec: UsersSpec) -> Tuple[str, Dict[str, str]]:
    user_id = _required_token(row, spec.id_column)
    profile = {schema.user_feature_name(f): schema.DEFAULT_TOKEN for f in schema.USER_FIELDS}
    for field, column in spec.fields.items():
        profile[schema.user_feature_name(field)] = schema.clean_token(_get(row, column))
    return user_id, profile


def default_profile() -> Dict[str, str]:
    return {schema.user_feature_name(f): schema.DEFAULT_TOKEN for f in schema.USER_FIELDS}


# --------------------------------------------------------------------------------------------
# Impressions.

def parse_impression(row: Mapping[str, Any], spec: DatasetSpec) -> Dict[str, Any]:
    """A raw impression row → a validated impression dict (contract names)."""
    imp_spec = spec.impressions
    entity_type = _required_token(row, imp_spec.column("entity_type"))
    if entity_type not in spec.entity_types:
        raise RowError("unknown_entity_type", f"{entity_type!r} not in {sorted(spec.entity_types)}")
    imp: Dict[str, Any] = {
        "user_id": _required_token(row, imp_spec.column("user_id")),
        "entity_type": entity_type,
        "entity_id": _required_token(row, imp_spec.column("entity_id")),
        "domain": _required_token(row, imp_spec.column("domain")),
    }
    ts_col = imp_spec.column("timestamp")
    if ts_col:
        ts = _number(row, ts_col)
        if not str(_get(row, ts_col)).strip():
            raise RowError("missing_value", f"column {ts_col!r} is empty")
        imp["timestamp"] = int(ts)
    else:
        imp["timestamp"] = None
    click_col = imp_spec.column("click")
    if click_col:
        click = _number(row, click_col)
        if click not in (0.0, 1.0):
            raise RowError("bad_number", f"click must be 0 or 1, got {row.get(click_col)!r}")
        imp["click"] = int(click)
    else:
        imp["click"] = 1
    imp["key"] = entity_key(entity_type, imp["entity_id"])
    return imp


# A validated impression as a compact tuple (what crosses the impression-sized shuffles): the
# contract values the later steps read, and the raw row only for a later dead letter.
IMPRESSION_FIELDS: Tuple[str, ...] = (
    "key", "entity_type", "user_id", "domain", "timestamp", "click", "_row")
# After the entity join an impression also carries its entity's category (for E_seq); the other
# entity features are attached to the examples by entity key at the end.
EXPOSURE_FIELDS: Tuple[str, ...] = IMPRESSION_FIELDS + ("entity_category",)


def impression_tuple(imp: Mapping[str, Any], row: Any, delimited: bool = False
                     ) -> Tuple[Any, ...]:
    """A parsed impression → its compact tuple (IMPRESSION_FIELDS order); ``delimited``: the
    row came from a CSV/TSV file (:func:`carried_row`)."""
    values = dict(imp, _row=carried_row(row, delimited))
    return tuple(values[f] for f in IMPRESSION_FIELDS)


def carried_row(row: Any, delimited: bool) -> Any:
    """The raw row as a validated impression carries it until a later step may dead-letter it
    (:func:`restored_row`): a delimited file's row as its values alone, in header order (a
    third of the bytes of the dict, and the impression-sized shuffle moves it), any other row
    in dead-letter form."""
    if delimited and isinstance(row, dict):
        return tuple(row.values())
    return dead_letter_row(row)


def restored_row(carried: Any, header: Optional[Sequence[str]]) -> Any:
    """A :func:`carried_row` value → the row in dead-letter form, the values of a delimited
    file named by its ``header`` again (None for other formats)."""
    if isinstance(carried, tuple) and header is not None:
        # A repeated column name keeps its first place, as the parser's dict(zip()) does.
        return dead_letter_row(dict(zip(dict.fromkeys(header), carried)))
    return carried


def exposure_dict(values: Sequence[Any]) -> Dict[str, Any]:
    """An EXPOSURE_FIELDS tuple → the impression dict :func:`assemble_user` reads (``entity_id``
    is the entity key, as after :func:`attach_entity`)."""
    imp = dict(zip(EXPOSURE_FIELDS, values))
    imp["entity_id"] = imp["key"]
    return imp


def user_shard(user_id: str, num_shards: int) -> int:
    """The user-hash shard of a user, in ``[0, num_shards)``: stable across processes and runs
    (blake2b of the UTF-8 id, not Python's salted ``hash``), so every impression and profile of
    a user lands in the same shard in every pass."""
    digest = hashlib.blake2b(user_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def carried_example_fields(sequence_length: int) -> Tuple[str, ...]:
    """Example features decided per user (profile, sequences, domain, label, time) + the target
    entity key, in schema order. The target's own features are the same for every example of
    an entity, so they are attached by key after the per-user step instead of being carried.
    The E_seq features travel pre-encoded, as one bytes value (``encoding.SEQUENCE_ENTRIES``,
    what :func:`assemble_user` writes when given a ``sequence_encoder``)."""
    entity_names = {f.name for f in schema.entity_features()}
    fields = []
    for f in schema.example_features(sequence_length):
        if f.group == "E_seq":
            if encoding.SEQUENCE_ENTRIES not in fields:
                fields.append(encoding.SEQUENCE_ENTRIES)
        elif f.name not in entity_names:
            fields.append(f.name)
    return tuple(fields) + ("entity_id",)


def complete_example(carried: Sequence[Any], fields: Sequence[str],
                     entity_values: Mapping[str, Any], sampling_prob: float) -> Dict[str, Any]:
    """The carried values of an example + its entity's :func:`entity_part` and Q(a) → the full
    example (the same values :func:`attach_entity` then :func:`assemble_user` give)."""
    example = dict(zip(fields, carried))
    example.update(entity_values)
    example["sampling_prob"] = sampling_prob
    return example


def entity_part(entity: Mapping[str, Any]) -> Dict[str, Any]:
    """The entity's values that every example of it takes: its entity features but its id
    (an example's ``entity_id`` is the entity key it carries)."""
    return {name: entity[name] for name in _entity_feature_names() if name in entity}


FINGERPRINT_CHARS = 24  # hex digits of impression_fingerprint


def impression_fingerprint(imp: Mapping[str, Any]) -> str:
    """Identity of a raw impression: two rows with equal contract values are duplicates
    (:data:`FINGERPRINT_CHARS` hex digits; the user id is one of the values, so a kept
    impression's fingerprint is unique in the whole dataset)."""
    parts = [str(imp.get(c)) for c in schema.IMPRESSION_COLUMNS]
    return hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=12).hexdigest()


def attach_entity(imp: Mapping[str, Any], entity: Mapping[str, Any]) -> Dict[str, Any]:
    out = dict(imp)
    for f in schema.entity_features():
        if f.name in entity:
            out[f.name] = entity[f.name]
    return out


# --------------------------------------------------------------------------------------------
# Per-user assembly: dedupe, sequences strictly before the timestamp (or, without time, the
# user's other TRAIN exposures), label rule, split.

@dataclasses.dataclass(frozen=True)
class SplitRule:
    """Time split at ``cutoff`` (eval = timestamp ≥ cutoff) or, without timestamps, a seeded
    random split with ``eval_fraction``.

    ``per_user``: instead of one cutoff for everyone, each user's last timestamped exposures
    are EVAL (:meth:`per_user_eval_count` of them, in (timestamp, fingerprint) order): every
    user with history gets test rows, at the cost of TRAIN rows of other users that are later
    than some test rows. Untimed rows keep the seeded random split.
    """

    cutoff: Optional[int]
    eval_fraction: float = 0.1
    seed: int = 0
    per_user: bool = False

    def per_user_eval_count(self, timed_exposures: int) -> int:
        """How many of a user's last timestamped exposures are EVAL under the per-user split:
        ``round(n · eval_fraction)`` (halves up), at least 1 when n ≥ 2, none when n ≤ 1 (a
        single exposure trains). E.g. f = 0.1: n = 1 → 0, 2 → 1, 14 → 1, 15 → 2, 100 → 10."""
        if timed_exposures < 2:
            return 0
        return max(1, int(timed_exposures * self.eval_fraction + 0.5))

    def assign(self, imp: Mapping[str, Any], fingerprint: str) -> str:
        if imp.get("timestamp") is not None and self.cutoff is not None:
            return EVAL if imp["timestamp"] >= self.cutoff else TRAIN
        digest = hashlib.blake2b(f"{self.seed}:{fingerprint}".encode(), digest_size=8).digest()
        u = int.from_bytes(digest, "big") / 2 ** 64
        return EVAL if u < self.eval_fraction else TRAIN


@dataclasses.dataclass
class UserOutput:
    examples: List[Tuple[str, Dict[str, Any]]]  # (split, example values)
    dead: List[Tuple[str, Dict[str, Any]]]  # (reason, impression)
    filtered: List[Tuple[str, Dict[str, Any]]]  # (rule, impression)
    # The serving-time state of the user, as the schema's user and E_seq features: profile +
    # the last L timestamped exposures (deduplicated) or, for a user without any timestamped
    # exposure, the untimed history of an EVAL example (:func:`untimed_history`).
    snapshot: Optional[Dict[str, Any]] = None
    # The impression fingerprint of each example, aligned with ``examples``: its write-order
    # key (``stages/shuffle.py``).
    fingerprints: List[str] = dataclasses.field(default_factory=list)


def assemble_user(user_id: str, profile: Optional[Mapping[str, str]],
                  imps: Iterable[Mapping[str, Any]], *, require_profile: bool,
                  label: str, split: SplitRule, sequence_length: int,
                  sequence_encoder: Optional[encoding.SequenceEncoder] = None) -> UserOutput:
    """All impressions of one user → examples with exposure sequences (Table I, E_seq).

    * no profile while profiles are required → every row ``unknown_user``;
    * exact duplicates of a row → ``duplicate_row`` (the first copy is kept);
    * the sequence of a timestamped example holds the last ``sequence_length`` exposures (every
      impression, clicked or not, is an exposure) with timestamp STRICTLY before the example's
      timestamp;
    * the sequence of an example WITHOUT a timestamp is the user's untimed history
      (:func:`untimed_history`): the user's other TRAIN exposures, unordered, never the example
      itself and never an EVAL exposure;
    * label rule "click": non-clicked rows are filtered by the counted rule ``not_clicked`` but
      stay exposures (in the sequences of later rows, or in the untimed history when their
      split is TRAIN);
    * the split: ``split.assign`` per row, or with ``split.per_user`` the user's last
      timestamped exposures (:meth:`SplitRule.per_user_eval_count`) are EVAL;
    * with a ``sequence_encoder`` (the link), an example holds its E_seq map entries already
      encoded (``encoding.SEQUENCE_ENTRIES``) instead of the E_seq lists: the same record;
    * the snapshot: the last ``sequence_length`` timestamped exposures; a user with no
      timestamped exposure gets the history an EVAL example of theirs gets (every TRAIN
      exposure, up to the length), so serving a user by id sees the input the model was
      evaluated on.

    The raw contract gives all rows a timestamp or none (``timestamp: null``); a user mixing
    both (a direct call) stays well-defined: timed rows keep the timed rule (untimed rows sort
    first, as timestamp -1), untimed rows take the untimed history over all TRAIN exposures.
    """
    out = UserOutput([], [], [])
    imps = list(imps)
    if profile is None:
        if require_profile:
            out.dead.extend(("unknown_user", imp) for imp in imps)
            return out
        profile = default_profile()
    keyed = sorted(((imp["timestamp"] if imp["timestamp"] is not None else -1,
                     impression_fingerprint(imp), imp) for imp in imps),
                   key=lambda t: (t[0], t[1]))
    unique: List[Tuple[int, str, Mapping[str, Any]]] = []
    for ts, fp, imp in keyed:
        if unique and unique[-1][1] == fp:
            out.dead.append(("duplicate_row", imp))
        else:
            unique.append((ts, fp, imp))

    timed = [u for u in unique if u[2]["timestamp"] is not None]
    pool: List[Tuple[str, Mapping[str, Any]]] = []  # the ranked TRAIN exposures (untimed rows)
    splits: Dict[str, str] = {}
    if split.per_user and timed:
        first_eval = len(timed) - split.per_user_eval_count(len(timed))
        splits = {fp: EVAL if i >= first_eval else TRAIN for i, (_, fp, _) in enumerate(timed)}
    if len(timed) < len(unique):
        for _, fp, imp in unique:
            if fp not in splits:
                splits[fp] = split.assign(imp, fp)
        pool = ranked_train_exposures(
            [(fp, imp) for _, fp, imp in unique if splits[fp] == TRAIN], split.seed,
            sequence_length + 1)
    # The E_seq columns of the unique exposures, in order: a timed example's sequence is a
    # slice of them (at most L long, so padding it is exposure_sequence's padding).
    columns = {name: [u[2][source] for u in unique] for name, source in SEQUENCE_SOURCES}
    window = None
    if sequence_encoder is not None and timed:
        window = sequence_encoder.windows(columns)
    entity_names = _entity_feature_names()
    pad = schema.PAD_TOKEN
    first_of_ts = 0  # index of the first exposure sharing the current timestamp
    for i, (ts, fp, imp) in enumerate(unique):
        if i > 0 and ts != unique[i - 1][0]:
            first_of_ts = i
        if label == "click" and imp["click"] == 0:
            out.filtered.append(("not_clicked", imp))
            continue
        example: Dict[str, Any] = {"user_id": user_id}
        example.update(profile)
        if imp["timestamp"] is None:
            sequence = exposure_sequence(untimed_history(pool, fp, sequence_length),
                                         sequence_length)
            if sequence_encoder is None:
                example.update(sequence)
            else:
                example[encoding.SEQUENCE_ENTRIES] = sequence_encoder.entries(sequence)
        elif window is not None:
            example[encoding.SEQUENCE_ENTRIES] = window(max(0, first_of_ts - sequence_length),
                                                        first_of_ts)
        else:
            lo = max(0, first_of_ts - sequence_length)
            padding = [pad] * (sequence_length - (first_of_ts - lo))
            for name, column in columns.items():
                example[name] = column[lo:first_of_ts] + padding
            example["seq_length"] = first_of_ts - lo
        for name in entity_names:
            if name in imp:
                example[name] = imp[name]
        example["entity_id"] = imp["key"]
        example["domain"] = imp["domain"]
        example["label"] = 1.0
        example["timestamp"] = imp["timestamp"] if imp["timestamp"] is not None else 0
        out.examples.append((splits.get(fp) or split.assign(imp, fp), example))
        out.fingerprints.append(fp)
    if timed:
        snapshot_history = [u[2] for u in timed[-sequence_length:]]
    else:
        snapshot_history = untimed_history(pool, None, sequence_length)
    out.snapshot = {"user_id": user_id, **profile,
                    **exposure_sequence(snapshot_history, sequence_length)}
    return out


@functools.lru_cache(maxsize=None)
def _entity_feature_names() -> Tuple[str, ...]:
    """The target entity's feature names an impression may carry (all but ``entity_id``)."""
    return tuple(f.name for f in schema.entity_features() if f.name != "entity_id")


def history_rank(seed: int, fingerprint: str) -> Tuple[str, str]:
    """Where a TRAIN exposure stands in its user's untimed history: a seeded hash of its
    fingerprint (which holds the user id), ties — never in practice — by the fingerprint.
    Salted apart from the split's hash (``SplitRule.assign``), so the rank says nothing about
    the split. Stable across processes and runs (blake2b, not Python's salted ``hash``)."""
    digest = hashlib.blake2b(f"history:{seed}:{fingerprint}".encode(), digest_size=8)
    return digest.hexdigest(), fingerprint


def ranked_train_exposures(train: Iterable[Tuple[str, Mapping[str, Any]]], seed: int,
                           limit: int) -> List[Tuple[str, Mapping[str, Any]]]:
    """The first ``limit`` of a user's ``(fingerprint, exposure)`` TRAIN exposures in
    :func:`history_rank` order: what every untimed history of the user draws from (``limit``
    = L + 1, so that an example can leave itself out and still have L)."""
    return heapq.nsmallest(limit, train, key=lambda t: history_rank(seed, t[0]))


def untimed_history(pool: Sequence[Tuple[str, Mapping[str, Any]]], own: Optional[str],
                    sequence_length: int) -> List[Mapping[str, Any]]:
    """The exposure sequence of an example without a timestamp: the user's TRAIN exposures
    (every exposure, clicked or not, as on the timed path) other than the example's own
    occurrence ``own`` (its fingerprint: an EVAL example's is never in the pool; None for the
    snapshot), the ``sequence_length`` first in :func:`history_rank` order, listed
    in that order. Without time nothing orders them; the seeded rank makes the truncation of a
    long history a uniform, reproducible choice. EVAL exposures never enter: they are what
    evaluation asks the model to find.

    Worked example: TRAIN exposures a, b, c ranked b < a < c, L = 2 → the example a gets
    [b, c], b gets [a, c], c gets [b, a], an EVAL example (or the snapshot) gets [b, a].
    """
    return [imp for fp, imp in pool if fp != own][:sequence_length]


# The E_seq token features and the exposure field each one is read from.
SEQUENCE_SOURCES = (("seq_entity_id", "key"), ("seq_entity_type", "entity_type"),
                    ("seq_category", "entity_category"))


def exposure_sequence(history: Sequence[Mapping[str, Any]], sequence_length: int
                      ) -> Dict[str, Any]:
    """The E_seq features of exposures in time order (oldest first) — or, without time, in
    :func:`untimed_history` order — padded to L."""
    features: Dict[str, Any] = {
        name: schema.pad_sequence([h[source] for h in history], sequence_length)
        for name, source in SEQUENCE_SOURCES}
    features["seq_length"] = len(history)
    return features


def sampling_probability(train_count: int, total_train: int, corpus_size: int,
                         smoothing: float = 1.0) -> float:
    """Q(a): probability that entity ``a`` appears as an in-batch candidate (logQ, Eq. 2).

    The training stream samples entities by their frequency; Laplace smoothing keeps the
    probability of entities never seen in training positive so log Q is finite.
    Worked example: counts {a: 3, b: 1}, corpus {a, b, c}, smoothing 1 →
    Q(a) = 4/7, Q(b) = 2/7, Q(c) = 1/7 (they sum to 1).
    """
    return (train_count + smoothing) / (total_train + smoothing * corpus_size)


def vocabulary_tokens(example: Mapping[str, Any]) -> Iterator[Tuple[str, str]]:
    """(vocabulary, token) pairs a TRAIN example contributes to the vocabularies.

    Sequences are not counted: the same exposure would be counted up to L times.
    """
    for name, vocabulary in _vocabulary_fields():
        token = example[name]
        if token != schema.DEFAULT_TOKEN:
            yield vocabulary, token


@functools.lru_cache(maxsize=None)
def vocabulary_fields_by_source() -> Tuple[Tuple[Tuple[str, str], ...],
                                          Tuple[Tuple[str, str], ...]]:
    """The (feature, vocabulary) pairs of :func:`vocabulary_tokens`, split by where an example's
    value comes from: its target entity (the same for every example of an entity key, which
    is the ``entity_id`` value; :func:`complete_example`) and the rest (the user's profile, the
    domain)."""
    from_entity = {f.name for f in schema.entity_features()}
    fields = _vocabulary_fields()
    return (tuple(fv for fv in fields if fv[0] in from_entity),
            tuple(fv for fv in fields if fv[0] not in from_entity))


@functools.lru_cache(maxsize=None)
def _vocabulary_fields() -> Tuple[Tuple[str, str], ...]:
    """(feature, vocabulary) of the non-sequence example features with a vocabulary."""
    return tuple((f.name, f.vocabulary) for f in schema.example_features()
                 if f.vocabulary and not f.is_sequence)


def build_vocabulary(counts: Iterable[Tuple[str, int]], min_frequency: int) -> List[str]:
    """Tokens with count ≥ min_frequency, most frequent first (ties by token), after the
    reserved default token. Rarer tokens map to the OOV id at read time."""
    kept = sorted(((t, c) for t, c in counts if c >= min_frequency and t != schema.DEFAULT_TOKEN),
                  key=lambda tc: (-tc[1], tc[0]))
    return [schema.DEFAULT_TOKEN] + [t for t, _ in kept]
