"""Generate a pose-guided video from the command line: the entry point of :mod:`follow_your_pose.generate`.

    python -m training.generate --model DIR --prompt "Iron Man on the beach" --pose POSE \\
        --frames 32 --out OUT.mp4 [--steps 50] [--guidance-scale 12.5] [--seed 0] [--lora FILE]

Every option is a field of :class:`follow_your_pose.generate.GenerateConfig` (``--help`` lists them); what the
command reads and writes is described there.
"""

from __future__ import annotations

import logging
import sys

from follow_your_pose.generate import GenerateConfig, generate


def main(argv: list[str] | None = None) -> int:
    from training.arguments import apply_overrides, build_parser

    parser = build_parser(GenerateConfig(), prog="python -m training.generate", description=__doc__.split("\n\n")[0])
    try:
        config = apply_overrides(GenerateConfig(), vars(parser.parse_args(argv)))
        config.check_required()
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        out = generate(config)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
