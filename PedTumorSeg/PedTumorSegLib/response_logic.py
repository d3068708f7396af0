"""The module's "Response over time" section without Qt: timepoints given as (label map node, T1CE volume node)
pairs, written through storage nodes and assessed by ``pedtumorseg.response``; the two diameters of every target
lesion shown as markups line nodes the user can move; a table node that follows the lines.

MRML only (Slicer's MRML classes, vtk and the core package). Moving a line's end changes that diameter, the
lesion's product and every category (``pedtumorseg.response.readout.edit_diameters``); the table is rewritten.
Points: the core gives them in LPS, MRML holds RAS (x and y negated).
"""

from __future__ import annotations

from pathlib import Path

from pedtumorseg.response.assess import assess
from pedtumorseg.response.criteria import CRITERIA
from pedtumorseg.response.readout import edit_diameters
from pedtumorseg.response.timepoints import TimepointSpec, load_timepoint

from .prediction_logic import PredictionLogic

TABLE_COLUMNS = ("timepoint", "SPD (mm2)", "2D", "2D change vs baseline (%)", "volume (mL)", "volume",
                 "volume change vs baseline (%)", "agree")


def _ras(lps) -> tuple[float, float, float]:
    return -float(lps[0]), -float(lps[1]), float(lps[2])


class ResponseLogic:
    """``tempDirectory()`` returns a new empty folder for the written volumes."""

    def __init__(self, scene, tempDirectory):
        self.scene = scene
        self.tempDirectory = tempDirectory
        self.result: dict | None = None
        self.criterion = None
        self.lines: dict[str, tuple[str, int, str]] = {}  # line node id -> (timepoint, track, "LD" or "PD")
        self.table = None

    @staticmethod
    def _write(node, path: Path) -> Path:
        PredictionLogic.writeVolume(node, path)  # the module's one way of writing a volume outside the scene
        return path

    def assess(self, pairs, criterion: str, measured: str | None = None) -> dict:
        """``pairs``: [(name, labelmap volume node, T1CE scalar volume node)] in time order, baseline first."""
        folder = Path(self.tempDirectory())
        timepoints = []
        for k, (name, labels, t1ce) in enumerate(pairs):
            seg = self._write(labels, folder / f"tp{k}-seg.nii.gz")
            image = self._write(t1ce, folder / f"tp{k}-t1c.nii.gz")
            timepoints.append(load_timepoint(TimepointSpec(name, seg=seg, t1ce=image)))
        self.criterion = CRITERIA[criterion]
        self.result = assess(timepoints, self.criterion, measured=measured)
        self.showCalipers()
        self.updateTable()
        return self.result

    def showCalipers(self) -> list:
        """A markups line node per diameter of every measured target lesion (old ones removed)."""
        for nodeId in list(self.lines):
            node = self.scene.GetNodeByID(nodeId)
            if node is not None:
                self.scene.RemoveNode(node)
        self.lines = {}
        nodes = []
        for row in self.result["lesions"]:
            if not (row["target"] and row["measurement"] and row["measurement"].get("chosen")):
                continue
            chosen = row["measurement"]["chosen"]
            for which, key in (("LD", "longest_ends_lps_mm"), ("PD", "perpendicular_ends_lps_mm")):
                node = self.scene.AddNewNodeByClass("vtkMRMLMarkupsLineNode",
                                                    f"{row['timepoint']} lesion {row['track']} {which}")
                for point in chosen[key]:
                    node.AddControlPoint(*_ras(point))
                self.lines[node.GetID()] = (row["timepoint"], row["track"], which)
                nodes.append(node)
        return nodes

    @staticmethod
    def _length(node) -> float:
        a, b = [0.0] * 3, [0.0] * 3
        node.GetNthControlPointPosition(0, a)
        node.GetNthControlPointPosition(1, b)
        return sum((p - q) ** 2 for p, q in zip(a, b)) ** 0.5

    def lineMoved(self, nodeId: str) -> dict:
        """The lengths of the moved lesion's two lines become its diameters; every category is recomputed."""
        timepoint, track, _ = self.lines[nodeId]
        lengths = {}
        for other, (tp, tr, which) in self.lines.items():
            if tp == timepoint and tr == track:
                lengths[which] = self._length(self.scene.GetNodeByID(other))
        longest, perpendicular = max(lengths.values()), min(lengths.values())
        edit_diameters(self.result, self.criterion, timepoint, track, longest, perpendicular)
        self.updateTable()
        return self.result

    def updateTable(self):
        """The timepoint table (a vtkMRMLTableNode, created once)."""
        if self.table is None or self.scene.GetNodeByID(self.table.GetID()) is None:
            self.table = self.scene.AddNewNodeByClass("vtkMRMLTableNode", "PedTumorSeg response")
        table = self.table
        table.RemoveAllColumns()
        for name in TABLE_COLUMNS:
            table.AddColumn().SetName(name)
        for tp in self.result["timepoints"]:
            c2, cv = tp["category_2d"] or {}, tp["category_volume"] or {}
            values = (tp["name"], f"{tp['spd_mm2']:.1f}", c2.get("category", ""), c2.get("change_vs_baseline_pct"),
                      f"{tp['measured_volume_ml']:.2f}", cv.get("category", ""), cv.get("change_vs_baseline_pct"),
                      tp["categories_agree"])
            row = table.AddEmptyRow()
            for col, value in enumerate(values):
                table.SetCellText(row, col, "" if value is None else str(value))
        return table
