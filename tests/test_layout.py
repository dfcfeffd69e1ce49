"""The design's layout rules, checked so a change cannot quietly break them."""
from __future__ import annotations

import ast
import collections
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


def test_core_imports_no_qt_and_no_app():
    bad = {str(p.relative_to(ROOT)): sorted(_imports(p) & {"PySide6", "PyQt5", "PyQt6", "shiboken6", "app"})
           for p in (ROOT / "core").rglob("*.py")}
    assert {k: v for k, v in bad.items() if v} == {}


def test_test_modules_have_unique_basenames():
    # pytest's default import mode puts each test folder on sys.path: two test_x.py in different
    # folders collide at collection ("import file mismatch"), which once broke CI.
    names = collections.Counter(p.name for p in (ROOT / "tests").rglob("*.py") if p.name != "conftest.py")
    assert [n for n, c in names.items() if c > 1] == []


def test_the_window_does_not_import_torch():
    """Decision 0008: the GUI process stays light; torch loads in the worker (and in the GUI only
    when a model file is opened). Importing the window must not pull it in."""
    import subprocess
    import sys
    code = "import sys, app.main_window; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_code_cites_the_method_description_inside_the_repository():
    """Comments cite docs/method.md (in the repository), not documents a fresh clone lacks, and
    every "method.md component N" they cite exists there."""
    import re
    method = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    numbered = {int(n) for n in re.findall(r"^(\d+)\. \*\*", method, flags=re.M)}
    outside, missing = [], []
    for p in [*(ROOT / "core").rglob("*.py"), *(ROOT / "app").rglob("*.py"), *(ROOT / "bench").glob("*.py")]:
        text = p.read_text(encoding="utf-8")
        if re.search(r"semirest-spec|other-methods\.md|spec component", text):
            outside.append(str(p.relative_to(ROOT)))
        for m in re.finditer(r"method\.md components? ([\d, and-]+)", text):
            for a, b in re.findall(r"(\d+)(?:-(\d+))?", m.group(1)):
                missing += [f"{p.name}: {n}" for n in range(int(a), int(b or a) + 1) if n not in numbered]
    assert outside == [] and missing == []


def test_readme_preset_table_matches_the_presets():
    """The README's preset table is written by hand; it once said width 96 for the cpu preset after
    decision 0020 made it 192. Its numeric columns must be what ``core.config.preset`` builds."""
    import re
    from core.config import PRESETS, preset
    rows = {}
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        m = re.match(r"\| `(\w+)` \|", line)
        if m and m.group(1) in PRESETS:
            rows[m.group(1)] = [c.strip() for c in line.strip("|").split("|")]
    assert set(rows) == set(PRESETS)
    for name, cells in rows.items():
        c = preset(name)
        _, _, size, _, swin, window, steps, _ = cells
        assert size == str(c.features.image_size), name
        assert swin == f"{c.swin.embed_dim}/{c.swin.num_heads}/{c.swin.depth}", name
        assert window == f"{c.swin.mu}/{c.swin.step}", name
        assert steps.startswith(f"{c.train.steps} (+{c.semi.steps} "), name
