"""The pieces of the link, one stage per module, in the order data flows through them.

Each piece is a function that adds its stage to a pipeline (PCollections in, PCollections out)
and holds the DoFns of that stage, thin wrappers around the pure functions of
``beam_pipelines/transforms.py``. Each piece applies the same labelled transforms wherever it is
used, and appends the dead letters of its stage to ``dead`` (a list of PCollections written by
``dead_letters.write_dead_letters``). ``beam_pipelines/one_pass.py`` chains them in ONE pipeline;
``beam_pipelines/sharded.py`` runs the same pieces as several pipelines, one user shard at a
time.

====================  ===========================================================================
catalog               catalogs → unified entity records, deduplicated, links resolved (UMES)
profiles              users table → user profiles
impressions           impressions table → validated compact impression tuples
split                 the split point (explicit, time quantile, or none for the random split)
assembly              impressions × entities, then per user: sequences, label rule, split
probabilities         per entity: train counts → the sampling probability Q(a) of Eq. 2
finalize              carried examples + entity features + Q(a) → serialized tf.Examples
shuffle               the deterministic pseudo-random write order of the examples
vocabulary            TRAIN token counts → ``vocab/*.txt``
stats                 split statistics and totals → ``stats.json``
outputs               the dataset's files: examples, corpus, frequencies, snapshot, vocab + stats
====================  ===========================================================================
"""
