"""Names of the tagged outputs the link's DoFns emit beside their main output.

A piece of the pipeline reads them as ``result[TAG]``; the names are internal to a pipeline
(no file is named after them).
"""

DEAD = "dead"  # dead-letter records (beam_pipelines/dead_letters.py), from every validating step
FILTERED = "filtered"  # the rule that removed an impression (transforms.FILTER_RULES)
CORPUS = "corpus"  # entity records: (key, entity) after the join, then with Q(a)
TRAIN_COUNT = "train_count"  # (entity key, train examples), partial sums (per user or bundle)
USER_SNAPSHOT = "user_snapshot"  # one JSON line per user: the serving user features
FREQUENCY = "frequency"  # one entity_frequency.tsv line per entity
VOCAB = "vocab"  # ((vocabulary, token), TRAIN count), partial sums
STATS = "stats"  # Counter of (split, kind, value), partial sums
