"""Running means of the loss terms: the logs of ``fit`` (and the learned UWL weights, Fig. 5)."""

from __future__ import annotations

from typing import Callable, Dict, List, Mapping, Optional, Sequence, Union

import keras
import tensorflow as tf


class LossLogs:
    """One running mean per loss, in the order given: a name gets a new
    ``keras.metrics.Mean``; a metric (e.g. a task's own) is tracked under its name.
    ``state_logs``: values logged as they are at each step, not averaged (e.g. UWL's learned
    weights, which are state)."""

    def __init__(self, entries: Sequence[Union[str, keras.metrics.Metric]],
                 state_logs: Optional[Callable[[], Mapping[str, tf.Tensor]]] = None):
        self.trackers: Dict[str, keras.metrics.Metric] = {}
        for entry in entries:
            metric = keras.metrics.Mean(name=entry) if isinstance(entry, str) else entry
            self.trackers[metric.name] = metric
        self.state_logs = state_logs

    @property
    def metrics(self) -> List[keras.metrics.Metric]:
        return list(self.trackers.values())

    def update(self, losses: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
        for name, value in losses.items():
            if name in self.trackers:
                self.trackers[name].update_state(value)
        logs = {name: m.result() for name, m in self.trackers.items()}
        if self.state_logs is not None:
            logs.update(self.state_logs())
        return logs
