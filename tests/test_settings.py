"""Settings: one definition of each field and default (the plain dataclasses), and a misspelt name or an unknown
choice is an error, never dropped or read as the other branch."""

import dataclasses
import pickle

import pytest
from dagster import DagsterInvalidConfigError, asset, materialize
from pydantic import ValidationError

from models.agents import AgreementSettings
from models.training_config import TrainingConfig, WarmStart
from serm_dagster.resources import (
    AnnotatorSettings,
    LakehouseResource,
    MiningSettings,
    ModelSettings,
    RetrainFrom,
    SparkResource,
    Strategy,
)
from spark_jobs.drift import DriftSettings
from spark_jobs.mining import MinerSettings


@pytest.mark.parametrize("build", [
    lambda: MiningSettings(window_dayz=3),
    lambda: MiningSettings(min_click=2),
    lambda: ModelSettings(retrain_epoch=2),
    lambda: ModelSettings(progress=False),  # the caller's, not a setting
    lambda: AnnotatorSettings(n_path=3),
    lambda: LakehouseResource(max_query_char=10),
    lambda: SparkResource(mastr="local[1]"),
    lambda: ModelSettings(retrain_from="champoin"),
    lambda: AnnotatorSettings(strategy="selftraining"),
])
def test_a_misspelt_setting_or_choice_is_refused(build):
    with pytest.raises(ValidationError):
        build()


def test_a_misspelt_setting_in_a_runs_config_is_refused():
    @asset
    def budget(mining_settings: MiningSettings) -> int:
        return mining_settings.miner().budget

    config = {"resources": {"mining_settings": {"config": {"budget": 7, "min_clicks": 2}}}}
    assert materialize([budget], resources={"mining_settings": MiningSettings()}, run_config=config) \
        .output_for_node("budget") == 7
    with pytest.raises(DagsterInvalidConfigError, match="budgte"):
        materialize([budget], resources={"mining_settings": MiningSettings()},
                    run_config={"resources": {"mining_settings": {"config": {"budgte": 7}}}})


def test_choices_compare_and_print_as_their_values_and_travel_to_arm_processes():
    settings = AnnotatorSettings(strategy="self-training")
    assert settings.strategy is Strategy.SELF_TRAINING and settings.strategy == "self-training"
    assert f"{settings.strategy}" == "self-training" and str(RetrainFrom.BACKBONE) == "backbone"
    # the comparison sends resources to its arm processes as (class, fields)
    cls, fields = pickle.loads(pickle.dumps((type(settings), settings.model_dump())))
    assert cls(**fields).strategy is Strategy.SELF_TRAINING
    cls, fields = pickle.loads(pickle.dumps((MiningSettings, MiningSettings(budget=5).model_dump())))
    assert cls(**fields).miner() == MinerSettings(budget=5)


def schema_fields(resource) -> dict:
    return resource.to_config_schema().as_field().config_type.fields


def test_every_miner_knob_is_a_mining_setting_with_the_miners_default_and_description():
    schema = schema_fields(MiningSettings)
    for spec in dataclasses.fields(MinerSettings):
        assert spec.name in MiningSettings.model_fields, spec.name
        assert schema[spec.name].description == spec.metadata["description"], spec.name
    # the resource's defaults are the miner's and the drift report's
    assert MiningSettings().miner() == MinerSettings()
    assert MiningSettings().drift() == DriftSettings(seed=MinerSettings.seed)
    assert schema["budget"].default_value == MinerSettings.budget
    assert schema["score_weights"].default_value == dict(MinerSettings.score_weights)


def test_every_miner_knob_can_be_set_from_dagster():
    changed = {}
    for spec in dataclasses.fields(MinerSettings):
        value = spec.default
        if isinstance(value, bool):
            changed[spec.name] = not value
        elif value is None:
            changed[spec.name] = 0.25
        elif isinstance(value, tuple):
            changed[spec.name] = {name: weight + 1.0 for name, weight in value}
        else:
            changed[spec.name] = value + 1
    miner = MiningSettings(**changed).miner()
    for name, value in changed.items():
        expected = tuple(value.items()) if isinstance(value, dict) else value
        assert getattr(miner, name) == expected != getattr(MinerSettings(), name), name


def test_model_settings_train_with_training_configs_defaults():
    settings, schema = ModelSettings(), schema_fields(ModelSettings)
    # the seed model's recipe is TrainingConfig's defaults; retraining is WarmStart's on top
    assert settings.training_config() == TrainingConfig()
    assert settings.training_config(progress=False) == TrainingConfig(progress=False)
    assert settings.training_config(warm_start=True) == TrainingConfig().warm_started(WarmStart())
    for cls in (TrainingConfig, WarmStart):
        for spec in dataclasses.fields(cls):
            if spec.name in settings.model_fields:
                assert getattr(settings, spec.name) == spec.default, spec.name
                assert schema[spec.name].description == spec.metadata["description"], spec.name
    tuned = ModelSettings(epochs=2, max_length=48, retrain_encoder_lr=1e-5, retrain_frozen_layers=2, warmup_ratio=0.0)
    seed, retrain = tuned.training_config(), tuned.training_config(warm_start=True)
    assert (seed.epochs, seed.max_length, seed.frozen_layers, seed.warmup_ratio) == (2, 48, 0, 0.0)
    assert (retrain.epochs, retrain.encoder_lr, retrain.frozen_layers, retrain.max_length) == (1, 1e-5, 2, 48)


def test_the_annotators_agreement_is_agreement_settings_with_its_defaults():
    schema = schema_fields(AnnotatorSettings)
    assert AnnotatorSettings().agreement() == AgreementSettings()
    for spec in dataclasses.fields(AgreementSettings):
        if spec.name in AnnotatorSettings.model_fields and spec.name != "min_backends":
            assert schema[spec.name].description == spec.metadata["description"], spec.name
    assert AnnotatorSettings(n_paths=5, min_path_votes=2).agreement() == AgreementSettings(n_paths=5, min_path_votes=2)
    # min_backends follows the panel unless set: an LLM judge beside the embedded ones needs a second backend
    llm = {"name": "llm", "base_url": "http://localhost:8000/v1", "model": "m"}
    assert AnnotatorSettings(llm_agents=[llm]).agreement().min_backends == 2
