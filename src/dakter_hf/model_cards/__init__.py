"""Model and dataset cards (`README.md`) written next to saved DAKTer artefacts: the trained generator
([`joint_diffusion_model_card`]), a pipeline pushed on its own ([`make_pipeline_card`]) and a generated dataset
([`make_dataset_card`]), and a distilled student ([`make_student_card`]).

A card states what was run and what was measured during that run, nothing else: no quality claims are made that
the run did not measure.
"""

from .common import CARD_NAME, DEFAULT_LICENSE, QUALITY_KEY, dataset_id, read_card_metadata
from .dataset import make_concatenated_dataset_card, make_dataset_card, make_labelled_dataset_card
from .generator import (
    add_quality_to_card,
    add_temperature_to_card,
    generator_quality_section,
    joint_diffusion_model_card,
    make_pipeline_card,
    quality_metadata,
    save_joint_diffusion_model_card,
    temperature_section,
)
from .student import make_student_card


__all__ = [
    "CARD_NAME",
    "DEFAULT_LICENSE",
    "QUALITY_KEY",
    "add_quality_to_card",
    "add_temperature_to_card",
    "dataset_id",
    "generator_quality_section",
    "joint_diffusion_model_card",
    "make_concatenated_dataset_card",
    "make_dataset_card",
    "make_labelled_dataset_card",
    "make_pipeline_card",
    "make_student_card",
    "quality_metadata",
    "read_card_metadata",
    "save_joint_diffusion_model_card",
    "temperature_section",
]
