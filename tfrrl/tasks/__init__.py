"""Tasks: the objective a model is trained on, with its loss and its metric (TFRS style)."""

from tfrrl.tasks.retrieval import RetrievalTask

__all__ = ["RetrievalTask"]
