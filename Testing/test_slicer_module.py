"""Static checks of the Slicer module (Slicer cannot run here): syntax for Slicer's Python 3.12, the .ui against
the code, the parameter node against the .ui, CMake lists against the files, the installed demo bundle location,
and the headless batch script outside Slicer."""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pedtumorseg import background, panel

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "PedTumorSeg"
MODULE_PY = MODULE / "PedTumorSeg.py"
UI = MODULE / "Resources" / "UI" / "PedTumorSeg.ui"
CMAKE = MODULE / "CMakeLists.txt"


def _module_python_files() -> set[str]:
    files = {p.relative_to(MODULE).as_posix() for p in MODULE.glob("*.py")}
    files |= {p.relative_to(MODULE).as_posix() for p in (MODULE / "pedtumorseg").rglob("*.py")
              if "__pycache__" not in p.parts}
    return files


def _cmake_list(text: str, variable: str) -> list[str]:
    m = re.search(r"set\(\s*" + variable + r"\s+(.*?)\)", text, re.S)
    assert m, f"{variable} not set in CMakeLists.txt"
    items = []
    for line in m.group(1).splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            items += line.split()
    return [i.replace("${MODULE_NAME}", "PedTumorSeg").replace("${CMAKE_CURRENT_SOURCE_DIR}/", "") for i in items]


# --- syntax ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("relpath", sorted(_module_python_files()))
def test_compiles_for_python_312(relpath):
    source = (MODULE / relpath).read_text(encoding="utf-8")
    tree = ast.parse(source, filename=relpath, feature_version=(3, 12))
    compile(source, relpath, "exec")
    # modules removed from the standard library by Python 3.12 (PEP 594/632): gone in Slicer 5.10's Python
    removed = {"imp", "distutils", "asynchat", "asyncore", "smtpd"}
    for node in ast.walk(tree):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
            [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
        for name in names:
            assert name.split(".")[0] not in removed, f"{relpath} imports {name}, removed in Python 3.12"


def test_core_package_never_imports_slicer_qt_vtk():
    for relpath in _module_python_files():
        if not relpath.startswith("pedtumorseg/"):
            continue
        tree = ast.parse((MODULE / relpath).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                assert name.split(".")[0] not in ("slicer", "qt", "vtk", "ctk", "nnunetv2"), (relpath, name)


# --- .ui against the code -------------------------------------------------------------------------------------

def _ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def _ui_property(widget: ET.Element, name: str) -> str | None:
    for prop in widget.findall("property"):
        if prop.get("name") == name:
            child = list(prop)[0]
            return child.text
    return None


_EXPECTED_CLASS = [
    (r"Selector$", {"qMRMLNodeComboBox"}),
    (r"CollapsibleButton$", {"ctkCollapsibleButton"}),
    (r"Button$", {"QPushButton"}),
    (r"Slider$", {"ctkSliderWidget"}),
    (r"CheckBox$", {"QCheckBox"}),
    (r"ComboBox$", {"QComboBox"}),
    (r"Label$", {"QLabel"}),
    (r"LineEdit$", {"ctkPathLineEdit"}),
    (r"Table$", {"QTableWidget"}),
    (r"Bar$", {"QProgressBar"}),
]


def _ui_names_used_by_code() -> set[str]:
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) and node.value.attr == "ui"
                and isinstance(node.value.value, ast.Name) and node.value.value.id == "self"):
            names.add(node.attr)
        # getattr(self.ui, "literal")
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                and len(node.args) >= 2 and isinstance(node.args[0], ast.Attribute) and node.args[0].attr == "ui"
                and isinstance(node.args[1], ast.Constant)):
            names.add(node.args[1].value)
    names.discard("resultsTable.horizontalHeader")
    return names


def test_ui_parses_and_every_widget_the_code_uses_exists_with_a_plausible_class():
    widgets = _ui_widgets()
    used = _ui_names_used_by_code()
    assert {"applyButton", "resultsTable", "progressBar", "statusLabel"} <= used
    # names reached through getattr(self.ui, <computed>)
    for spec in panel.slider_specs():
        used.add(spec.widget_name)
        if spec.kind == "slider":
            used.add(spec.name + "Label")
    for name in ("show3DButton", "exportLabelmapButton", "exportSegmentationButton", "exportCsvButton", "resetButton"):
        used.add(name)
    missing = sorted(n for n in used if n not in widgets)
    assert not missing, f"widgets used by PedTumorSeg.py but missing from the .ui: {missing}"
    for name in used:
        cls = widgets[name].get("class")
        for pattern, classes in _EXPECTED_CLASS:
            if re.search(pattern, name):
                assert cls in classes, f"{name} is a {cls}, expected one of {classes}"
                break
        else:
            pytest.fail(f"no class expectation for widget name {name}")


def test_ui_custom_widgets_declared_and_selectors_get_the_scene():
    root = ET.parse(UI).getroot()
    declared = {c.findtext("class") for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    assert {c for c in used if not c.startswith("Q")} <= declared
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    selectors = {name for name, w in _ui_widgets().items() if w.get("class") == "qMRMLNodeComboBox"}
    assert selectors == receivers
    widgets = _ui_widgets()
    for channel in ("t1", "t1ce", "t2", "flair"):
        types = [s.text for p in widgets[channel + "Selector"].findall("property") if p.get("name") == "nodeTypes"
                 for s in p.iter("string")]
        assert types == ["vtkMRMLScalarVolumeNode"]
        assert _ui_property(widgets[channel + "Selector"], "showChildNodeTypes") == "false"  # no label maps


def _parameter_node_fields() -> dict[str, str]:
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "PedTumorSegParameterNode":
            assert any(isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list)
            return {stmt.target.id: ast.unparse(stmt.annotation) for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign)}
    raise AssertionError("PedTumorSegParameterNode not found")


def test_parameter_node_matches_ui_bindings():
    fields = _parameter_node_fields()
    bound = {}
    for name, widget in _ui_widgets().items():
        param = _ui_property(widget, "SlicerParameterName")
        if param:
            bound[param] = widget.get("class")
    assert set(bound) <= set(fields), f"SlicerParameterName without a parameter: {set(bound) - set(fields)}"
    compatible = {"qMRMLNodeComboBox": r"^vtkMRML\w+Node$", "QComboBox": r"Choice\(", "QCheckBox": r"^bool$",
                  "ctkSliderWidget": r"^_slider\("}
    for param, cls in bound.items():
        assert re.search(compatible[cls], fields[param]), (param, cls, fields[param])
    # every post-processing control is a parameter (saved with the scene) and bound to its widget
    for spec in panel.slider_specs():
        assert spec.name in bound
    for channel in ("t1", "t1ce", "t2", "flair"):
        assert bound[channel + "Volume"] == "qMRMLNodeComboBox"


def test_module_uses_only_existing_core_functions():
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "panel":
            assert hasattr(panel, node.attr), f"panel.{node.attr} does not exist"
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pedtumorseg"):
            module = __import__(node.module, fromlist=["_"])
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module}.{alias.name} does not exist"


def test_module_file_has_module_widget_logic_test_classes():
    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    classes = {n.name: [ast.unparse(b) for b in n.bases] for n in tree.body if isinstance(n, ast.ClassDef)}
    assert "ScriptedLoadableModule" in classes["PedTumorSeg"]
    assert "ScriptedLoadableModuleWidget" in classes["PedTumorSegWidget"]
    assert "ScriptedLoadableModuleLogic" in classes["PedTumorSegLogic"]
    assert "ScriptedLoadableModuleTest" in classes["PedTumorSegTest"]


# --- CMake --------------------------------------------------------------------------------------------------------

def test_cmake_lists_every_python_file_and_resource():
    text = CMAKE.read_text(encoding="utf-8")
    scripts = _cmake_list(text, "MODULE_PYTHON_SCRIPTS")
    resources = _cmake_list(text, "MODULE_PYTHON_RESOURCES")
    assert len(scripts) == len(set(scripts))
    assert set(scripts) == _module_python_files(), (
        f"missing from CMake: {sorted(_module_python_files() - set(scripts))}; "
        f"listed but absent: {sorted(set(scripts) - _module_python_files())}")
    on_disk = {p.relative_to(MODULE).as_posix() for p in (MODULE / "Resources").rglob("*") if p.is_file()}
    assert set(resources) == on_disk, (f"missing from CMake: {sorted(on_disk - set(resources))}; "
                                       f"listed but absent: {sorted(set(resources) - on_disk)}")
    assert re.search(r"slicerMacroBuildScriptedModule\(\s*NAME \$\{MODULE_NAME\}\s+SCRIPTS \$\{MODULE_PYTHON_SCRIPTS\}"
                     r"\s+RESOURCES \$\{MODULE_PYTHON_RESOURCES\}\s+WITH_GENERIC_TESTS\s*\)", text)


def test_cmake_installs_the_demo_bundle_where_default_bundle_path_looks(tmp_path):
    from pedtumorseg.bundle import DEMO_BUNDLE_NAME

    text = CMAKE.read_text(encoding="utf-8")
    bundles = _cmake_list(text, "MODULE_DEMO_BUNDLES")
    assert bundles == [f"../Resources/Models/{DEMO_BUNDLE_NAME}"]
    # every bundle shipped at the top level is in the list
    shipped = {f"../Resources/Models/{p.name}" for p in (REPO / "Resources" / "Models").glob("*.zip")}
    assert shipped <= set(bundles)
    assert "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}/Resources/Models/${_bundle_name}" in text
    assert "DESTINATION ${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}/Resources/Models" in text
    # simulate the installed layout: <module dir>/{PedTumorSeg.py, pedtumorseg/, Resources/Models/<bundle>}
    installed = tmp_path / "lib" / "qt-scripted-modules"
    shutil.copytree(MODULE / "pedtumorseg", installed / "pedtumorseg",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (installed / "Resources" / "Models").mkdir(parents=True)
    (installed / "Resources" / "Models" / DEMO_BUNDLE_NAME).write_bytes(b"PK")
    env = {k: v for k, v in os.environ.items() if k not in ("PEDTUMORSEG_DEMO_BUNDLE", "PYTHONPATH")}
    env["PYTHONPATH"] = str(installed)
    out = subprocess.run([sys.executable, "-c", "import pedtumorseg.bundle as b; print(b.__file__); "
                          "print(b.default_bundle_path())"], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[0].startswith(str(installed))
    assert Path(out[1]) == installed / "Resources" / "Models" / DEMO_BUNDLE_NAME


def test_top_level_cmake_metadata():
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS"):
        assert re.search(r"set\(" + key + r" \"[^\"]+\"\)", text), key
    assert 'set(EXTENSION_CATEGORY "Segmentation")' in text
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in text
    order = ["find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})", "add_subdirectory(PedTumorSeg)",
             "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.index(s) for s in order]
    assert positions == sorted(positions)
    assert (REPO / "Resources" / "Icons" / "PedTumorSeg.png").is_file()


def test_icons_are_128px_pngs():
    for path in (REPO / "Resources" / "Icons" / "PedTumorSeg.png", MODULE / "Resources" / "Icons" / "PedTumorSeg.png"):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert (width, height) == (128, 128)


# --- headless batch outside Slicer ---------------------------------------------------------------------------------

def _load_batch():
    import importlib.util

    spec = importlib.util.spec_from_file_location("pedtumorseg_batch_script", MODULE / "batch.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class _FakeBundle:
    name, version, folds = "fake", "0.1", [3, 4]

    def __init__(self, path):
        from pedtumorseg.postprocess import PostprocessParams

        self.path = Path(path)
        self.postprocessing = PostprocessParams(min_volume_et=10.0)


def test_batch_script_arguments_after_double_dash():
    batch = _load_batch()
    assert batch.script_arguments(["--no-main-window", "--", "--input-dir", "a"]) == ["--input-dir", "a"]
    assert batch.script_arguments(["--input-dir", "a"]) == ["--input-dir", "a"]


class _FakeEngine:
    def __init__(self, bundle, options):
        self.options, self.device = options, "cpu"
        self.folds = options.folds if options.folds is not None else bundle.folds


def _fake_loading(monkeypatch):
    """Predictor.load runs for real, on a fake bundle and engine (counted loads)."""
    from pedtumorseg import pipeline

    loads = []
    monkeypatch.setattr(pipeline, "load_bundle", lambda path: loads.append(path) or _FakeBundle(path))
    monkeypatch.setattr(pipeline, "Engine", _FakeEngine)
    return loads


@pytest.mark.parametrize("quality, folds, tta", [("fast", [3], False), ("full", None, True)])
def test_batch_calls_run_batch_and_reports(monkeypatch, tmp_path, capsys, quality, folds, tta):
    from pedtumorseg import pipeline

    batch = _load_batch()
    calls = {}

    def fake_run_batch(input_dir, output_dir, **kwargs):
        calls.update(kwargs, input_dir=input_dir, output_dir=output_dir)
        kwargs["progress"](1, 3, "A", "done")  # run_batch's index is 1-based
        kwargs["progress"](2, 3, "B", "skipped")
        kwargs["progress"](3, 3, "C", "failed")
        return pipeline.BatchSummary(done=["A"], skipped=["B"], failed=[("C", "C-t1n.nii.gz: contains NaN")])

    monkeypatch.setattr(pipeline, "run_batch", fake_run_batch)
    loads = _fake_loading(monkeypatch)
    status = batch.main(["--", "--input-dir", str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
                         "--model", str(tmp_path / "m.zip"), "--device", "cpu", "--quality", quality,
                         "--num-parts", "2", "--part-id", "1", "--set", "min_volume_et=99", "--set",
                         "ratio_enabled=false", "--skull-strip", "no"])
    assert status == 1
    out = capsys.readouterr().out
    assert "[1/3] A: done" in out and "[3/3] C: failed" in out
    assert "1 segmented, 1 already finished (skipped), 1 failed" in out  # run_batch's own summary lines
    assert "FAILED C: C-t1n.nii.gz: contains NaN" in out
    assert loads == [str(tmp_path / "m.zip")]  # the bundle is loaded once, by Predictor.load
    predictor = calls["predictor"]
    assert predictor.engine.options.folds == folds and predictor.engine.options.tta is tta
    assert predictor.engine.options.device == "cpu" and calls["num_parts"] == 2 and calls["part_id"] == 1
    assert predictor.params.min_volume_et == 99.0 and predictor.params.ratio_enabled is False
    assert predictor.params.min_volume_cc == 50.0  # the rest from the bundle's defaults
    assert predictor.raw.skull_strip == "no" and predictor.raw.register == "auto"
    assert calls["input_dir"] == str(tmp_path / "in")


def test_batch_success_and_usage_errors(monkeypatch, tmp_path, capsys):
    from pedtumorseg import pipeline

    batch = _load_batch()
    monkeypatch.setattr(pipeline, "run_batch", lambda *a, **k: pipeline.BatchSummary(done=["A"]))
    _fake_loading(monkeypatch)
    base = ["--input-dir", "i", "--output-dir", "o", "--model", "m"]
    assert batch.main(base) == 0
    assert batch.main(base + ["--set", "no_such_param=1"]) == 2
    assert "no_such_param" in capsys.readouterr().out
    assert batch.main(base + ["--num-parts", "2", "--part-id", "2"]) == 2
    assert batch.main(["--input-dir", "i"]) == 2  # --output-dir missing
    assert batch.main(base + ["--quality", "medium"]) == 2


def test_batch_script_as_a_process_exits_non_zero_on_a_bad_bundle(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, str(MODULE / "batch.py"), "--", "--input-dir", str(tmp_path),
                           "--output-dir", str(tmp_path / "out"), "--model", str(tmp_path / "missing.zip")],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "missing.zip" in proc.stdout
    assert not (tmp_path / "out").exists()


def test_background_module_is_what_the_module_uses():
    text = MODULE_PY.read_text(encoding="utf-8")
    for name in ("BackgroundPrediction", "build_predict_command", "child_environment", "find_python_slicer"):
        assert name in text and hasattr(background, name)


# --- the Logic's post-processing glue against recording fakes of the Slicer calls it makes -------------------------
# The fakes implement only the documented behaviour of the Slicer functions the Logic calls (checked against
# Slicer's source: slicer/util.py updateSegmentBinaryLabelmapFromArray / arrayFromSegmentBinaryLabelmap /
# arrayFromVolume, vtkSegmentation AddEmptySegment / GetSegment / RemoveAllSegments, vtkSegment SetTerminology).

import types

import numpy as np


class _FakeSegment:
    def __init__(self, name, color):
        self.name, self.color, self.terminology = name, tuple(color), ""
        self.nameAuto = self.colorAuto = True

    def SetTerminology(self, value):
        self.terminology = value

    def GetTerminology(self):
        return self.terminology

    def SetNameAutoGenerated(self, value):
        self.nameAuto = value

    def SetColorAutoGenerated(self, value):
        self.colorAuto = value


class _FakeSegmentation:
    def __init__(self):
        self.segments = {}

    def AddEmptySegment(self, segmentId, name, color):
        assert segmentId not in self.segments
        self.segments[segmentId] = _FakeSegment(name, color)
        return segmentId

    def GetSegment(self, segmentId):
        return self.segments.get(segmentId)

    def RemoveAllSegments(self):
        self.segments.clear()

    def GetNumberOfSegments(self):
        return len(self.segments)


class _FakeDisplayNode:
    def SetVisibility(self, value):
        self.visible = value


class _FakeSegmentationNode:
    def __init__(self, name):
        self.name, self.segmentation, self.arrays, self.reference = name, _FakeSegmentation(), {}, None
        self.display = None

    def CreateDefaultDisplayNodes(self):
        self.display = self.display or _FakeDisplayNode()

    def GetDisplayNode(self):
        return self.display

    def SetReferenceImageGeometryParameterFromVolumeNode(self, node):
        self.reference = node

    def SetSourceRepresentationToBinaryLabelmap(self):
        return True

    def GetSegmentation(self):
        return self.segmentation


class _FakeVolume:
    def __init__(self, name, array):
        self.name, self.array = name, array

    def GetName(self):
        return self.name

    def GetID(self):
        return "id_" + self.name


class _FakeSH:
    def __init__(self):
        self.parents = {}

    def GetItemByDataNode(self, node):
        return id(node)

    def GetItemParent(self, item):
        return 7

    def SetItemParent(self, item, parent):
        self.parents[item] = parent


def _fake_slicer_modules(scene_nodes):
    def module(name, **attrs):
        m = types.ModuleType(name)
        m.__dict__.update(attrs)
        return m

    class _Base:
        def __init__(self, *args, **kwargs):
            pass

        def getParameterNode(self):
            raise AssertionError("not used in these tests")

    sh = _FakeSH()
    scene = types.SimpleNamespace(
        AddNewNodeByClass=lambda cls, name="": scene_nodes.setdefault(name, _FakeSegmentationNode(name)),
        GetSubjectHierarchyNode=lambda: sh)

    def update_segment(narray, segmentationNode, segmentId, referenceVolumeNode=None):
        assert referenceVolumeNode is segmentationNode.reference
        assert narray.shape == referenceVolumeNode.array.shape and narray.min() >= 0 and narray.max() <= 1
        segmentationNode.arrays[segmentId] = np.array(narray, copy=True)

    def array_from_segment(segmentationNode, segmentId, referenceVolumeNode=None):
        return np.array(segmentationNode.arrays.get(segmentId, np.zeros(referenceVolumeNode.array.shape, np.uint8)))

    class _Mixin:
        pass

    util = module("slicer.util", VTKObservationMixin=_Mixin, updateSegmentBinaryLabelmapFromArray=update_segment,
                  arrayFromSegmentBinaryLabelmap=array_from_segment, arrayFromVolume=lambda node: node.array)
    slicer = module("slicer", util=util, mrmlScene=scene, vtkMRMLScalarVolumeNode=_FakeVolume,
                    vtkMRMLSegmentationNode=_FakeSegmentationNode)
    annotation = lambda *args, **kwargs: ("annotation", args)  # noqa: E731
    modules = {
        "slicer": slicer, "slicer.util": util,
        "slicer.i18n": module("slicer.i18n", tr=lambda text: text, translate=lambda ctx, text: text),
        "slicer.parameterNodeWrapper": module("slicer.parameterNodeWrapper", parameterNodeWrapper=lambda cls: cls,
                                              Choice=annotation, Decimals=annotation, SingleStep=annotation,
                                              WithinRange=annotation),
        "slicer.ScriptedLoadableModule": module("slicer.ScriptedLoadableModule", ScriptedLoadableModule=_Base,
                                                ScriptedLoadableModuleWidget=_Base,
                                                ScriptedLoadableModuleLogic=_Base, ScriptedLoadableModuleTest=_Base),
        "qt": module("qt"),
        "vtk": module("vtk", VTK_OBJECT=13, calldata_type=lambda t: (lambda f: f),
                      vtkCommand=types.SimpleNamespace(ModifiedEvent=33)),
    }
    return modules, sh


@pytest.fixture
def module_with_fakes(monkeypatch):
    import importlib.util

    nodes = {}
    modules, sh = _fake_slicer_modules(nodes)
    for name, mod in modules.items():
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(sys, "path", list(sys.path))
    spec = importlib.util.spec_from_file_location("PedTumorSeg_under_test", MODULE_PY)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod, nodes, sh


def _session_case():
    from pedtumorseg.postprocess import PostprocessParams, Session

    raw = np.zeros((24, 24, 24), np.uint8)
    raw[3:6, 3:6, 3:6] = 1  # ET 27 voxels
    raw[3:6, 14:18, 3:6] = 2  # NET 36
    raw[14:16, 3:5, 14:16] = 3  # CC 8
    raw[14:18, 14:18, 14:18] = 4  # ED 64
    rng = np.random.default_rng(0)
    t1 = rng.uniform(50, 60, raw.shape).astype(np.float32)
    t1ce = rng.uniform(50, 60, raw.shape).astype(np.float32)
    params = PostprocessParams(ratio_enabled=False, min_volume_et=0.0, min_volume_cc=0.0)
    return raw, Session(raw, t1, t1ce, (1.0, 1.0, 1.0), params)


def test_logic_writes_segments_and_rewrites_only_changed_ones(module_with_fakes):
    mod, nodes, sh = module_with_fakes
    from pedtumorseg.conventions import LABEL_COLORS, LABEL_LONG_NAMES

    raw, session = _session_case()
    logic = mod.PedTumorSegLogic()
    reference = _FakeVolume("BraTS-PED-1-t1c", np.zeros(raw.shape, np.int16))
    seg = logic.setResult(session, reference)
    assert seg is nodes["BraTS-PED-1-t1c tumor segmentation"] and seg.display.visible
    assert seg.segmentation.GetNumberOfSegments() == 4
    assert sh.parents == {id(seg): 7}  # same parent as the T1CE volume
    for label in (1, 2, 3, 4):
        segment = seg.segmentation.GetSegment(logic.segmentIds[label])
        assert segment.name == LABEL_LONG_NAMES[label] and segment.color == LABEL_COLORS[label]
        assert segment.terminology == panel.terminology_entry(label)
        assert not segment.nameAuto and not segment.colorAuto
        np.testing.assert_array_equal(seg.arrays[logic.segmentIds[label]], raw == label)
    assert logic.editedLabels({1, 2, 3, 4}) == set()

    writes = []
    original = sys.modules["slicer"].util.updateSegmentBinaryLabelmapFromArray
    sys.modules["slicer"].util.updateSegmentBinaryLabelmapFromArray = (
        lambda a, s, sid, r=None: (writes.append(sid), original(a, s, sid, r)))
    changed = logic.updatePostprocessing({"min_volume_et": 100.0})
    assert changed == {1} and writes == [logic.segmentIds[1]]  # only ET rewritten
    assert not seg.arrays[logic.segmentIds[1]].any()
    assert [r[2] for r in logic.resultsRows()][:4] == pytest.approx([0.0, 0.036, 0.008, 0.064])


def test_logic_asks_before_overwriting_hand_edits_and_keeps_them_when_refused(module_with_fakes, tmp_path):
    mod, nodes, sh = module_with_fakes
    raw, session = _session_case()
    logic = mod.PedTumorSegLogic()
    seg = logic.setResult(session, _FakeVolume("t1c", np.zeros(raw.shape, np.int16)))
    edId = logic.segmentIds[4]
    seg.arrays[edId][0, 0, 0] = 1  # the user paints one edema voxel
    asked = []
    changed = logic.updatePostprocessing({"min_volume_ed": 100.0}, confirmOverwrite=lambda labels: asked.append(
        set(labels)) or False)
    assert asked == [{4}] and changed == set()
    assert seg.arrays[edId].sum() == 65  # the edit and the edema the session removed are kept
    assert 4 in logic.protected
    assert not (session.labels == 4).any()
    # the table shows what the segmentation holds, including the kept edit
    rows = {r[0]: r for r in logic.resultsRows()}
    assert rows["ED"][2] == pytest.approx(0.065)
    # a protected segment is not asked about again
    assert logic.updatePostprocessing({"min_volume_ed": 0.0}, confirmOverwrite=lambda labels: pytest.fail("asked")) \
        == set()
    # an edited segment is overwritten when the user agrees
    netId = logic.segmentIds[2]
    seg.arrays[netId][:] = 0
    assert logic.updatePostprocessing({"min_volume_net": 100.0}, confirmOverwrite=lambda labels: True) == {2}
    assert not seg.arrays[netId].any()
    # a deleted segment counts as edited; when overwritten it comes back with its name, color and terminology
    del seg.segmentation.segments[logic.segmentIds[3]]
    assert logic.updatePostprocessing({"min_volume_cc": 100.0}, confirmOverwrite=lambda labels: True) == {3}
    segment = seg.segmentation.GetSegment(logic.segmentIds[3])
    assert segment.name == "Cystic component" and segment.terminology == panel.terminology_entry(3)
    csv_path = tmp_path / "v.csv"
    logic.exportCsv(str(csv_path))
    assert csv_path.read_text() == panel.results_csv(logic.resultsRows())


def _tiny_bundle(path: Path) -> Path:
    from conftest import write_tiny_bundle
    from pedtumorseg.postprocess import PostprocessParams

    return write_tiny_bundle(path, name="tiny-module-test", seed=1, folds=(0, 1),
                             postprocessing=PostprocessParams(min_volume_et=20.0))


@pytest.mark.slow
def test_module_prediction_path_end_to_end_without_slicer(module_with_fakes, tmp_path, monkeypatch):
    """Logic.predictSync as the self-test calls it: temporary inputs, the argv the module builds, the background
    process with JSON progress, then finishPrediction (session from the raw labels) must reproduce the CLI's
    final labels exactly, and the temporary folder is gone afterwards."""
    from pedtumorseg import background as bg_module
    from pedtumorseg.conventions import BRATS_SUFFIXES, CHANNELS
    from pedtumorseg.phantom import make_phantom, write_phantom

    mod, nodes, sh = module_with_fakes
    bundle_path = _tiny_bundle(tmp_path / "tiny.zip")
    phantom = make_phantom(5, "small")
    case_dir = Path(write_phantom(phantom, tmp_path / "case"))
    volumes = {}
    for c in CHANNELS:
        volumes[c] = _FakeVolume(f"{phantom.case_id}-{BRATS_SUFFIXES[c]}", np.zeros(phantom.seg.shape, np.int16))
        volumes[c].path = case_dir / f"{phantom.case_id}-{BRATS_SUFFIXES[c]}.nii.gz"
    workdir = tmp_path / "work"
    # Slicer's part of startPrediction: the storage node writing a volume, Slicer's temp folder, PythonSlicer
    monkeypatch.setattr(mod.PedTumorSegLogic, "_writeVolume",
                        staticmethod(lambda node, fileName: shutil.copyfile(node.path, fileName)))
    sys.modules["slicer"].util.tempDirectory = lambda key="": (workdir.mkdir(), str(workdir))[1]
    monkeypatch.setattr(bg_module, "find_python_slicer", lambda *a: sys.executable)
    started = []
    real_start = bg_module.BackgroundPrediction.start
    monkeypatch.setattr(bg_module.BackgroundPrediction, "start", lambda self: (started.append(self),
                                                                               real_start(self))[1])

    logic = mod.PedTumorSegLogic()
    with pytest.raises(ValueError, match="same volume"):
        logic.startPrediction(dict(volumes, t2=volumes["t1"]), str(bundle_path))
    seg = logic.predictSync(volumes, str(bundle_path), quality="Fast", device="CPU")
    run = started[0]
    argv = run.command
    assert argv[1:4] == ["-m", "pedtumorseg", "predict"] and argv[argv.index("--folds") + 1] == "0"
    assert "--no-tta" in argv and argv[argv.index("--device") + 1] == "cpu" and "--raw" in argv
    assert argv.count("--device") == 1 and argv.count("--folds") == 1
    assert argv[argv.index("--t1ce") + 1].endswith(f"{mod.CASE_ID}-t1c.nii.gz")
    assert run.env["PYTHONPATH"].split(os.pathsep)[0] == str(MODULE)
    np.testing.assert_array_equal(logic.session.labels, logic.cliFinalLabels)
    assert logic.session.params.min_volume_et == 20.0  # the bundle's post-processing defaults
    assert logic.referenceNode is volumes["t1ce"]
    for label in (1, 2, 3, 4):
        np.testing.assert_array_equal(seg.arrays[logic.segmentIds[label]], logic.session.labels == label)
    assert not workdir.exists()  # temporary inputs and outputs removed


@pytest.mark.slow
def test_batch_script_with_the_real_pipeline_resumes_and_reports_failures(tmp_path, capsys):
    from pedtumorseg.phantom import make_phantom, write_phantom

    batch = _load_batch()
    bundle_path = _tiny_bundle(tmp_path / "tiny.zip")
    root = tmp_path / "cases"
    good = Path(write_phantom(make_phantom(8, "small"), root))
    bad = Path(write_phantom(make_phantom(9, "small"), root))
    next(bad.glob("*-t2f.nii.gz")).write_bytes(b"not an image")  # an unreadable FLAIR
    out = tmp_path / "out"
    argv = ["--", "--input-dir", str(root), "--output-dir", str(out), "--model", str(bundle_path), "--device", "cpu",
            "--quality", "fast"]
    assert batch.main(argv) == 1
    text = capsys.readouterr().out
    assert "1 segmented, 0 already finished (skipped), 1 failed" in text  # run_batch's summary lines
    assert "[1/2] " in text and "[2/2] " in text and "[3/2]" not in text  # real run_batch progress indices
    assert f"FAILED {bad.name}:" in text and "t2f" in text.split(f"FAILED {bad.name}:")[1]
    assert (out / f"{good.name}-seg.nii.gz").is_file() and (out / f"{good.name}-stats.json").is_file()
    assert not list(out.glob(f"{bad.name}*"))
    assert batch.main(argv) == 1  # resume: the finished case is skipped, the broken one still fails
    assert "0 segmented, 1 already finished (skipped), 1 failed" in capsys.readouterr().out
