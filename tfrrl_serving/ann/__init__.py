"""Approximate nearest-neighbour structures over entity representations, independent of the model
(RRL paper §IV-B), and the walk that scores them with the model.

* :mod:`~tfrrl_serving.ann.hnsw` — the HNSW graph: built with faiss (L2), extracted to numpy;
* :mod:`~tfrrl_serving.ann.scann` — the ScaNN index (squared L2 or dot product);
* :mod:`~tfrrl_serving.ann.nann` — model-scored search: the HNSW walk with the model as the
  scorer (NANN), the exhaustive reference and the ScaNN-candidates-then-rescore mode;
* :mod:`~tfrrl_serving.ann.manifest` — what the two structures share: the vector check and the
  ``manifest.json`` of a saved index directory.

numpy only at import: faiss and ScaNN (which imports TensorFlow) load when a structure is built
or loaded.
"""
