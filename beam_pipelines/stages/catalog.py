"""Catalogs → unified entity records (UMES, RRL paper §IV-A).

One catalog per entity type is normalized to the unified fields (explicit defaults for the
fields a type lacks), deduplicated by entity key (later copies are dead letters), and a linked
entity (a video or live stream promoting a product) takes its product's features.
"""

from __future__ import annotations

import json
from typing import List

import apache_beam as beam

from beam_pipelines import counters, raw_io, transforms
from beam_pipelines.dead_letters import reject
from beam_pipelines.tags import DEAD
from tfrrl.data import link_spec
from tfrrl.data.link_spec import DatasetSpec


class _NormalizeEntity(beam.DoFn):
    def __init__(self, type_name: str, spec: link_spec.EntityTypeSpec):
        self._type, self._spec = type_name, spec
        self._source = counters.catalog_source(type_name)

    def process(self, row):
        try:
            yield transforms.normalize_entity(row, self._type, self._spec)
        except transforms.RowError as e:
            yield reject(self._source, e.reason, row, e.detail)


class _DedupeEntities(beam.DoFn):
    """One record per entity key; later copies of a catalog row are dead-lettered."""

    def process(self, element):
        key, records = element
        records = sorted(records, key=lambda r: json.dumps(r, sort_keys=True, default=str))
        yield records[0]
        for extra in records[1:]:
            yield reject(counters.catalog_source(extra["entity_type"]), "duplicate_entity",
                         extra, key)


class _ResolveLinks(beam.DoFn):
    def process(self, element):
        _, grouped = element
        targets = list(grouped["target"])
        target = targets[0] if targets else None
        for record in grouped["linkers"]:
            if target is None:
                counters.counter(counters.LINK_UNRESOLVED).inc()
            yield transforms.inherit_linked(record, target)


def read_catalog(p: beam.Pipeline, raw_dir: str, spec: DatasetSpec,
                 dead: List[beam.PCollection]) -> beam.PCollection:
    """Catalogs → unified entity records, deduplicated, links resolved (UMES):
    ``(entity key, entity record)``, one per catalog entity."""
    entity_parts = []
    for type_name, et in spec.entity_types.items():
        if et.path is None:
            continue
        table = p | f"Catalog[{type_name}]" >> raw_io.ReadRawTable(
            counters.catalog_source(type_name), link_spec.resolve_path(raw_dir, et.path),
            et.format)
        dead.append(table[DEAD])
        norm = table["rows"] | f"Normalize[{type_name}]" >> beam.ParDo(
            _NormalizeEntity(type_name, et)).with_outputs(DEAD, main="entities")
        entity_parts.append(norm.entities)
        dead.append(norm[DEAD])
    if entity_parts:
        raw_entities = entity_parts | "FlattenCatalogs" >> beam.Flatten()
    else:
        raw_entities = p | "NoCatalogs" >> beam.Create([])
    deduped = (raw_entities
               | "KeyEntities" >> beam.Map(lambda r: (r["entity_id"], r))
               | "GroupEntities" >> beam.GroupByKey()
               | "DedupeEntities" >> beam.ParDo(_DedupeEntities()).with_outputs(
                   DEAD, main="entities"))
    dead.append(deduped[DEAD])
    entities = deduped.entities
    plain = (entities | "NotLinked" >> beam.Filter(lambda r: not r.get("_link"))
             | "DropLinkField" >> beam.Map(transforms.inherit_linked, None))
    linkers = (entities | "Linked" >> beam.Filter(lambda r: bool(r.get("_link")))
               | "KeyByLink" >> beam.Map(lambda r: (r["_link"], r)))
    targets = plain | "KeyTargets" >> beam.Map(lambda r: (r["entity_id"], r))
    linked = ({"target": targets, "linkers": linkers} | "JoinLinks" >> beam.CoGroupByKey()
              | "InheritLinked" >> beam.ParDo(_ResolveLinks()))
    return ((plain, linked) | "UnifiedEntities" >> beam.Flatten()
            | "KeyCatalog" >> beam.Map(lambda r: (r["entity_id"], r)))
