"""pipeline/components/baseline_resolver.py: the previous blessed model, never the candidate."""

import pytest

tfx = pytest.importorskip("tfx.v1")

from pipeline.components.baseline_resolver import PreviousBlessedModelStrategy  # noqa: E402

artifacts = tfx.types.standard_artifacts


def _artifact(cls, artifact_id, **int_props):
    a = cls()
    a.id = artifact_id
    a.uri = f"/artifacts/{artifact_id}"
    for key, value in int_props.items():
        a.set_int_custom_property(key, value)
    return a


def test_previous_blessed_model_strategy_skips_the_candidate():
    m = {i: _artifact(artifacts.Model, i) for i in (1, 2, 3, 4)}
    blessings = [_artifact(artifacts.ModelBlessing, 10, blessed=1, current_model_id=1),
                 _artifact(artifacts.ModelBlessing, 11, blessed=0, current_model_id=2),
                 _artifact(artifacts.ModelBlessing, 12, blessed=1, current_model_id=3)]
    strategy = PreviousBlessedModelStrategy()

    def resolve(candidate):
        return strategy.resolve_artifacts(None, {"model": list(m.values()),
                                                 "model_blessing": list(blessings),
                                                 "candidate": [m[candidate]]})

    new = resolve(4)      # a new model: the latest blessed one is model 3
    assert [a.id for a in new["model"]] == [3] and [a.id for a in new["model_blessing"]] == [12]
    assert [a.id for a in new["candidate"]] == [4]
    again = resolve(3)    # model 3 itself (a re-run): the blessed model before it
    assert [a.id for a in again["model"]] == [1]
    first = strategy.resolve_artifacts(None, {"model": [m[1]], "model_blessing": [],
                                              "candidate": [m[1]]})
    assert first["model"] == [] and first["model_blessing"] == []   # nothing blessed yet
