"""Convert the authors' released weights: the entry point of :mod:`follow_your_pose.convert`.

    python -m training.convert_official --checkpoint PATH_OR_HUB_ID --base PATH_OR_HUB_ID --output DIR

Every option is a field of :class:`follow_your_pose.convert.ConvertConfig` (``--help`` lists them); the
layouts it reads and what it writes are described there.
"""

from __future__ import annotations

import sys

from follow_your_pose.convert import ConvertConfig, ReleaseFormatError, convert
from training.entry import run_tool


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process arguments), convert, print the output folder; bad input: one line, exit 2."""
    return run_tool(
        argv, defaults=ConvertConfig(), run=convert, prog="python -m training.convert_official",
        description=__doc__.split("\n\n")[0], errors=(ReleaseFormatError, OSError),
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
