"""Build LAION-Pose: LAION parquet metadata in, pose-annotated WebDataset shards out (a Ray job).

    python pipelines/build_laion_pose.py                      # the bundled sample, local Ray, no network
    python pipelines/build_laion_pose.py --input 'laion/*.parquet' --output DIR \
        [--pose-backend mmpose|mediapipe] [--allow-private-urls] ...
    ray job submit --working-dir . -- python pipelines/build_laion_pose.py --input ... --output ...

``--help`` lists every flag. The output layout is documented in
:mod:`datasets.laion_pose`; the stages in :mod:`pipelines.laion_pose`.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from pipelines.laion_pose.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    # Run by path (also by `ray job submit`): make the checkout this file lives in importable first.
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    sys.exit(main())
