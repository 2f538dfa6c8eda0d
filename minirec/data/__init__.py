"""Data: locating a category in the upstream layout, reading it, and validating it.

``python -m minirec.data --category CAT [--data_dir DIR]`` runs the validation suites (:mod:`minirec.data.recipe`).
"""

from minirec.data.catalogue import Catalogue, parse_list, read_split
from minirec.data.layout import (
    BUNDLED_DATA_DIR,
    CATEGORIES,
    CategoryFiles,
    DataLayoutError,
    default_data_dir,
    file_record,
    locate,
    sha256_of,
)

__all__ = [
    "BUNDLED_DATA_DIR",
    "CATEGORIES",
    "Catalogue",
    "CategoryFiles",
    "DataLayoutError",
    "default_data_dir",
    "file_record",
    "locate",
    "parse_list",
    "read_split",
    "sha256_of",
]
