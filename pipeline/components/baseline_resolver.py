"""Which earlier model the evaluator compares a new model with.

``previous``: :class:`PreviousBlessedModelStrategy`, the latest blessed model *other than the
candidate* (local runner). Because the candidate is left out, a re-run of an unchanged pipeline
resolves the same (empty or earlier) baseline as the run that produced the candidate, and the
evaluator and pusher come from the cache too.

``latest``: TFX's ``LatestBlessedModelStrategy``, the only blessed-model strategy the Kubeflow V2
/ Vertex compiler accepts. It can resolve the candidate itself (on the first re-run after a
model was blessed); the evaluator then has no other model to beat and the pusher recognises a
SavedModel it already pushed, so the only cost is one evaluation.

``none``: no comparison; only the threshold counts.
"""

from __future__ import annotations

from typing import Dict, List, Optional

from tfx import types
from tfx import v1 as tfx

BASELINES = ("previous", "latest", "none")
RESOLVER_ID = "latest_blessed_model_resolver"
_BLESSED = "blessed"
_CURRENT_MODEL_ID = "current_model_id"


class PreviousBlessedModelStrategy(tfx.dsl.experimental.ResolverStrategy):
    """The latest blessed ``Model`` that is not one of the ``candidate`` channel's models.

    Input channels: ``model`` (all Model artifacts), ``model_blessing`` (all ModelBlessings)
    and ``candidate`` (the trainer's output). Output: ``model`` and ``model_blessing`` hold the
    baseline and its blessing, or nothing; ``candidate`` is passed through.
    """

    def resolve_artifacts(
            self, store, input_dict: Dict[str, List[types.Artifact]]
    ) -> Optional[Dict[str, List[types.Artifact]]]:
        del store  # Everything needed is in the resolved channels.
        candidates = {a.id for a in input_dict.get("candidate", [])}
        blessed_ids = {b.get_int_custom_property(_CURRENT_MODEL_ID): b
                       for b in input_dict.get("model_blessing", [])
                       if b.get_int_custom_property(_BLESSED) == 1}
        result = {key: [] for key in input_dict}
        result["candidate"] = list(input_dict.get("candidate", []))
        for model in sorted(input_dict.get("model", []), key=lambda a: a.id, reverse=True):
            if model.id in blessed_ids and model.id not in candidates:
                result["model"] = [model]
                result["model_blessing"] = [blessed_ids[model.id]]
                break
        return result


def baseline_resolver(baseline: str, candidate_channel) -> Optional[tfx.dsl.Resolver]:
    """The Resolver node giving the evaluator's ``baseline_model`` (None for ``none``)."""
    if baseline not in BASELINES:
        raise ValueError(f"baseline must be one of {BASELINES}, got {baseline!r}.")
    channels = dict(model=tfx.dsl.Channel(type=tfx.types.standard_artifacts.Model),
                    model_blessing=tfx.dsl.Channel(
                        type=tfx.types.standard_artifacts.ModelBlessing))
    if baseline == "none":
        return None
    if baseline == "latest":
        return tfx.dsl.Resolver(strategy_class=tfx.dsl.experimental.LatestBlessedModelStrategy,
                                **channels).with_id(RESOLVER_ID)
    return tfx.dsl.Resolver(strategy_class=PreviousBlessedModelStrategy,
                            candidate=candidate_channel, **channels).with_id(RESOLVER_ID)
