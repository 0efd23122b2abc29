"""Row accounting: the link's counters → ``accounting.json`` and its printed summary.

Per source: rows read = written + dead-lettered + filtered. For impressions the equation is
checked (``balanced``); a run whose impressions do not balance publishes nothing.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

from beam_pipelines import counters, transforms
from beam_pipelines.counters import IMPRESSIONS, USERS
from tfrrl.data.link_spec import DatasetSpec

# Keys of accounting.json beside the sources.
LINK_UNRESOLVED_KEY, USER_SNAPSHOT_KEY = "catalog_link_unresolved", "user_snapshot"


def accounting_from_counters(counts: Mapping[str, int], spec: DatasetSpec) -> Dict[str, Any]:
    """Row accounting per source: rows read = written + dead-lettered + filtered."""
    acc: Dict[str, Any] = {}
    sources = [IMPRESSIONS] + ([USERS] if spec.users is not None else [])
    sources += [counters.catalog_source(n) for n, et in spec.entity_types.items()
                if et.path is not None]
    for source in sources:
        prefix = counters.dead_prefix(source)
        dead = {k[len(prefix):]: v for k, v in counts.items() if k.startswith(prefix)}
        entry: Dict[str, Any] = {"rows_read": counts.get(counters.rows_read_name(source), 0),
                                 "dead_letter": dict(sorted(dead.items()))}
        if source == IMPRESSIONS:
            entry["train"] = counts.get(counters.written_name(transforms.TRAIN), 0)
            entry["eval"] = counts.get(counters.written_name(transforms.EVAL), 0)
            entry["filtered"] = {r: counts.get(counters.filtered_name(r), 0)
                                 for r in transforms.FILTER_RULES}
            accounted = (entry["train"] + entry["eval"] + sum(dead.values())
                         + sum(entry["filtered"].values()))
        else:
            accounted = None  # entity/user rows: kept rows are not counted row-for-row
            entry["kept"] = entry["rows_read"] - sum(dead.values())
        if accounted is not None:
            entry["accounted"] = accounted
            entry["balanced"] = accounted == entry["rows_read"]
        acc[source] = entry
    acc[LINK_UNRESOLVED_KEY] = counts.get(counters.LINK_UNRESOLVED, 0)
    acc[USER_SNAPSHOT_KEY] = counts.get(counters.USER_SNAPSHOTS, 0)
    return acc


def is_balanced(acc: Mapping[str, Any]) -> bool:
    """Every impression read is accounted for."""
    return acc[IMPRESSIONS]["balanced"]


def format_accounting(acc: Mapping[str, Any]) -> str:
    """The accounting as the lines ``tfrrl prepare`` prints."""
    imp = acc[IMPRESSIONS]
    lines = [
        f"impressions: read {imp['rows_read']:,} = train {imp['train']:,} + eval {imp['eval']:,}"
        f" + dead-letter {sum(imp['dead_letter'].values()):,}"
        f" + filtered {sum(imp['filtered'].values()):,}"
        f"  [{'balanced' if imp['balanced'] else 'NOT BALANCED'}]",
    ]
    for reason, n in imp["dead_letter"].items():
        lines.append(f"  dead-letter {reason}: {n:,}")
    for rule, n in imp["filtered"].items():
        lines.append(f"  filtered by rule {rule}: {n:,}")
    for source, entry in acc.items():
        if source in (IMPRESSIONS, LINK_UNRESOLVED_KEY, USER_SNAPSHOT_KEY):
            continue
        dead = sum(entry["dead_letter"].values())
        detail = ", ".join(f"{r} {n:,}" for r, n in entry["dead_letter"].items())
        lines.append(f"{source}: read {entry['rows_read']:,}, kept {entry['kept']:,}, "
                     f"dead-letter {dead:,}" + (f" ({detail})" if detail else ""))
    lines.append(f"user-feature snapshot: {acc.get(USER_SNAPSHOT_KEY, 0):,} users")
    if acc.get(LINK_UNRESOLVED_KEY):
        lines.append(f"linked entities whose product is missing (defaults kept): "
                     f"{acc[LINK_UNRESOLVED_KEY]:,}")
    return "\n".join(lines)
