"""The import graph runs one way, read from the source (every import statement, also those inside functions).

    datasets  <-  pose_extraction  <-  pipelines
        ^               ^
        |               |
    follow_your_pose (the model library)  <-  training, evaluation

``datasets`` imports none of ours; ``pose_extraction`` only ``datasets``; the library ``datasets`` and
``pose_extraction``; ``pipelines`` those two; ``training`` and ``evaluation`` the library, ``datasets`` and
``pose_extraction`` (evaluation re-detects poses; training draws skeletons). Nothing imports ``pipelines``,
``training`` or ``evaluation`` from another package: only their own entry points, tests and benchmarks do.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("datasets", "pose_extraction", "follow_your_pose", "pipelines", "training", "evaluation")
ALLOWED = {
    "datasets": set(),
    "pose_extraction": {"datasets"},
    "follow_your_pose": {"datasets", "pose_extraction"},
    "pipelines": {"datasets", "pose_extraction"},
    "training": {"datasets", "pose_extraction", "follow_your_pose"},
    "evaluation": {"datasets", "pose_extraction", "follow_your_pose"},
}


def imported_packages(path: Path) -> set[tuple[str, int]]:
    """``(our top-level package, line)`` of every absolute import in ``path``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found |= {(name.split(".")[0], node.lineno) for name in names if name.split(".")[0] in OURS}
    return found


@pytest.mark.parametrize("package", OURS)
def test_each_package_imports_only_what_the_graph_allows(package):
    wrong = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for imported, line in imported_packages(path):
            if imported != package and imported not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {imported}")
    assert not wrong, f"{package} may import only {sorted(ALLOWED[package]) or 'none of ours'}:\n" + "\n".join(wrong)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    source = tmp_path / "module.py"
    source.write_text("import os\n\ndef f():\n    from training.loop import train\n    import evaluation.run\n")
    assert {name for name, _ in imported_packages(source)} == {"training", "evaluation"}
