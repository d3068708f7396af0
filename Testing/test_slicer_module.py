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

from pedtumorseg.ui import background
from pedtumorseg.ui import controls, results

REPO = Path(__file__).resolve().parents[1]
MODULE = REPO / "PedTumorSeg"
MODULE_PY = MODULE / "PedTumorSeg.py"
UI = MODULE / "Resources" / "UI" / "PedTumorSeg.ui"
CMAKE = MODULE / "CMakeLists.txt"


def _module_python_files() -> set[str]:
    files = {p.relative_to(MODULE).as_posix() for p in MODULE.glob("*.py")}
    for package in ("pedtumorseg", "PedTumorSegLib", "PedTumorSegWidgets"):
        files |= {p.relative_to(MODULE).as_posix() for p in (MODULE / package).rglob("*.py")
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
    """The Slicer-free core; ``pedtumorseg/web/`` is the one front end built on Slicer's core (trame-slicer,
    slicer-core and its VTK), imported only by ``pedtumorseg serve``, so it is not held to this."""
    for relpath in _module_python_files():
        if not relpath.startswith("pedtumorseg/") or relpath.startswith("pedtumorseg/web/"):
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
    for spec in controls.slider_specs():
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


def test_ui_texts_of_the_controls_and_the_table_are_the_core_s():
    """The labels, check box texts, units and table columns the .ui shows are those of ``ui.controls`` and
    ``ui.results`` (one name end to end; the module file does not set them)."""
    widgets = _ui_widgets()
    for spec in controls.slider_specs():
        if spec.kind == "slider":
            assert _ui_property(widgets[spec.name + "Label"], "text") == spec.label + ":"
            assert (_ui_property(widgets[spec.widget_name], "suffix") or "") == (f" {spec.unit}" if spec.unit else "")
        else:
            assert _ui_property(widgets[spec.widget_name], "text") == spec.label
    table = widgets["resultsTable"]
    columns = [c.find("property").findtext("string") for c in table.findall("column")]
    assert tuple(columns) == results.RESULT_COLUMNS


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
    for spec in controls.slider_specs():
        assert spec.name in bound
    for channel in ("t1", "t1ce", "t2", "flair"):
        assert bound[channel + "Volume"] == "qMRMLNodeComboBox"


def test_module_uses_only_existing_core_functions():
    """Every name the module file imports from the core exists, and so does every attribute it uses of an imported
    core module (``controls.slider_specs``, ``progress.Progress`` ...)."""
    import importlib
    import types

    tree = ast.parse(MODULE_PY.read_text(encoding="utf-8"))
    modules = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pedtumorseg"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                if not hasattr(module, alias.name):  # a submodule: importing it binds it to its package
                    importlib.util.find_spec(f"{node.module}.{alias.name}") and importlib.import_module(
                        f"{node.module}.{alias.name}")
                assert hasattr(module, alias.name), f"{node.module}.{alias.name} does not exist"
                if isinstance(getattr(module, alias.name), types.ModuleType):
                    modules[alias.asname or alias.name] = getattr(module, alias.name)
    assert {"controls", "progress"} <= set(modules)
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in modules:
            assert hasattr(modules[node.value.id], node.attr), f"{node.value.id}.{node.attr} does not exist"


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
    from pedtumorseg.inference.bundle import DEMO_BUNDLE_NAME

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
    out = subprocess.run([sys.executable, "-c", "import pedtumorseg.inference.bundle as b; print(b.__file__); "
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


#: properties of the Extensions Index catalog entry schema v1.0.2 (Slicer/ExtensionsIndex schemas/, additionalProperties
#: false; required: $schema, category, scm_url)
_CATALOG_PROPERTIES = {"$schema", "category", "scm_url", "scm_revision", "scm_type", "build_dependencies",
                       "dicom_support_rule", "build_subdirectory", "enabled", "tier"}


def _cmake_value(text: str, key: str) -> str:
    m = re.search(r"set\(" + key + r" \"([^\"]+)\"\)", text)
    assert m, key
    return m.group(1)


def test_extensions_index_entry_matches_cmake_and_points_at_files_in_the_repository():
    import json

    entry = json.loads((REPO / "PedTumorSeg.json").read_text(encoding="utf-8"))
    assert set(entry) <= _CATALOG_PROPERTIES and {"$schema", "category", "scm_url"} <= set(entry)
    assert entry["$schema"].endswith("/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#")
    text = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    repository = _cmake_value(text, "EXTENSION_PUBLIC_REPOSITORY")
    branch = _cmake_value(text, "EXTENSION_PUBLIC_BRANCH")
    assert entry["scm_url"] == repository + ".git" and entry["scm_revision"] == branch
    assert entry["category"] == _cmake_value(text, "EXTENSION_CATEGORY")
    assert entry["build_dependencies"] == _cmake_value(text, "EXTENSION_DEPENDS").split()
    assert isinstance(entry["tier"], int) and 1 <= entry["tier"] <= 5
    # the repository is named once: nowhere else in CMakeLists.txt, README.md or the module
    owner_name = repository.split("github.com/")[1]
    for path in (REPO / "CMakeLists.txt", REPO / "README.md", MODULE_PY, MODULE / "CMakeLists.txt"):
        assert path.read_text(encoding="utf-8").count(owner_name) <= (1 if path.name == "CMakeLists.txt" and
                                                                      path.parent == REPO else 0), path
    # icon and screenshot URLs are derived from the setting and name files of this repository
    for key, expected in (("EXTENSION_ICONURL", "Resources/Icons/PedTumorSeg.png"),
                          ("EXTENSION_SCREENSHOTURLS", "Resources/Screenshots/PedTumorSeg-1.png")):
        value = _cmake_value(text, key)
        assert value == "${_raw_url}/${EXTENSION_PUBLIC_BRANCH}/" + expected
        assert (REPO / expected).is_file(), expected
    screenshot = (REPO / "Resources/Screenshots/PedTumorSeg-1.png").read_bytes()
    assert screenshot[:8] == b"\x89PNG\r\n\x1a\n"


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
    from pedtumorseg.pipeline import predictor

    loads = []
    monkeypatch.setattr(predictor, "load_bundle", lambda path: loads.append(path) or _FakeBundle(path))
    monkeypatch.setattr(predictor, "Engine", _FakeEngine)
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
    text = MODULE_PY.read_text(encoding="utf-8") + (MODULE / "PedTumorSegLib" / "prediction_logic.py").read_text(
        encoding="utf-8")
    for name in ("BackgroundPrediction", "build_predict_command", "child_environment", "find_python_slicer"):
        assert name in text and hasattr(background, name)


def test_logic_package_imports_no_qt_and_no_slicer_application():
    """PedTumorSegLib runs on slicer-core: MRML classes only, no qt/ctk, no slicer.util / slicer.mrmlScene /
    slicer.modules (Qt-backed in Slicer, absent outside it)."""
    for path in (MODULE / "PedTumorSegLib").glob("*.py"):
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                names = []
            for name in names:
                assert name.split(".")[0] not in ("qt", "ctk", "nnunetv2", "torch"), (path.name, name)
                assert not name.startswith(("slicer.util", "slicer.ScriptedLoadableModule", "slicer.i18n")), name
            if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "slicer":
                assert node.attr not in ("util", "mrmlScene", "modules", "app"), (path.name, node.attr)


def test_module_file_is_thin_and_reloads_the_packages():
    text = MODULE_PY.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 300
    tree = ast.parse(text)
    widget = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "PedTumorSegWidget")
    assert any(isinstance(f, ast.FunctionDef) and f.name == "onReload" for f in widget.body)
    reloaded = next(ast.literal_eval(n.value) for n in tree.body if isinstance(n, ast.Assign)
                    and getattr(n.targets[0], "id", "") == "RELOADED_PACKAGES")
    # the core, the MRML logic and the Qt sections outside the module file
    assert set(reloaded) == {"pedtumorseg", "PedTumorSegLib", "PedTumorSegWidgets"}


def _tiny_bundle(path: Path) -> Path:
    from conftest import write_tiny_bundle
    from pedtumorseg.postprocess import PostprocessParams

    return write_tiny_bundle(path, name="tiny-module-test", seed=1, folds=(0, 1),
                             postprocessing=PostprocessParams(min_volume_et=20.0))


@pytest.mark.slow
def test_batch_script_with_the_real_pipeline_resumes_and_reports_failures(tmp_path, capsys):
    from pedtumorseg.phantoms.clean import make_phantom, write_phantom

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
