"""Settings: a misspelt name or an unknown choice is an error, never dropped or read as the other branch."""

import pickle

import pytest
from pydantic import ValidationError

from serm_dagster.resources import (
    AnnotatorSettings,
    LakehouseResource,
    MiningSettings,
    ModelSettings,
    RetrainFrom,
    SparkResource,
    Strategy,
)


@pytest.mark.parametrize("build", [
    lambda: MiningSettings(window_dayz=3),
    lambda: ModelSettings(retrain_epoch=2),
    lambda: AnnotatorSettings(n_path=3),
    lambda: LakehouseResource(max_query_char=10),
    lambda: SparkResource(mastr="local[1]"),
    lambda: ModelSettings(retrain_from="champoin"),
    lambda: AnnotatorSettings(strategy="selftraining"),
])
def test_a_misspelt_setting_or_choice_is_refused(build):
    with pytest.raises(ValidationError):
        build()


def test_choices_compare_and_print_as_their_values_and_travel_to_arm_processes():
    settings = AnnotatorSettings(strategy="self-training")
    assert settings.strategy is Strategy.SELF_TRAINING and settings.strategy == "self-training"
    assert f"{settings.strategy}" == "self-training" and str(RetrainFrom.BACKBONE) == "backbone"
    # the comparison sends resources to its arm processes as (class, fields)
    cls, fields = pickle.loads(pickle.dumps((type(settings), settings.model_dump())))
    assert cls(**fields).strategy is Strategy.SELF_TRAINING
