"""TF Serving gRPC for tfrrl (DESIGN.md §6): the local ``PredictionService`` server
(serving/prediction_server.py) and the production client (serving/prediction_client.py) in one
import.

Commands::

    python -m serving.tf_serving --port 8500 --model_name tfrrl --model_base_path EXPORT/tfrrl
    python -m serving.tf_serving --port 8500 --model_config_file EXPORT/models.config

Python::

    from serving.tf_serving import PredictionClient, RemoteSavedModel, start_server

    with start_server(EXPORT, port=0) as server, \\
            PredictionClient(server.address, "tfrrl") as client:
        scores = client.predict("score_raw", raw_features)["scores"]
"""

from serving.prediction_client import (ModelMetadata, PredictionClient, PredictionServiceError,
                                       RemoteSavedModel, RemoteSignature, RetryPolicy)
from serving.prediction_server import (ModelManager, ServerHandle, ServingError, main,
                                       start_server)

__all__ = ["ModelManager", "ModelMetadata", "PredictionClient", "PredictionServiceError",
           "RemoteSavedModel", "RemoteSignature", "RetryPolicy", "ServerHandle", "ServingError",
           "main", "start_server"]

if __name__ == "__main__":
    raise SystemExit(main())
