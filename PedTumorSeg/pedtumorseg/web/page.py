"""The page of the web app: the panel (case, inputs, model, Apply, post-processing controls, volume table, editing
effects, export and downloads) beside trame-slicer's views, bound to the ``pts_*`` state of ``app``."""

from __future__ import annotations

from trame.widgets import html
from trame_vuetify.ui.vuetify3 import SinglePageWithDrawerLayout
from trame_vuetify.widgets import vuetify3 as v3

from pedtumorseg.conventions import CHANNELS
from pedtumorseg.ui import controls

#: the editing effects offered (button label -> trame-slicer effect class name)
EFFECTS = {"None": "SegmentationEffectNoTool", "Paint": "SegmentationEffectPaint",
           "Erase": "SegmentationEffectErase", "Islands": "SegmentationEffectIslands"}


def key(name: str) -> str:
    """The state name of the control ``name``."""
    return "pts_" + name


def build_page(app):
    """The page of ``app`` (a ``PedTumorSegWebApp``); returns its layout."""
    with SinglePageWithDrawerLayout(app.server) as ui:
        ui.title.set_text("PedTumorSeg")
        ui.drawer.width = 380
        with ui.drawer:
            with v3.VContainer(classes="pa-2"):
                _case_panel(app)
                _run_panel(app)
                _control_panel()
                _result_panel(app)
        with ui.content:
            with html.Div(style="height: calc(100vh - 64px);", id="pts-views"):
                app.layout.initialize_layout_grid(ui)
    return ui


def _case_panel(app) -> None:
    v3.VSelect(label="Case", items=("pts_cases",), v_model=("pts_case",), density="compact", id="pts-case")
    v3.VFileInput(label="Upload a case (four NIfTI files, or a DICOM study as one .zip)", v_model=("pts_upload",),
                  multiple=True, density="compact", hide_details=True, accept=".nii,.gz,.zip", id="pts-upload",
                  classes="mb-1")
    v3.VBtn("Open", click=app.openCase, id="pts-open", disabled=("pts_busy",), block=True, classes="mb-2")
    for channel in CHANNELS:
        v3.VSelect(label=channel.upper(), items=("pts_volumes",), v_model=(f"pts_in_{channel}",),
                   density="compact", hide_details=True, id=f"pts-in-{channel}", classes="mb-1")
    v3.VSelect(label="Model", items=("pts_models",), v_model=("pts_model_index",), density="compact",
               hide_details=True, id="pts-model-choice", disabled=("pts_busy",), classes="mt-2",
               v_show="pts_models.length > 1")
    html.Div("{{ pts_model }}", classes="text-caption my-1", id="pts-model")


def _run_panel(app) -> None:
    with html.Div(classes="d-flex my-2"):
        v3.VBtn("Apply", click=app.apply, id="pts-apply", color="primary", disabled=("pts_busy",),
                classes="mr-2")
        v3.VBtn("Cancel", click=app.cancel, id="pts-cancel", disabled=("!pts_busy",))
    v3.VProgressLinear(model_value=("pts_progress",), v_show="pts_busy", height=6, id="pts-progress")
    html.Div("{{ pts_busy ? pts_message : pts_status }}", classes="text-caption", id="pts-status")
    html.Div("{{ pts_error }}", v_show="pts_error", classes="text-error text-caption", id="pts-error")


def _control_panel() -> None:
    for spec in controls.slider_specs():
        state = key(spec.name)
        shown = f"pts_controls_shown.includes('{spec.name}')"
        if spec.kind == "checkbox":
            v3.VCheckbox(label=spec.label, v_model=(state,), density="compact", hide_details=True,
                         id=f"pts-{spec.name}", v_show=shown)
            continue
        with html.Div(id=f"pts-{spec.name}", v_show=shown):
            v3.VSlider(label=spec.label, v_model=(state,), min=spec.minimum, max=spec.maximum, step=spec.step,
                       density="compact", hide_details=True)
            html.Div(f"{{{{ Number({state}).toFixed({spec.decimals}) }}}} {spec.unit}",
                     classes="text-caption text-right")


def _result_panel(app) -> None:
    with html.Table(id="pts-volumes", classes="text-caption my-2", style="width: 100%;",
                    v_show="pts_has_result"):
        with html.Tr():
            for head in ("Region", "Volume (mL)", "% of WT"):
                html.Th(head)
        with html.Tr(v_for="row in pts_rows", key="row[0]"):
            html.Td("{{ row[0] }}")
            html.Td("{{ row[2] }}")
            html.Td("{{ row[3] }}")
    with html.Div(v_show="pts_has_result"):
        v3.VSelect(label="Segment to edit", items=("pts_segments",), v_model=("pts_segment",),
                   density="compact", hide_details=True, id="pts-segment", classes="mb-1")
        with html.Div(classes="d-flex flex-wrap my-1"):
            for label in EFFECTS:
                v3.VBtn(label, click=f"pts_effect = '{label}'; pts_effect_clicks++", size="small", classes="mr-1 mb-1",
                        id=f"pts-effect-{label.lower()}",
                        variant=(f"pts_effect === '{label}' ? 'flat' : 'outlined'",))
        v3.VBtn("Show 3D", click=app.show3D, id="pts-show3d", block=True, classes="my-1")
        v3.VBtn("Export", click=app.export, id="pts-export", block=True, classes="my-2")
        with html.Div(classes="text-caption", id="pts-exported"):
            html.A("{{ name }}", v_for="name in pts_exported", key="name", href=("'download/' + name",),
                   download=True, classes="d-block")
