"""Generate a pose-guided video from the command line: the entry point of :mod:`follow_your_pose.generate`.

    python -m training.generate --model DIR --prompt "Iron Man on the beach" --pose POSE \\
        --frames 32 --out OUT.mp4 [--steps 50] [--guidance-scale 12.5] [--seed 0] [--lora FILE]

Every option is a field of :class:`follow_your_pose.generate.GenerateConfig` (``--help`` lists them); what the
command reads and writes is described there.
"""

from __future__ import annotations

import sys

from follow_your_pose.generate import GenerateConfig, generate
from training.entry import run_tool


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default: the process arguments), generate, print the video's path; bad input: one line, exit 2."""
    return run_tool(
        argv, defaults=GenerateConfig(), run=generate, prog="python -m training.generate",
        description=__doc__.split("\n\n")[0], errors=(OSError, ValueError),
    )  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
