"""The retrieval index of an exported backbone (RRL paper §IV-B): built offline beside the model
version (``tfrrl index``), searched online with the model as the scorer.

* :mod:`~tfrrl_serving.indexing.layout` — where an index lives beside its model version, which
  versions have one, and the ``entity_keys.txt`` format;
* :mod:`~tfrrl_serving.indexing.corpus` — the corpus version and the encoding of every entity
  through the export's ``encode_entities`` signature;
* :mod:`~tfrrl_serving.indexing.build` — offline:
  :func:`~tfrrl_serving.indexing.build.build_indexes` writes and atomically publishes
  ``index-<version>/`` with its manifest;
* :mod:`~tfrrl_serving.indexing.checksums` — the sha256 of every index file, written into the
  manifest and verified on load;
* :mod:`~tfrrl_serving.indexing.index_set` — a published index loaded and checked
  (:func:`~tfrrl_serving.indexing.index_set.load_indexes`);
* :mod:`~tfrrl_serving.indexing.search` — online:
  :class:`~tfrrl_serving.indexing.search.IndexedRetriever`, user in, top-k entity keys out.
"""
