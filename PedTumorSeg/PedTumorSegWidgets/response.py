"""The module's "Response over time" section (Qt wiring only; the MRML logic is
``PedTumorSegLib.response_logic``, the algorithm ``pedtumorseg.response``).

Each timepoint is a row: a name, its label map (the module's "Export to label map", or any label map on the
T1CE's grid) and its T1CE, baseline first. "Assess" measures them under the chosen criterion, draws each target
lesion's two diameters as markups lines and fills the table; dragging a line's end re-measures that lesion and
updates every category. The categories are a suggestion for the reader."""

import ctk
import qt
import slicer
from slicer.i18n import tr as _

from pedtumorseg.response.assess import SUGGESTION
from pedtumorseg.response.criteria import CRITERIA
from PedTumorSegLib.response_logic import ResponseLogic


class ResponseSection:
    def __init__(self, layout) -> None:
        self.button = ctk.ctkCollapsibleButton()
        self.button.text = _("Response over time (RAPNO / RANO 2.0)")
        self.button.collapsed = True
        layout.addWidget(self.button)
        self.form = qt.QFormLayout(self.button)
        self.criterion = qt.QComboBox()
        for key, crit in CRITERIA.items():
            self.criterion.addItem(crit.name, key)
        self.form.addRow(_("Criterion:"), self.criterion)
        self.measured = qt.QComboBox()
        for text, value in ((_("the criterion's default"), ""), (_("enhancing part (ET)"), "ET"),
                            (_("T2/FLAIR lesion"), "T2FLAIR")):
            self.measured.addItem(text, value)
        self.form.addRow(_("Measure:"), self.measured)
        self.rows = []
        for _k in range(2):
            self.addRow()
        addButton, assessButton = qt.QPushButton(_("Add timepoint")), qt.QPushButton(_("Assess"))
        addButton.connect("clicked(bool)", lambda _=False: self.addRow())
        assessButton.connect("clicked(bool)", lambda _=False: self.onAssess())
        self.form.addRow(addButton, assessButton)
        self.table = slicer.qMRMLTableView()
        self.table.setMRMLScene(slicer.mrmlScene)
        self.form.addRow(self.table)
        self.status = qt.QLabel(SUGGESTION)
        self.status.wordWrap = True
        self.form.addRow(self.status)
        self.logic = ResponseLogic(slicer.mrmlScene, lambda: slicer.util.tempDirectory())
        self.observed = []

    def _combo(self, nodeType: str):
        combo = slicer.qMRMLNodeComboBox()
        combo.nodeTypes = [nodeType]
        combo.noneEnabled, combo.addEnabled, combo.removeEnabled = True, False, False
        combo.setMRMLScene(slicer.mrmlScene)
        return combo

    def addRow(self) -> None:
        name = qt.QLineEdit(f"tp{len(self.rows)}")
        labels, t1ce = self._combo("vtkMRMLLabelMapVolumeNode"), self._combo("vtkMRMLScalarVolumeNode")
        box = qt.QHBoxLayout()
        for widget in (name, labels, t1ce):
            box.addWidget(widget)
        self.form.insertRow(2 + len(self.rows), _("Timepoint (name, labels, T1CE):"), box)
        self.rows.append((name, labels, t1ce))

    def onAssess(self) -> None:
        pairs = [(n.text.strip(), lab.currentNode(), img.currentNode()) for n, lab, img in self.rows
                 if lab.currentNode() and img.currentNode()]
        if len(pairs) < 2:
            self.status.text = _("Choose a label map and a T1CE for at least two timepoints.")
            return
        try:
            with slicer.util.WaitCursor():
                self.logic.assess(pairs, self.criterion.currentData, self.measured.currentData or None)
        except Exception as exc:  # one line for the user, the details in the log
            slicer.util.errorDisplay(_("Response assessment failed: {error}").format(error=exc))
            return
        for node, tag in self.observed:
            node.RemoveObserver(tag)
        self.observed = []
        for nodeId in self.logic.lines:
            node = slicer.mrmlScene.GetNodeByID(nodeId)
            tag = node.AddObserver(slicer.vtkMRMLMarkupsNode.PointEndInteractionEvent,
                                   lambda caller, event, i=nodeId: self.onLineMoved(i))
            self.observed.append((node, tag))
        self.table.setMRMLTableNode(self.logic.table)
        self.status.text = SUGGESTION

    def onLineMoved(self, nodeId: str) -> None:
        self.logic.lineMoved(nodeId)
        self.table.setMRMLTableNode(self.logic.table)
