"""Preference data: records, readers/writers, converters, validation, curation, splits, the world."""

from preftune.data.records import (  # noqa: F401
    Message,
    PairRecord,
    Problem,
    RatedRecord,
    Record,
    UnpairedRecord,
    record_from_dict,
    validate_row,
)
