from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Exposure(_message.Message):
    __slots__ = ("entity_key", "entity_type", "category")
    ENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    entity_key: str
    entity_type: str
    category: str
    def __init__(self, entity_key: _Optional[str] = ..., entity_type: _Optional[str] = ..., category: _Optional[str] = ...) -> None: ...

class UserFeatures(_message.Message):
    __slots__ = ("user_id", "profile", "exposures")
    class ProfileEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    EXPOSURES_FIELD_NUMBER: _ClassVar[int]
    user_id: str
    profile: _containers.ScalarMap[str, str]
    exposures: _containers.RepeatedCompositeFieldContainer[Exposure]
    def __init__(self, user_id: _Optional[str] = ..., profile: _Optional[_Mapping[str, str]] = ..., exposures: _Optional[_Iterable[_Union[Exposure, _Mapping]]] = ...) -> None: ...

class RetrieveRequest(_message.Message):
    __slots__ = ("domain", "k", "user_id", "features", "mode", "ef", "num_candidates")
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    USER_ID_FIELD_NUMBER: _ClassVar[int]
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    EF_FIELD_NUMBER: _ClassVar[int]
    NUM_CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    domain: str
    k: int
    user_id: str
    features: UserFeatures
    mode: str
    ef: int
    num_candidates: int
    def __init__(self, domain: _Optional[str] = ..., k: _Optional[int] = ..., user_id: _Optional[str] = ..., features: _Optional[_Union[UserFeatures, _Mapping]] = ..., mode: _Optional[str] = ..., ef: _Optional[int] = ..., num_candidates: _Optional[int] = ...) -> None: ...

class Ad(_message.Message):
    __slots__ = ("rank", "entity_key", "entity_id", "entity_type", "score")
    RANK_FIELD_NUMBER: _ClassVar[int]
    ENTITY_KEY_FIELD_NUMBER: _ClassVar[int]
    ENTITY_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_TYPE_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    rank: int
    entity_key: str
    entity_id: str
    entity_type: str
    score: float
    def __init__(self, rank: _Optional[int] = ..., entity_key: _Optional[str] = ..., entity_id: _Optional[str] = ..., entity_type: _Optional[str] = ..., score: _Optional[float] = ...) -> None: ...

class RetrieveStats(_message.Message):
    __slots__ = ("num_scored", "fraction_scored", "num_score_calls", "latency_ms")
    NUM_SCORED_FIELD_NUMBER: _ClassVar[int]
    FRACTION_SCORED_FIELD_NUMBER: _ClassVar[int]
    NUM_SCORE_CALLS_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    num_scored: int
    fraction_scored: float
    num_score_calls: int
    latency_ms: float
    def __init__(self, num_scored: _Optional[int] = ..., fraction_scored: _Optional[float] = ..., num_score_calls: _Optional[int] = ..., latency_ms: _Optional[float] = ...) -> None: ...

class RetrieveResponse(_message.Message):
    __slots__ = ("ads", "model_version", "stats", "request_id")
    ADS_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ads: _containers.RepeatedCompositeFieldContainer[Ad]
    model_version: int
    stats: RetrieveStats
    request_id: str
    def __init__(self, ads: _Optional[_Iterable[_Union[Ad, _Mapping]]] = ..., model_version: _Optional[int] = ..., stats: _Optional[_Union[RetrieveStats, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...
