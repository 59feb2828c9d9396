"""Datasets for tritonpool's models: generated shapes by default (offline), image folders, torchvision's."""

from data.build import DATASETS, DatasetInfo, build_datasets, make_loader
from data.shapes import SHAPES, GeneratedShapes

__all__ = ["DATASETS", "SHAPES", "DatasetInfo", "GeneratedShapes", "build_datasets", "make_loader"]
