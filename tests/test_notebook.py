"""colab/quickstart.ipynb runs top to bottom on the 'test' preset, reusing the suite's trained workdir (the
notebook's "reuse a workdir" path; training itself is what that workdir's fixture runs)."""
import os

import nbclient
import nbformat

from tests import helpers


def test_quickstart_notebook_executes(trained, tmp_path):
  nb = nbformat.read(os.path.join(helpers.ROOT, "colab", "quickstart.ipynb"), as_version=4)
  os.environ["VIDGEN_NOTEBOOK_PRESET"] = "test"
  workdir = trained[1]
  os.environ["VIDGEN_NOTEBOOK_WORKDIR"] = workdir
  os.environ["VIDGEN_REPO"] = helpers.ROOT
  try:
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
  finally:
    for k in ("VIDGEN_NOTEBOOK_PRESET", "VIDGEN_NOTEBOOK_WORKDIR", "VIDGEN_REPO"):
      os.environ.pop(k, None)
  outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
  assert any("image/png" in o.get("data", {}) for o in outputs)
  assert any("video/mp4;base64" in o.get("data", {}).get("text/html", "") for o in outputs)
  assert os.path.exists(os.path.join(workdir, "notebook_samples", "index.json"))
