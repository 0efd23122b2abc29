"""The model (RRL paper §III): encoders (input modules, §III-B), backbones (§III-C and the
Table III baselines), the scorer that chains them (what is exported), and the training-time
composition with the retrieval task and the auxiliary losses (:mod:`tfrrl.model.matching`)."""
