"""Datasets: loaders, the synthetic shop, a registry of names, and a checked downloader."""

from fedrec.common.data.errors import DataFormatError
from fedrec.common.data.interactions import EventType, IdMap, Interactions, ItemFeatures

__all__ = ["DataFormatError", "EventType", "IdMap", "Interactions", "ItemFeatures"]
