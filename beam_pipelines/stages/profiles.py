"""The users table → user profiles, keyed by user id."""

from __future__ import annotations

from typing import List

import apache_beam as beam

from beam_pipelines import raw_io, transforms
from beam_pipelines.counters import USERS
from beam_pipelines.dead_letters import reject
from beam_pipelines.tags import DEAD
from tfrrl.data import link_spec
from tfrrl.data.link_spec import DatasetSpec


class _NormalizeUser(beam.DoFn):
    def __init__(self, spec: link_spec.UsersSpec):
        self._spec = spec

    def process(self, row):
        try:
            user_id, profile = transforms.normalize_user(row, self._spec)
            profile["_row"] = row
            yield user_id, profile
        except transforms.RowError as e:
            yield reject(USERS, e.reason, row, e.detail)


def read_profiles(p: beam.Pipeline, raw_dir: str, spec: DatasetSpec,
                  dead: List[beam.PCollection]) -> beam.PCollection:
    """User profiles ``(user id, profile with its raw row in "_row")``; empty without a users
    table."""
    if spec.users is None:
        return p | "NoUsers" >> beam.Create([])
    users_table = p | "Users" >> raw_io.ReadRawTable(
        USERS, link_spec.resolve_path(raw_dir, spec.users.path), spec.users.format)
    dead.append(users_table[DEAD])
    users = users_table["rows"] | "NormalizeUsers" >> beam.ParDo(
        _NormalizeUser(spec.users)).with_outputs(DEAD, main="users")
    dead.append(users[DEAD])
    return users.users
