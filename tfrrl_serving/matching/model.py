"""One served model version as the matching service holds it: the retriever over the version's
SavedModel (in-process, or scored by TF Serving) and its index, and what request validation needs
to know about it (domains, sequence length L, profile fields, entity types).

Light at import (the ``tfrrl`` command line imports the server for its flags): TensorFlow loads
with the first model.
"""

from __future__ import annotations

import os
from typing import List, Optional

from tfrrl.artifacts.export_folder import ASSETS_DIR
from tfrrl.data import schema
from tfrrl_serving.errors import ModelConfigError, TFServingUnreachableError
from tfrrl_serving.indexing.index_set import load_indexes
from tfrrl_serving.indexing.search import IndexedRetriever
from tfrrl_serving.transport import ClientTLS


class VersionNotServed(Exception):
    """TF Serving does not (yet) serve the version asked for: not a fault of the version."""


def read_vocabulary(version_dir: str, name: str) -> List[str]:
    """The ``assets/<name>.txt`` vocabulary of an exported version, blank lines left out."""
    path = os.path.join(version_dir, ASSETS_DIR, f"{name}.txt")
    with open(path, encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f if line.strip()]


class ModelContext:
    """What validation needs to know about one served model version."""

    def __init__(self, retriever: IndexedRetriever, version_dir: str):
        # Here, not at the top: tfrrl.export imports TensorFlow (module docstring).
        from tfrrl import export  # pylint: disable=import-outside-toplevel

        manifest = export.read_manifest(version_dir)
        self.retriever = retriever
        self.version = int(manifest["version"])
        self.domains: List[str] = list(manifest["domains"])
        self.sequence_length = int(manifest["sequence_length"])
        self.profile_fields = [n[len("user_"):] for n in manifest["user_inputs"]
                               if n.startswith("user_") and n != "user_id"]
        self.entity_types = [t for t in read_vocabulary(version_dir, "entity_type")
                             if t != schema.DEFAULT_TOKEN]
        self.num_entities = retriever.num_entities


def load_model(export_dir: str, name: str = "tfrrl", version: Optional[int] = None,
               tf_serving: Optional[str] = None, timeout_s: float = 10.0,
               tf_serving_tls: Optional[ClientTLS] = None) -> ModelContext:
    """The newest indexed version (or ``version``): in-process, or scored by TF Serving
    (``tf_serving_tls``: over TLS). Its index is verified on load (checksums, finite values:
    :func:`~tfrrl_serving.indexing.index_set.load_indexes`)."""
    if tf_serving:
        # Here, not at the top: the TF Serving client imports TensorFlow (module docstring).
        # pylint: disable=import-outside-toplevel
        import grpc

        from tfrrl_serving.prediction.client import PredictionClient, PredictionServiceError
        from tfrrl_serving.prediction.remote_model import RemoteSavedModel

        credentials = tf_serving_tls.credentials() if tf_serving_tls is not None else None
        client = PredictionClient(tf_serving, name, version, timeout_s=timeout_s,
                                  credentials=credentials)
        try:
            remote = RemoteSavedModel(client)
        except PredictionServiceError as err:
            client.close()
            if err.code == grpc.StatusCode.NOT_FOUND and version is not None:
                raise VersionNotServed(f"TF Serving at {tf_serving} does not serve version "
                                       f"{version} of {name!r} (yet)") from None
            if err.code == grpc.StatusCode.NOT_FOUND:
                raise ModelConfigError(f"TF Serving at {tf_serving} does not serve a model "
                                       f"named {name!r}: check --name") from None
            if err.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise TFServingUnreachableError(
                    f"TF Serving at {tf_serving} does not answer ({err.code.name} after "
                    f"{err.attempts} attempts): start it, or fix --tf-serving") from None
            raise
        indexes = load_indexes(export_dir, remote.version, name)
        retriever = IndexedRetriever(remote, indexes)
    else:
        retriever = IndexedRetriever.load(export_dir, version, name)
    version_dir = os.path.join(export_dir, name, str(retriever.indexes.version))
    return ModelContext(retriever, version_dir)
