"""Errors and load reports shared by all dataset loaders."""

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..errors import DAKTerError


#: How many files / problems an error message or warning lists before "(and N more)".
MAX_LISTED = 10


class DataError(DAKTerError, ValueError):
    """Raised when input data on disk is missing, unreadable or inconsistent.

    The message always names the offending file(s) and says what was expected. ``files`` holds the paths
    involved (may be empty for errors about a whole folder).
    """

    def __init__(self, message: str, files: Optional[Tuple[str, ...]] = None):
        super().__init__(message)
        self.files: Tuple[str, ...] = tuple(files or ())


@dataclass(frozen=True)
class SkippedPair:
    """One image/mask pair dropped by a loader called with ``on_error="skip"``.

    Attributes:
        key (`str`): the pair's id (file stem with the image/mask tag removed).
        files (`Tuple[str, ...]`): the file path(s) involved.
        reason (`str`): the error message that would have been raised with ``on_error="raise"``.
    """

    key: str
    files: Tuple[str, ...]
    reason: str


@dataclass
class LoadingInfo:
    """What a loader did, returned next to the dataset when a loader is called with ``output_loading_info=True``.

    Attributes:
        num_pairs (`int`): image/mask pairs (scenes) kept.
        num_rows (`int`): rows in the returned dataset (more than ``num_pairs`` when scenes are tiled).
        skipped (`List[SkippedPair]`): pairs dropped because of bad data (only with ``on_error="skip"``).
    """

    num_pairs: int = 0
    num_rows: int = 0
    skipped: List[SkippedPair] = field(default_factory=list)

    @property
    def num_skipped(self) -> int:
        """Number of skipped pairs."""
        return len(self.skipped)
