"""Export of the scorer as a TF Serving SavedModel (RRL paper §IV: the backbone only, no RRL
modules), its serving signatures and the versioned export folder
(:mod:`tfrrl.artifacts.export_folder`)."""

from tfrrl.artifacts.export_folder import INDEX_OUTPUT, MANIFEST, MODELS_CONFIG
from tfrrl.export.saved_model import (export_backbone, export_run, exported_domains,
                                      latest_version_dir, next_version, prior_shift_arrays,
                                      read_manifest, write_serving_files)
from tfrrl.export.signatures import (ENCODED_USER_INPUTS, SIGNATURES, ServingScorer,
                                     entity_input_names, same_batch, serving_variables,
                                     user_input_names)

__all__ = [
    "ENCODED_USER_INPUTS", "INDEX_OUTPUT", "MANIFEST", "MODELS_CONFIG", "SIGNATURES",
    "ServingScorer", "entity_input_names", "export_backbone", "export_run", "exported_domains",
    "latest_version_dir", "next_version", "prior_shift_arrays", "read_manifest", "same_batch",
    "serving_variables", "user_input_names", "write_serving_files",
]
