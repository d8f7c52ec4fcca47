"""notebooks/: each notebook runs from top to bottom without an error, in a kernel of this test's
interpreter, from a folder that is not the repository, and makes what it promises. Notebooks are
stored without outputs."""

import json
import sys
import time
from pathlib import Path

import pytest

from conftest import PROJECT_ROOT

NOTEBOOKS = PROJECT_ROOT / "notebooks"
QUICKSTART = NOTEBOOKS / "quickstart.ipynb"


def _texts(cell) -> str:
    """The text a code cell printed (stdout and text results)."""
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out and "text/plain" in out["data"]:
            parts.append(out["data"]["text/plain"])
    return "".join(parts)


@pytest.mark.parametrize("path", sorted(NOTEBOOKS.glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_are_stored_without_outputs(path):
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c["outputs"] and c["execution_count"] is None for c in code)
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    assert path.stat().st_size < 20_000


@pytest.mark.slow
def test_quickstart_runs_from_anywhere(tmp_path, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")

    nb = nbformat.read(QUICKSTART, as_version=4)
    # A first cell that reports the kernel's interpreter: it must be this test's.
    nb.cells.insert(0, nbformat.v4.new_code_cell("import sys; print(sys.executable)"))
    work = tmp_path / "work"
    monkeypatch.setenv("ACL_TF_QUICKSTART_DIR", str(work))   # the kernel inherits it
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=900,
                                     resources={"metadata": {"path": str(cwd)}})
    start = time.time()
    client.execute()   # raises CellExecutionError naming the cell on any error
    seconds = time.time() - start
    print(f"quickstart.ipynb ran in {seconds:.0f} s")

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert Path(_texts(code[0]).strip()) == Path(sys.executable)
    for cell in code:
        assert not [o for o in cell.outputs if o.output_type == "error"], cell.source[:80]
    printed = "\n".join(_texts(c) for c in code)
    assert f"writing into {work}" in printed

    # What each step promised.
    assert (work / "pretrain" / "encoder.keras").is_file()
    assert (work / "finetune" / "best.keras").is_file()
    assert (work / "finetune" / "training_curves.png").is_file()
    assert (work / "evaluate" / "report.json").is_file()
    assert (work / "evaluate" / "accuracy_vs_epsilon.png").is_file()
    saved_model = work / "export" / "1"
    assert (saved_model / "saved_model.pb").is_file()
    assert (saved_model / "assets.extra" / "signatures.json").is_file()
    predicted = next(line for line in printed.splitlines() if line.startswith("predicted:"))
    classes = json.loads(predicted.split(":", 1)[1])
    assert len(classes) == 8 and all(0 <= c < 10 for c in classes)
    assert "PNG bytes give the same classes: True" in printed
    # The plots are inline: the curves, accuracy vs epsilon, the test images.
    images = [o for c in code for o in c.outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3
    assert not list(cwd.iterdir())   # nothing written where the kernel started
