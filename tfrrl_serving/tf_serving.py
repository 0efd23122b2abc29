"""TF Serving's gRPC ``PredictionService`` for tfrrl in one import: the local server
(:mod:`tfrrl_serving.prediction.server`), the production client
(:mod:`tfrrl_serving.prediction.client`) and a served model as a loaded SavedModel
(:mod:`tfrrl_serving.prediction.remote_model`). Also the command of the local server.

Commands::

    python -m tfrrl_serving.tf_serving --port 8500 --model_name tfrrl --model_base_path EXPORT/tfrrl
    python -m tfrrl_serving.tf_serving --port 8500 --model_config_file EXPORT/models.config

Python::

    from tfrrl_serving.tf_serving import PredictionClient, RemoteSavedModel, start_server

    with start_server(EXPORT, port=0) as server, \\
            PredictionClient(server.address, "tfrrl") as client:
        scores = client.predict("score_raw", raw_features)["scores"]
"""

from tfrrl_serving.prediction.client import (ModelMetadata, PredictionClient,
                                             PredictionServiceError, RetryPolicy)
from tfrrl_serving.prediction.remote_model import RemoteSavedModel, RemoteSignature
from tfrrl_serving.prediction.servables import ModelManager
from tfrrl_serving.prediction.server import ServerHandle, main, start_server
from tfrrl_serving.status import StatusError

__all__ = ["ModelManager", "ModelMetadata", "PredictionClient", "PredictionServiceError",
           "RemoteSavedModel", "RemoteSignature", "RetryPolicy", "ServerHandle", "StatusError",
           "main", "start_server"]

if __name__ == "__main__":
    raise SystemExit(main())
