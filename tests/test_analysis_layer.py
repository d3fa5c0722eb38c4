"""lossbench.analysis sits between the records and both of its readers, adaptive seeding's rounds and the report:
it imports only the bottom layer and record.py; the report reads only files (record, store) and analysis; and no
run code imports the report (only the command line does, to write it after a run)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "lossbench"
BOTTOM = {"errors", "registry", "suite_yaml", "machine", "threads", "device", "metrics", "atomic_write"}


def _imports(paths: list[Path]) -> dict[str, set[str]]:
    """Per top-level part of lossbench, the files among `paths` that import it (top level, in functions, under
    TYPE_CHECKING alike)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if parts[0] == "lossbench" and len(parts) > 1:
                    found.setdefault(parts[1], set()).add(str(path.relative_to(PACKAGE)))
    return found


def test_analysis_imports_only_the_bottom_layer_and_the_record() -> None:
    allowed = BOTTOM | {"record", "analysis"}
    imported = _imports(sorted((PACKAGE / "analysis").rglob("*.py")))
    assert {part: files for part, files in imported.items() if part not in allowed} == {}


def test_the_report_imports_only_files_readers_and_analysis() -> None:
    allowed = BOTTOM | {"axes", "record", "store", "analysis", "report"}
    imported = _imports(sorted((PACKAGE / "report").rglob("*.py")))
    assert {part: files for part, files in imported.items() if part not in allowed} == {}


def test_no_run_code_imports_the_report() -> None:
    outside = [p for p in sorted(PACKAGE.rglob("*.py")) if p.relative_to(PACKAGE).parts[0] not in (
        "report", "cli", "cli.py")]
    assert _imports(outside).get("report", set()) == set()


def test_importing_analysis_loads_no_torch_configuration_or_grid() -> None:
    code = ("import sys\n"
            "import lossbench.analysis.adaptive_seeds, lossbench.analysis.baseline, lossbench.analysis.measures\n"
            "import lossbench.analysis.stats\n"
            "print(sorted(m for m in ('torch', 'lossbench.config', 'lossbench.grid') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
