"""Request bodies of the JSON API, validated with pydantic; errors name the field."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from dashboard.converters import LARGEST_ROW_ID
from dashboard.weights import WEIGHTS_REFUSED, resolve_weights
from db.models import DEFAULT_POOL
from jobs.backbones import BACKBONES, SEED_BACKBONES, get_backbone
from worker.queues import POOL_NAME, pool_name_problem

SPECIAL_WEIGHTS = ("imagenet", "none")


def whole_number(value):
    """A float without a fraction (5.0) as the int it equals; anything else unchanged."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class RequestModel(BaseModel):
    """Strict: no unknown fields, no silent type coercion ("5" is not a number)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    @field_validator("*", mode="before")
    @classmethod
    def whole_numbers_are_integers(cls, value):
        """5.0 is 5: JSON, and JSON Schema's "integer", don't tell them apart (strict mode alone would refuse it).

        A number field still takes it (strict floats take ints); a boolean still refuses it.
        """
        if isinstance(value, dict):
            return {key: whole_number(item) for key, item in value.items()}
        return whole_number(value)


class DatasetPathRequest(RequestModel):
    """Register a folder that already lies under one of the allowed data roots."""

    path: Annotated[str, Field(min_length=1, max_length=4096, description="Folder of class sub-folders")]
    name: Annotated[str | None, Field(default=None, min_length=1, max_length=200)] = None


LearningRate = Annotated[float, Field(gt=0, le=10)]
MOST_LEARNING_RATES = 5
MOST_REPEATS = 10
LARGEST_IMAGE_SIZE = 2048
ImageSize = Annotated[int, Field(ge=1, le=LARGEST_IMAGE_SIZE)]
# No backbone takes less; sizes_fit_backbones names the backbone when a size is below its own minimum.
SMALLEST_MINIMUM_SIZE = min(backbone.min_size for backbone in BACKBONES.values())


def _size_schema(minimum: int) -> dict:
    """The JSON Schema of one image size, from `minimum` px."""
    return {"type": "integer", "minimum": minimum, "maximum": LARGEST_IMAGE_SIZE}


def document_image_size(schema: dict) -> None:
    """Say in the OpenAPI document what sizes_fit_backbones checks of each form of image_size.

    One size for all: at least the smallest minimum (document_size_minimums adds the larger ones). Per
    backbone: a known name, at least its minimum. That such a name is also in `backbones` is said only in
    words: a JSON Schema cannot compare two fields.
    """
    schema["anyOf"] = [
        _size_schema(SMALLEST_MINIMUM_SIZE),
        {"type": "object", "additionalProperties": False,
         "properties": {name: _size_schema(backbone.min_size) for name, backbone in BACKBONES.items()}},
        {"type": "null"},
    ]


def document_size_minimums(schema: dict) -> None:
    """Say in the OpenAPI document that one size for all must suit every backbone listed: a rule per minimum."""
    minimums: dict[int, list[str]] = {}
    for name, backbone in BACKBONES.items():
        minimums.setdefault(backbone.min_size, []).append(name)
    schema["allOf"] = [
        {"if": {"required": ["backbones"], "properties": {"backbones": {"contains": {"enum": names}}}},
         "then": {"properties": {"image_size": {"minimum": minimum}}}}
        for minimum, names in sorted(minimums.items()) if minimum > SMALLEST_MINIMUM_SIZE
    ]


class BenchmarkRequest(RequestModel):
    """One dataset, a list of backbones, and the training configuration they share."""

    model_config = ConfigDict(json_schema_extra=document_size_minimums)

    name: Annotated[str | None, Field(default=None, min_length=1, max_length=200)] = None
    dataset: Annotated[int, Field(ge=1, le=LARGEST_ROW_ID, description="Id of a registered dataset")]
    # The names are checked by known_and_distinct (its message points to /backbones); the document lists them.
    backbones: Annotated[list[str], Field(min_length=1, max_length=len(BACKBONES), json_schema_extra={
        "items": {"type": "string", "enum": list(BACKBONES)}, "uniqueItems": True})]
    epochs: Annotated[int, Field(ge=1, le=10_000)] = 30
    batch_size: Annotated[int, Field(ge=1, le=4096)] = 32
    image_size: ImageSize | dict[str, ImageSize] | None = Field(
        default=None, validate_default=True, json_schema_extra=document_image_size,
        description="One size for all, or backbone → size (each one of `backbones`); default: each backbone's "
                    "own. No size may be below its backbone's minimum (GET /api/v1/backbones)")
    # The list's length is checked by rate_grid (pydantic would name the number branch of the union instead).
    learning_rate: LearningRate | Annotated[list[LearningRate], Field(json_schema_extra={
        "minItems": 1, "maxItems": MOST_LEARNING_RATES, "uniqueItems": True})] = Field(
        default=1e-3, description=f"One learning rate, or up to {MOST_LEARNING_RATES} distinct ones to choose from: "
                                  "each backbone keeps the one with the best mean validation accuracy over its repeats")
    repeats: Annotated[int, Field(ge=1, le=MOST_REPEATS, description=(
        "Trainings per learning rate, repeat i from seed + i on the same split; the test accuracy is their mean "
        "with a 95 % confidence interval"))] = 1
    patience: Annotated[int, Field(ge=0, le=10_000)] = 10
    weights: Annotated[str, Field(min_length=1, max_length=4096, description=(
        '"imagenet", "none", the id POST /api/v1/weights answered, or the path of a file under TLBENCH_DATA_ROOTS'
    ))] = "imagenet"
    augment: bool = False
    fine_tune_layers: Annotated[int, Field(ge=0, le=10_000)] = 0
    seed: Annotated[int, Field(ge=0, le=2**31 - 1)] = 0
    validation_split: Annotated[float, Field(gt=0, lt=1, description=(
        "Share of each class kept for choosing epochs and learning rates (a validation/ folder overrides it)"))] = 0.15
    test_split: Annotated[float, Field(gt=0, lt=1, description=(
        "Share of each class held out and tested once per trial (a test/ folder overrides it)"))] = 0.15
    mixed_precision: bool | None = Field(
        default=None, description="bfloat16 compute; default (null): on where the worker has a GPU or TPU")
    pool: str = Field(
        default=DEFAULT_POOL, json_schema_extra={"pattern": POOL_NAME.pattern, "not": {"const": "predict"}},
        description="The worker pool whose workers may run the jobs (`tlbench worker --pool NAME`); every "
                    "worker serves the pool default")

    @field_validator("pool")
    @classmethod
    def pool_name(cls, pool: str) -> str:
        """A name a pool (a Celery queue) can have; the prediction queue is not one."""
        problem = pool_name_problem(pool)
        if problem:
            raise ValueError(problem)
        return pool

    @field_validator("learning_rate")
    @classmethod
    def rate_grid(cls, rates):
        """A grid lists 1 to MOST_LEARNING_RATES learning rates, each once."""
        if not isinstance(rates, list):
            return rates
        if not 1 <= len(rates) <= MOST_LEARNING_RATES:
            raise ValueError(f"lists {len(rates)} learning rates; give 1 to {MOST_LEARNING_RATES}")
        if len(set(rates)) < len(rates):
            raise ValueError("lists a learning rate more than once")
        return rates

    @field_validator("test_split")
    @classmethod
    def splits_leave_training_images(cls, test_split: float, info: ValidationInfo) -> float:
        """Validation and test together leave a share for training."""
        if test_split + info.data.get("validation_split", 0) >= 1:
            raise ValueError("validation_split and test_split together must be below 1")
        return test_split

    @field_validator("backbones")
    @classmethod
    def known_and_distinct(cls, names: list[str]) -> list[str]:
        """Every backbone exists in the registry, and none is asked twice."""
        unknown = [name for name in names if name not in BACKBONES]
        if unknown:
            raise ValueError(f"unknown backbone {unknown[0]!r} (GET /api/v1/backbones lists them)")
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return names

    @field_validator("weights")
    @classmethod
    def weights_choice_or_allowed_file(cls, weights: str, info: ValidationInfo) -> str:
        """A named choice, an uploaded file's id, or a file under the data roots; a file becomes its real path,
        which the workers load. Without the app's settings in the validation context, no file is allowed."""
        if weights in SPECIAL_WEIGHTS:
            return weights
        settings = (info.context or {}).get("settings")
        path = resolve_weights(settings, weights) if settings is not None else None
        if path is None:
            raise ValueError(WEIGHTS_REFUSED)  # the same words whether or not the file exists
        return str(path)

    @field_validator("image_size")
    @classmethod
    def sizes_fit_backbones(cls, image_size, info: ValidationInfo):
        """Each backbone gets a size, and no size is below its backbone's minimum."""
        backbones = info.data.get("backbones", [])
        if isinstance(image_size, dict):
            unknown = sorted(set(image_size) - set(backbones))
            if unknown:
                raise ValueError(f"names backbones that are not in backbones: {', '.join(unknown)}")
        for name in backbones:
            size, minimum = size_for(image_size, name), get_backbone(name).min_size
            if size < minimum:
                raise ValueError(f"{size} px is below {name}'s minimum of {minimum} px")
        return image_size

    def size_for(self, backbone: str) -> int:
        """The input size this backbone trains at."""
        return size_for(self.image_size, backbone)

    def job_specs(self) -> list[dict]:
        """One job spec (jobs.spec.JobSpec fields) per backbone, sharing everything but size."""
        shared = self.model_dump(exclude={"name", "dataset", "backbones", "image_size", "pool"})
        return [{**shared, "backbone": name, "image_size": self.size_for(name)} for name in self.backbones]


def size_for(image_size: int | dict[str, int] | None, backbone: str) -> int:
    """Resolve the requested size for one backbone: one size for all, a per-backbone size, or its default."""
    if isinstance(image_size, int):
        return image_size
    if isinstance(image_size, dict) and backbone in image_size:
        return image_size[backbone]
    return get_backbone(backbone).default_size


def describe_validation_error(error: ValidationError) -> tuple[str, str | None]:
    """The first problem as "field: message", and the field's name for forms to point at."""
    errors = error.errors(include_url=False)
    first = errors[0]
    # A value that fits one branch of a union but breaks its rule ([0.001, 0] for learning_rate) is best
    # told that rule, not that it is not the first branch's type.
    same_field = [other for other in errors if other["loc"][:1] == first["loc"][:1]]
    first = next((other for other in same_field if not other["type"].endswith("_type")
                  and other["type"] != "none_required"), first)
    # The top-level field is what a form can point at; deeper parts are union branches and indexes.
    field = str(first["loc"][0]) if first["loc"] else None
    message = first["msg"].removeprefix("Value error, ")
    if first["type"] == "missing":
        message = "is required"
    elif first["type"] == "extra_forbidden":
        message = "is not a known field"
    return (f"{field}: {message}" if field else message), field


# The built-in sample: the seed's five backbones, each at the smallest size it accepts, random
# weights (nothing to download), a few epochs: a few minutes on a laptop's CPU.
SAMPLE_BENCHMARK = {
    "name": "Sample: which backbone tells the shapes apart?",
    "backbones": list(SEED_BACKBONES),
    "image_size": {name: get_backbone(name).min_size for name in SEED_BACKBONES},
    "epochs": 8,
    "batch_size": 16,
    "patience": 8,
    "weights": "none",
    # Three repeats, so the first table a new user sees has confidence intervals.
    "repeats": 3,
}
