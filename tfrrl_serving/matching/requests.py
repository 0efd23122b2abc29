"""A ``RetrieveRequest`` checked and turned into the raw user features ``encode_user`` takes.

The request is parsed from its wire bytes here, not by gRPC's deserializer: bytes that are not a
``RetrieveRequest`` (or a known field sent with another wire type, e.g. a string for ``k``) are a
client's mistake, answered INVALID_ARGUMENT — gRPC's own deserializer would answer INTERNAL.

A user comes by value (``features``: RRL §IV-B's profile E_u and exposure sequence E_seq) or by
id (a row of the user-feature store, :mod:`tfrrl_serving.user_store`); either way the result
has the schema's names, the same features the model was trained on.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Tuple

import grpc
from google.protobuf import descriptor as protobuf_descriptor
from google.protobuf import message as protobuf_message
from google.protobuf import unknown_fields

from tfrrl.data import link_spec, schema
from tfrrl_serving.indexing.search import MODES
from tfrrl_serving.matching.model import ModelContext
from tfrrl_serving.protos import matching_pb2
from tfrrl_serving.status import MAX_SHOWN_CHARS, StatusError, invalid_argument, shown
from tfrrl_serving.user_store import UserStore


# --------------------------------------------------------------------------------------------
# wire bytes → request
# --------------------------------------------------------------------------------------------

WIRE_TYPES = {0: "varint", 1: "64-bit", 2: "length-delimited", 5: "32-bit"}


def check_wire_types(msg: protobuf_message.Message, path: str = "") -> None:
    """Raises INVALID_ARGUMENT for a KNOWN field that arrived with another wire type.

    Protobuf keeps such a field among the unknown fields and leaves the typed field at its
    default, so ``k`` sent as a string would silently read as k = 0; fields this version does
    not know (a newer client's additions) are ignored, as proto3 intends."""
    known = msg.DESCRIPTOR.fields_by_number
    for field in unknown_fields.UnknownFieldSet(msg):
        if field.field_number in known:
            name = known[field.field_number].name
            raise invalid_argument(f"field {path}{name} has the wrong type (got a "
                                   f"{WIRE_TYPES.get(field.wire_type, field.wire_type)} value)")
    for fd, value in msg.ListFields():
        if fd.message_type is None or fd.message_type.GetOptions().map_entry:
            continue
        if fd.label == protobuf_descriptor.FieldDescriptor.LABEL_REPEATED:
            for i, item in enumerate(value):
                check_wire_types(item, f"{path}{fd.name}[{i}].")
        else:
            check_wire_types(value, f"{path}{fd.name}.")


def parse_request(payload: bytes) -> matching_pb2.RetrieveRequest:
    """A ``RetrieveRequest`` from its wire bytes, or INVALID_ARGUMENT saying what is wrong."""
    try:
        request = matching_pb2.RetrieveRequest.FromString(payload)
    except protobuf_message.DecodeError as err:
        name = matching_pb2.RetrieveRequest.DESCRIPTOR.full_name
        raise invalid_argument(f"the request is not a valid {name} ({err})") from None
    check_wire_types(request)
    return request


# --------------------------------------------------------------------------------------------
# request → raw features (the schema's names: the same features the model was trained on)
# --------------------------------------------------------------------------------------------


def raw_user_from_features(features: matching_pb2.UserFeatures, model: ModelContext
                           ) -> Dict[str, Any]:
    """A user sent by value as the raw features of ``encode_user`` (RRL §IV-B: profile E_u and
    exposure sequence E_seq, padded to the model's L exactly like the pipeline's examples)."""
    L = model.sequence_length
    n = len(features.exposures)
    if n == 0:
        raise invalid_argument("features.exposures is empty: send 1 to "
                               f"{L} recent exposures, or a user_id to use the stored features")
    if n > L:
        raise invalid_argument(f"features.exposures has {n} entries; the model takes at most "
                               f"{L} (most recent last: send the last ones)")
    unknown = sorted(set(features.profile) - set(model.profile_fields))
    if unknown:
        raise invalid_argument(f"features.profile has unknown fields "
                               f"{shown(unknown, MAX_SHOWN_CHARS * 2)}; known: "
                               f"{model.profile_fields}")
    types = [exposure_type(i, e, model) for i, e in enumerate(features.exposures)]
    raw: Dict[str, Any] = {"user_id": features.user_id or schema.DEFAULT_TOKEN}
    for field in model.profile_fields:
        raw[schema.user_feature_name(field)] = (features.profile.get(field)
                                                or schema.DEFAULT_TOKEN)
    exposures = list(features.exposures)
    raw["seq_entity_id"] = schema.pad_sequence([e.entity_key for e in exposures], L)
    raw["seq_entity_type"] = schema.pad_sequence(types, L)
    raw["seq_category"] = schema.pad_sequence([e.category or schema.DEFAULT_TOKEN
                                               for e in exposures], L)
    return raw


def exposure_type(i: int, exposure: matching_pb2.Exposure, model: ModelContext) -> str:
    """The exposure's entity type: the key's ``<type>:`` prefix (the corpus's key layout,
    beam_pipelines/transforms.py), which ``entity_type``, when given, must agree with."""
    if not exposure.entity_key:
        raise invalid_argument(f"features.exposures[{i}].entity_key is empty")
    key_type, entity_id = link_spec.split_entity_key(exposure.entity_key)
    if not entity_id or key_type not in model.entity_types:
        raise invalid_argument(f"features.exposures[{i}].entity_key "
                               f"{shown(exposure.entity_key)} is not '<entity type>:<id>' with "
                               f"a type in {model.entity_types}")
    if exposure.entity_type and exposure.entity_type != key_type:
        raise invalid_argument(f"features.exposures[{i}].entity_type "
                               f"{shown(exposure.entity_type)} disagrees with its entity_key "
                               f"{shown(exposure.entity_key)}")
    return key_type


def raw_user_from_store(stored: Mapping[str, Any], model: ModelContext) -> Dict[str, Any]:
    """A stored snapshot row (:mod:`tfrrl_serving.user_store`) as the raw features of
    ``encode_user``; a field the row lacks is the schema default."""
    # Here, not at the top: tfrrl.export imports TensorFlow (loaded by then, with the model).
    from tfrrl import export  # pylint: disable=import-outside-toplevel

    raw = {name: stored.get(name, schema.DEFAULT_TOKEN) for name in export.user_input_names()
           if name != "domain"}
    L = model.sequence_length
    for name in ("seq_entity_id", "seq_entity_type", "seq_category"):
        # The most recent L (a store written with a longer L than the model's keeps more).
        values = [v for v in stored[name] if v != schema.PAD_TOKEN][-L:]
        raw[name] = schema.pad_sequence(values, L)
    return raw


# --------------------------------------------------------------------------------------------
# the whole request: its user and its retrieval options
# --------------------------------------------------------------------------------------------


def raw_user(request: matching_pb2.RetrieveRequest, model: ModelContext,
             user_store: Optional[UserStore]) -> Dict[str, Any]:
    """The request's user as raw features: sent by value, or looked up by id in ``user_store``
    (FAILED_PRECONDITION without a store, NOT_FOUND for an unknown id)."""
    which = request.WhichOneof("user")
    if which is None:
        raise invalid_argument("the request names no user: set user_id or features")
    if which == "features":
        return raw_user_from_features(request.features, model)
    if not request.user_id:
        raise invalid_argument("user_id is empty")
    if user_store is None:
        raise StatusError(grpc.StatusCode.FAILED_PRECONDITION,
                          "this server has no user-feature store: send the user's features")
    stored = user_store.get(request.user_id)
    if stored is None:
        raise StatusError(grpc.StatusCode.NOT_FOUND,
                          f"unknown user_id {shown(request.user_id)} (not in the user-feature "
                          "snapshot): send the user's features instead")
    return raw_user_from_store(stored, model)


def retrieval_options(request: matching_pb2.RetrieveRequest, model: ModelContext, max_k: int,
                      default_mode: str) -> Tuple[int, str]:
    """``(k, mode)`` of a request whose domain, k, mode, ef and num_candidates are valid for
    ``model`` (0 / "" = the server's default); INVALID_ARGUMENT naming the first bad field."""
    if not request.domain:
        raise invalid_argument("domain is missing")
    if request.domain not in model.domains:
        raise invalid_argument(f"unknown domain {shown(request.domain)}; known: "
                               f"{model.domains}")
    cap = min(max_k, model.num_entities)
    if request.k < 1 or request.k > cap:
        raise invalid_argument(f"k must be in [1, {cap}] (max_k {max_k}, corpus "
                               f"{model.num_entities} entities), got {request.k}")
    mode = request.mode or default_mode
    if mode not in MODES:
        raise invalid_argument(f"mode must be one of {list(MODES)}, got "
                               f"{shown(request.mode)}")
    if request.ef < 0:
        raise invalid_argument(f"ef must be >= 0 (0 = server default), got {request.ef}")
    if request.num_candidates < 0:
        raise invalid_argument("num_candidates must be >= 0 (0 = server default), got "
                               f"{request.num_candidates}")
    return int(request.k), mode
