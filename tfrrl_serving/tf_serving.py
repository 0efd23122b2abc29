"""TF Serving gRPC for tfrrl (DESIGN.md §6): the local ``PredictionService`` server
(tfrrl_serving/prediction_server.py) and the production client (tfrrl_serving/prediction_client.py) in one
import.

Commands::

    python -m tfrrl_serving.tf_serving --port 8500 --model_name tfrrl --model_base_path EXPORT/tfrrl
    python -m tfrrl_serving.tf_serving --port 8500 --model_config_file EXPORT/models.config

Python::

    from tfrrl_serving.tf_serving import PredictionClient, RemoteSavedModel, start_server

    with start_server(EXPORT, port=0) as server, \\
            PredictionClient(server.address, "tfrrl") as client:
        scores = client.predict("score_raw", raw_features)["scores"]
"""

from tfrrl_serving.prediction_client import (ModelMetadata, PredictionClient, PredictionServiceError,
                                       RemoteSavedModel, RemoteSignature, RetryPolicy)
from tfrrl_serving.prediction_server import (ModelManager, ServerHandle, ServingError, main,
                                       start_server)

__all__ = ["ModelManager", "ModelMetadata", "PredictionClient", "PredictionServiceError",
           "RemoteSavedModel", "RemoteSignature", "RetryPolicy", "ServerHandle", "ServingError",
           "main", "start_server"]

if __name__ == "__main__":
    raise SystemExit(main())
