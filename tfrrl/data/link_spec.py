"""The raw-input contract of the unified entity feature link (RRL paper §IV-A).

A raw dataset is a folder (local or ``gs://``) holding

* impressions: ``user_id, entity_id, entity_type, domain, timestamp, click`` (column names
  configurable);
* one catalog per entity type, each with its OWN columns (items: category, brand, shop, price;
  shops: main category, level; short videos: linked item, author, duration; live streams: linked
  item, host, start time; …);
* user profiles (optional).

``link_spec.yaml`` at the root of that folder says where each file is, in which format, and how
its columns map onto the unified fields of :mod:`tfrrl.data.schema`. A missing spec means
:meth:`DatasetSpec.synthetic_default`, the layout ``tfrrl generate`` writes.

This module is pure Python (no TensorFlow, no Beam) so that generators, adapters, the Beam
pipeline and the trainer can all import it cheaply.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, List, Mapping, Optional

import yaml

from tfrrl.data import schema
from tfrrl.errors import UserError

SPEC_FILENAME = "link_spec.yaml"
FORMATS = ("csv", "tsv", "jsonl", "parquet")


class LinkSpecError(UserError, ValueError):
    """The link spec is wrong (YAML syntax, unknown key or unified field, bad format, …): a
    mistake in the user's ``link_spec.yaml``, reported on one line by the command line."""


def _build(what: str, cls, values: Any):
    """``cls(**values)`` for one section of the spec; a missing, unknown or mistyped key is a
    :class:`LinkSpecError` naming the section and the keys it takes."""
    known = [f.name for f in dataclasses.fields(cls)]
    if not isinstance(values, Mapping):
        raise LinkSpecError(f"{what} must be a mapping with keys {known}, got {values!r}")
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise LinkSpecError(f"{what}: unknown keys {unknown}; known: {known}")
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise LinkSpecError(f"{what}: missing keys {missing}")
    return cls(**values)


@dataclasses.dataclass
class FileSpec:
    """One raw table: where it is and how to read it."""

    path: str  # glob relative to the raw folder, or an absolute / gs:// glob
    format: str = "csv"

    def validate(self, what: str) -> None:
        if self.format not in FORMATS:
            raise LinkSpecError(f"{what}: format {self.format!r} not in {FORMATS}")
        if not self.path:
            raise LinkSpecError(f"{what}: empty path")


@dataclasses.dataclass
class ImpressionsSpec(FileSpec):
    """Impression log. ``columns`` maps contract names to the file's column names.

    ``timestamp`` may map to ``None`` for data without time: the split is then a seeded random
    split and exposure sequences are empty (nothing can be proven to come *before*).
    ``click`` may map to ``None`` when every row is a positive.
    """

    columns: Dict[str, Optional[str]] = dataclasses.field(
        default_factory=lambda: {c: c for c in schema.IMPRESSION_COLUMNS}
    )

    def column(self, name: str) -> Optional[str]:
        return self.columns.get(name, name)

    def validate(self, what: str = "impressions") -> None:
        super().validate(what)
        unknown = set(self.columns) - set(schema.IMPRESSION_COLUMNS)
        if unknown:
            raise LinkSpecError(f"{what}: unknown contract columns {sorted(unknown)}")
        for required in ("user_id", "entity_id", "entity_type", "domain"):
            if not self.column(required):
                raise LinkSpecError(f"{what}: column {required!r} cannot be None")


@dataclasses.dataclass
class UsersSpec(FileSpec):
    """User profiles: ``fields`` maps unified user fields (schema.USER_FIELDS) to columns."""

    id_column: str = "user_id"
    fields: Dict[str, str] = dataclasses.field(default_factory=dict)

    def validate(self, what: str = "users") -> None:
        super().validate(what)
        unknown = set(self.fields) - set(schema.USER_FIELDS)
        if unknown:
            raise LinkSpecError(
                f"{what}: unknown unified user fields {sorted(unknown)}; known: {schema.USER_FIELDS}"
            )


@dataclasses.dataclass
class EntityLink:
    """Where an entity of this type takes its features from (one catalog per entity type)."""

    column: str  # catalog column holding the linked entity's id
    entity_type: str  # type of the linked entity (e.g. ``item``)


@dataclasses.dataclass
class EntityTypeSpec:
    """Catalog of one entity type.

    ``fields`` maps unified entity fields (schema.ENTITY_FIELDS) to this catalog's columns; a
    unified field absent here takes the linked entity's value (when ``link`` is set) or the
    explicit default of the schema. ``path=None`` means the type has no catalog: its entities
    are the ids seen in the impressions, with default features.
    """

    path: Optional[str] = None
    format: str = "csv"
    id_column: str = "entity_id"
    fields: Dict[str, str] = dataclasses.field(default_factory=dict)
    link: Optional[EntityLink] = None

    def validate(self, name: str) -> None:
        what = f"entity type {name!r}"
        if self.path is not None:
            FileSpec(self.path, self.format).validate(what)
        unknown = set(self.fields) - set(schema.ENTITY_FIELDS)
        if unknown:
            raise LinkSpecError(
                f"{what}: unknown unified entity fields {sorted(unknown)}; "
                f"known: {schema.ENTITY_FIELDS}"
            )
        if self.link is not None and self.path is None:
            raise LinkSpecError(f"{what}: a link needs a catalog (path) holding the link column")


@dataclasses.dataclass
class DatasetSpec:
    """The whole raw contract of one dataset (the content of ``link_spec.yaml``)."""

    impressions: ImpressionsSpec
    entity_types: Dict[str, EntityTypeSpec]
    users: Optional[UsersSpec] = None
    # Label rule: "impression" = every impression is a positive (RRL paper §V-A1);
    # "click" = rows with click == 0 are filtered by the counted rule ``not_clicked``.
    label: str = "impression"
    description: str = ""

    def validate(self) -> "DatasetSpec":
        self.impressions.validate()
        if self.users is not None:
            self.users.validate()
        if not self.entity_types:
            raise LinkSpecError("at least one entity type is required")
        for name, spec in self.entity_types.items():
            if ":" in name or not name:
                raise LinkSpecError(f"entity type name {name!r} must be non-empty without ':'")
            spec.validate(name)
            if spec.link is not None:
                target = self.entity_types.get(spec.link.entity_type)
                if target is None:
                    raise LinkSpecError(
                        f"entity type {name!r} links to unknown type {spec.link.entity_type!r}"
                    )
                if target.link is not None:
                    raise LinkSpecError(
                        f"entity type {name!r} links to {spec.link.entity_type!r}, which is "
                        "itself linked: chains of links are not supported"
                    )
        if self.label not in ("impression", "click"):
            raise LinkSpecError(f"label must be 'impression' or 'click', got {self.label!r}")
        if self.label == "click" and not self.impressions.column("click"):
            raise LinkSpecError("label 'click' needs a click column")
        return self

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetSpec":
        if not isinstance(d, Mapping):
            raise LinkSpecError(f"a link spec is a mapping (impressions:, entity_types:, …), "
                                f"got {type(d).__name__}")
        d = dict(d)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise LinkSpecError(f"unknown keys in link spec: {sorted(unknown)}; known: "
                                f"{[f.name for f in dataclasses.fields(cls)]}")
        for required in ("impressions", "entity_types"):
            if not d.get(required):
                raise LinkSpecError(f"the link spec needs an {required!r} section")
        imp = _build("impressions", ImpressionsSpec, d.pop("impressions"))
        users = d.pop("users", None)
        entity_types = {}
        entity_map = d.pop("entity_types")
        if not isinstance(entity_map, Mapping):
            raise LinkSpecError("entity_types must map each entity type name to its catalog")
        for name, et in entity_map.items():
            et = dict(et) if isinstance(et, Mapping) else ({} if et is None else et)
            link = et.pop("link", None) if isinstance(et, dict) else None
            if isinstance(et, dict):
                et["link"] = _build(f"entity type {name!r} link", EntityLink, link) \
                    if link else None
            entity_types[name] = _build(f"entity type {name!r}", EntityTypeSpec, et)
        return cls(
            impressions=imp,
            entity_types=entity_types,
            users=_build("users", UsersSpec, users) if users else None,
            **d,
        ).validate()

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    @classmethod
    def from_yaml(cls, text: str) -> "DatasetSpec":
        try:
            values = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise LinkSpecError(f"not valid YAML: {' '.join(str(err).split())}") from err
        return cls.from_dict(values)

    @classmethod
    def synthetic_default(cls) -> "DatasetSpec":
        """The layout ``tfrrl generate`` writes (four entity types with different catalogs)."""
        return cls(
            description="tfrrl synthetic raw logs",
            impressions=ImpressionsSpec(path="impressions/*.csv", format="csv"),
            users=UsersSpec(
                path="users.csv",
                id_column="user_id",
                fields={"age_bucket": "age_bucket", "gender": "gender", "city": "city_tier"},
            ),
            entity_types={
                "item": EntityTypeSpec(
                    path="catalogs/item.csv",
                    fields={"category": "category", "brand": "brand", "shop": "shop",
                            "price": "price"},
                ),
                "shop": EntityTypeSpec(
                    path="catalogs/shop.csv",
                    # A shop ad's own id fills the unified `shop` field, so item ads and shop
                    # ads of the same shop share its embedding.
                    fields={"category": "main_category", "shop_level": "shop_level",
                            "shop": "entity_id"},
                ),
                "video": EntityTypeSpec(
                    path="catalogs/video.csv",
                    fields={"creator": "author", "duration": "duration"},
                    link=EntityLink(column="linked_item", entity_type="item"),
                ),
                "live": EntityTypeSpec(
                    path="catalogs/live.csv",
                    # start_time has no unified field: unmapped catalog columns are ignored.
                    fields={"creator": "host"},
                    link=EntityLink(column="linked_item", entity_type="item"),
                ),
            },
        ).validate()


def resolve_path(raw_dir: str, path: str) -> str:
    """A spec path relative to the raw folder, unless it is absolute or has a scheme."""
    if "://" in path or path.startswith("/"):
        return path
    return raw_dir.rstrip("/") + "/" + path


def load(raw_dir: str) -> DatasetSpec:
    """Reads ``<raw_dir>/link_spec.yaml`` through Beam-independent IO (local or gs://).

    Falls back to :meth:`DatasetSpec.synthetic_default` when the folder has no spec.
    """
    from tfrrl.data import fileio  # local import: keeps this module dependency-light

    path = resolve_path(raw_dir, SPEC_FILENAME)
    if not fileio.exists(path):
        return DatasetSpec.synthetic_default()
    try:
        return DatasetSpec.from_yaml(fileio.read_text(path))
    except LinkSpecError as err:
        raise LinkSpecError(f"{path}: {err}") from err


def entity_key(entity_type: str, entity_id: str) -> str:
    """Canonical entity key: ids of different catalogs may collide, so keys carry the type."""
    return f"{entity_type}:{entity_id}"


def split_entity_key(key: str) -> List[str]:
    entity_type, _, entity_id = key.partition(":")
    return [entity_type, entity_id]
