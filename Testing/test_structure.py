"""Architecture rules: layering of the Lib packages, .ui files against widget code and parameter
nodes, and the CMake lists naming every script and resource."""

import ast
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULES = ["FluoroLandmarks", "FemurSegment"]
ALGORITHM_IMPORTS = {"numpy", "torch", "SimpleITK", "monai"}
# FemurSegment's bridge reuses FluoroLandmarks' headless application and MRML file I/O.
BRIDGE_IMPORTS = ALGORITHM_IMPORTS | {"slicer", "vtk", "vtkmodules", "FluoroLandmarksLib"}
BRIDGE_FILES = {"mrml.py", "headless.py", "synthesis.py", "scenarios.py", "cli.py", "preview.py", "views.py",
                "detection.py", "pipeline.py"}
FORBIDDEN = {"qt", "ctk", "slicer.ScriptedLoadableModule", "slicer.util", "slicer.parameterNodeWrapper"}


def imports(path: Path):
    """(top-level module names, full dotted names, package-relative module names) imported by a file."""
    tree = ast.parse(path.read_text())
    names, relative = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                relative |= {node.module} if node.module else {a.name for a in node.names}
            else:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
    return names, relative


def lib_files():
    return [(m, p) for m in MODULES for p in sorted((ROOT / m / f"{m}Lib").glob("*.py"))]


@pytest.mark.parametrize("module, path", lib_files(), ids=lambda x: getattr(x, "name", x))
def test_lib_layering(module, path):
    names, relative = imports(path)
    top = {n.split(".")[0] for n in names}
    stdlib = set(sys.stdlib_module_names)
    assert not (names & FORBIDDEN or top & {"qt", "ctk"}), f"{path.name} imports Qt/GUI code"
    allowed = BRIDGE_IMPORTS if path.name in BRIDGE_FILES else ALGORITHM_IMPORTS
    assert top - stdlib - allowed - {"__future__"} == set(), f"{path.name} imports {top - stdlib - allowed}"
    if path.name not in BRIDGE_FILES:  # algorithm files never import the bridge
        assert {f"{r}.py" for r in relative} & BRIDGE_FILES == set(), f"{path.name} imports bridge code"


def widget_names(ui: Path) -> set:
    return {w.get("name") for w in ET.parse(ui).iter("widget")}


def parameter_names(ui: Path) -> set:
    names = set()
    for prop in ET.parse(ui).iter("property"):
        if prop.get("name") == "SlicerParameterName":
            names.add(prop.find("string").text)
    return names


def parameter_node_fields(module_file: Path) -> set:
    tree = ast.parse(module_file.read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", "") == "parameterNodeWrapper"
                                                  for d in node.decorator_list):
            return {s.target.id for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError(f"no @parameterNodeWrapper class in {module_file}")


@pytest.mark.parametrize("module", MODULES)
def test_ui_matches_widget_code_and_parameter_node(module):
    ui = ROOT / module / "Resources" / "UI" / f"{module}.ui"
    code = (ROOT / module / f"{module}.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", code))
    assert used, "the widget uses no .ui widgets?"
    assert used <= widget_names(ui), f"widgets missing from {ui.name}: {used - widget_names(ui)}"
    fields = parameter_node_fields(ROOT / module / f"{module}.py")
    params = parameter_names(ui)
    assert params, "no SlicerParameterName in the .ui"
    assert params <= fields, f"SlicerParameterName without a parameter: {params - fields}"
    assert fields <= params, f"parameters without a widget: {fields - params}"
    combos = {w.get("name") for w in ET.parse(ui).iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    fed = {c.findtext("receiver") for c in ET.parse(ui).iter("connection")
           if (c.findtext("signal"), c.findtext("slot")) == ("mrmlSceneChanged(vtkMRMLScene*)",
                                                             "setMRMLScene(vtkMRMLScene*)")}
    assert combos <= fed, f"node selectors that never receive the scene: {combos - fed}"


@pytest.mark.parametrize("module", MODULES)
def test_module_file_never_rebinds_the_translation_function(module):
    """``_`` is slicer.i18n.tr in the module files: unpacking into ``_`` would break every later ``_("...")``."""
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    rebound = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "_" and isinstance(n.ctx, ast.Store)]
    assert not rebound, f"{module}.py assigns to _ on lines {rebound}"


@pytest.mark.parametrize("module", MODULES)
def test_cmake_lists_every_script_and_resource(module):
    cmake = (ROOT / module / "CMakeLists.txt").read_text().replace("${MODULE_NAME}", module)
    listed = set(re.findall(r"^\s+(\S+\.(?:py|ui|png|json|nrrd|md))\s*$", cmake, re.M))
    scripts = {str(p.relative_to(ROOT / module)) for p in (ROOT / module).rglob("*.py")
               if "__pycache__" not in p.parts}
    assert scripts <= listed, f"scripts missing from CMakeLists: {scripts - listed}"
    for entry in listed:
        assert (ROOT / module / entry).is_file(), f"CMakeLists names a missing file: {entry}"


def test_top_level_cmake_adds_every_module():
    cmake = (ROOT / "CMakeLists.txt").read_text()
    for module in MODULES:
        assert f"add_subdirectory({module})" in cmake
    for key in ("EXTENSION_DEPENDS", "find_package(Slicer", "Slicer_EXTENSION_CPACK"):
        assert key in cmake
