"""nbgrader preprocessors that keep honest points: a JupyterLab accident or a warning costs none.

- `KeepLastDuplicate` (sanitize step, before nbgrader's DeduplicateIds): a cell copied and
  pasted in JupyterLab keeps its nbgrader metadata, so the notebook has two cells with one
  grade_id. nbgrader then sets `metadata.nbgrader = {}` on the copy, which fails the next step
  (SchemaTooOldError) and the whole notebook ("grading failed", 0 points). Here only the *last*
  cell of each grade_id keeps its metadata (the one whose definition wins when the notebook runs
  top to bottom); the earlier copies become ordinary cells, and the duplicate is reported.
- `StderrIsNotAnError` (autograde step, before SaveAutoGrades): nbgrader gives 0 points to a
  graded cell with any stderr output, so a correct cell that emits a `UserWarning` scored 0.
  Here stderr text of graded cells becomes stdout text (it is still shown in the feedback);
  only an error output costs the points.
"""

from __future__ import annotations

from nbgrader.preprocessors import NbGraderPreprocessor
from nbgrader.utils import is_grade

from grading import report


def _grade_id(cell) -> str | None:
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta.get("grade_id") if isinstance(meta, dict) else None


class KeepLastDuplicate(NbGraderPreprocessor):
    """Keep nbgrader metadata on the last cell of each grade_id only; report the others."""

    def preprocess(self, nb, resources):
        seen: set[str] = set()
        repaired = []
        for index in range(len(nb.cells) - 1, -1, -1):
            cell = nb.cells[index]
            gid = _grade_id(cell)
            if gid is None:
                continue
            if gid in seen:
                del cell.metadata["nbgrader"]
                repaired.append(gid)
                self.log.warning(
                    "Cell %d repeats grade_id %r (a copied cell?): graded by its last copy",
                    index,
                    gid,
                )
            seen.add(gid)
        if repaired:
            report.entry(resources)["copied cells"] = sorted(set(repaired))
        return nb, resources


class StderrIsNotAnError(NbGraderPreprocessor):
    """Turn stderr stream outputs of graded cells into stdout, so warnings cost no points."""

    def preprocess_cell(self, cell, resources, index):
        if is_grade(cell) and cell.cell_type == "code":
            for output in cell.outputs:
                if output.get("output_type") == "stream" and output.get("name") == "stderr":
                    output["name"] = "stdout"
        return cell, resources
