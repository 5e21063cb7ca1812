"""Convert the authors' released weights: the entry point of :mod:`follow_your_pose.convert`.

    python -m training.convert_official --checkpoint PATH_OR_HUB_ID --base PATH_OR_HUB_ID --output DIR

Every option is a field of :class:`follow_your_pose.convert.ConvertConfig` (``--help`` lists them); the
layouts it reads and what it writes are described there.
"""

from __future__ import annotations

import logging
import sys

from follow_your_pose.convert import ConvertConfig, ReleaseFormatError, convert


def main(argv: list[str] | None = None) -> int:
    from training.arguments import apply_overrides, build_parser

    parser = build_parser(ConvertConfig(), prog="python -m training.convert_official", description=__doc__.split("\n\n")[0])
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    try:
        config = apply_overrides(ConvertConfig(), vars(parser.parse_args(argv)))
        output = convert(config)
    except (ReleaseFormatError, OSError) as error:
        print(f"python -m training.convert_official: error: {error}", file=sys.stderr)
        return 2
    print(output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
