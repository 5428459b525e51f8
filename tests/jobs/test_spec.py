import pydantic
import pytest

from jobs.spec import JobSpec

REQUIRED = dict(
    backbone="VGG16", image_size=32, epochs=2, batch_size=8, learning_rate=1e-3, patience=3, weights="none"
)


def test_round_trips_through_a_dict():
    spec = JobSpec(**REQUIRED, augment=True, fine_tune_layers=4)
    assert JobSpec.model_validate(spec.model_dump()) == spec
    assert spec.model_dump()["validation_split"] == 0.2


def test_rejects_unknown_fields():
    with pytest.raises(pydantic.ValidationError, match="colour"):
        JobSpec(**REQUIRED, colour="red")


def test_is_frozen():
    spec = JobSpec(**REQUIRED)
    with pytest.raises(pydantic.ValidationError):
        spec.epochs = 5
