"""The trame app: Slicer's own slice and 3D views (trame-slicer) beside the module's panel (case, inputs, Apply,
post-processing sliders, volume table, editing effects, export), all bound to one :class:`CaseWorkflow`.

Imported only by ``pedtumorseg serve`` (trame, trame-slicer and slicer-core are the ``web`` extra).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from pathlib import Path

from trame.app import TrameApp

from trame_slicer.core import LayoutManager, SlicerApp

from pedtumorseg.conventions import CHANNELS, LABEL_NAMES
from pedtumorseg.errors import InputError
from pedtumorseg.files import new_folder
from pedtumorseg.ui import controls
from pedtumorseg.web import data, uploads
from pedtumorseg.web.page import EFFECTS, build_page, key
from pedtumorseg.web.workflow import CaseWorkflow

LOG = logging.getLogger("pedtumorseg.web")
POLL_S = 0.25
TABLE_DEBOUNCE_S = 0.15
#: case names of uploads in the case list (the rest are folders of --data)
UPLOAD_PREFIX = "upload:"
#: after a slider move the axial view is redrawn first and the others REDRAW_LATER_S later: the views render one
#: after the other on the server's event loop, and a frame is sent only when the loop is free again
FIRST_VIEW, OTHER_VIEWS = "Red", ("Yellow", "Green", "ThreeD")
REDRAW_LATER_S = 0.25
#: JPEG quality of every frame: equal to trame-rca's still quality, so that a change is rendered once (not once at
#: interactive quality and again, half a second later, at still quality)
FRAME_QUALITY = 90
#: the route of the exported files (relative to the session's page)
DOWNLOAD_PATH = "/download/"


class PedTumorSegWebApp(TrameApp):
    """One session's server (a worker of the launcher), one scene, one case at a time: ``dataRoot`` the only folder
    cases are opened from besides this session's ``uploadRoot``; exports go to a folder ``outRoot/<case id>`` this
    session creates (``<case id>-2``, ... when it exists: another session's or an earlier run's files are never
    overwritten)."""

    def __init__(self, server=None, *, dataRoot, outRoot, uploadRoot=None, models=("",), device="Auto"):
        super().__init__(server)
        self.dataRoot = Path(dataRoot).resolve()
        self.outRoot = Path(outRoot).resolve()
        self.uploadRoot = Path(uploadRoot).resolve() if uploadRoot else self.outRoot / "uploads"
        self._exportFolders = {}  # case id -> the folder this session created for it
        self._downloads = {}  # file name -> path: the last export, offered for download
        self.server.controller.on_server_bind.add(self._bindDownloads)
        self.slicer = SlicerApp()
        self._registerViewFactories()
        self.layout = LayoutManager(self.slicer.scene, self.slicer.view_manager, self.server)
        self.layout.register_layout_dict(LayoutManager.default_grid_configuration())
        self.layout.set_layout("Quad View")
        for view in self.slicer.view_manager.get_slice_views():
            view.render_window().SetMultiSamples(0)  # 2D images: MSAA only costs (3-4x per frame on Mesa's llvmpipe)
        self.models = [str(m or "") for m in models] or [""]  # the bundles to choose from ("": the shipped demo)
        self.workflow = CaseWorkflow(self.slicer.scene, self.slicer.volumes_logic, self.models[0], device)
        self._task = None
        self._watchingEdits = False
        self._tablePending = None
        self._redrawPending = None
        self._initState()
        self._build()

    def _registerViewFactories(self) -> None:
        """trame-slicer's remote slice and 3D views (as ``register_rca_factories`` makes them), built without rendering:
        a view renders directly on every change until its remote scheduler is attached, which made building the
        four views most of a session's start on a CPU. Frames are JPEG at :data:`FRAME_QUALITY`."""
        from trame_slicer.app.ui import create_vertical_slice_view_gutter_ui, create_vertical_view_gutter_ui
        from trame_slicer.rca_view.rca_view_factory import RemoteViewFactory
        from trame_slicer.views import NoScheduleRendering, SliceView, ThreeDView, ViewType

        for view_class, kind, gutter in ((SliceView, ViewType.SLICE_VIEW, create_vertical_slice_view_gutter_ui),
                                         (ThreeDView, ViewType.THREE_D_VIEW, create_vertical_view_gutter_ui)):
            def build(view_class=view_class, **kwargs):
                return view_class(scheduled_render_strategy=NoScheduleRendering(), **kwargs)

            self.slicer.view_manager.register_factory(RemoteViewFactory(
                self.server, build, kind, populate_view_ui_f=gutter, rca_encoder="jpeg", target_fps=30.0, blur_fps=10.0,
                interactive_quality=FRAME_QUALITY))

    # -- state ---------------------------------------------------------------------------------------------------
    def _initState(self) -> None:
        s = self.state
        s.pts_cases = self._caseNames()
        s.pts_upload = None
        self.state.change("pts_upload")(self._uploaded)
        s.pts_case = s.pts_cases[0] if s.pts_cases else None
        s.pts_volumes = []
        s.pts_assignment = {c: None for c in CHANNELS}
        s.pts_busy = False
        s.pts_progress = 0
        s.pts_message = ""
        s.pts_error = ""
        s.pts_rows = []
        s.pts_has_result = False
        s.pts_effect = "None"
        s.pts_segment = 1  # the segment the effects edit (label value)
        self.state.change("pts_segment")(lambda pts_segment, **_: self.selectSegment(pts_segment))
        s.pts_effect_clicks = 0  # Islands applies on every click, also when it is already the effect
        self.state.change("pts_effect_clicks")(self._effectClicked)
        s.pts_exported = []
        s.pts_status = "Choose a case and open it."
        bundles = [self.workflow.logic.loadBundle(path) for path in self.models]
        s.pts_models = [{"title": f"{b.name} {b.version}", "value": i} for i, b in enumerate(bundles)]
        s.pts_model_index = 0
        self.state.change("pts_model_index")(self._modelChosen)
        self._showModel(bundles[0])
        s.pts_segments = self._segmentItems(bundles[0].io.labels)
        for spec in controls.slider_specs():
            self.state.change(key(spec.name))(self._controlHandler(spec.name))
        for channel in CHANNELS:
            s[f"pts_in_{channel}"] = None
            self.state.change(f"pts_in_{channel}")(self._assignHandler(channel))

    def _showModel(self, bundle) -> None:
        """The model's description, and only the controls of the subregions it produces (no CC slider without a CC
        label), at the values the workflow holds."""
        self.state.pts_model = self.workflow.logic.modelDescription(bundle)
        self.state.pts_controls_shown = list(controls.panel_controls(bundle.io.labels))
        for spec in controls.slider_specs():
            self.state[key(spec.name)] = getattr(self.workflow.params, spec.name)

    @staticmethod
    def _segmentItems(labels) -> list:
        return [{"title": LABEL_NAMES[label], "value": label} for label in labels]

    def _modelChosen(self, pts_model_index, **_) -> None:
        try:
            path = self.models[int(pts_model_index)]
        except (TypeError, ValueError, IndexError):
            return
        if path == self.workflow.params.modelPath:
            return
        self.state.pts_error = ""
        try:
            bundle = self.workflow.setModel(path)
        except (RuntimeError, ValueError, OSError) as exc:
            return self._fail(str(exc))
        self._showModel(bundle)
        if self.workflow.hasResult:
            self._refreshTable()

    def _fail(self, message: str) -> None:
        self.state.pts_error = message
        LOG.info("a request was refused")  # the message may name a case: not logged

    # -- case ----------------------------------------------------------------------------------------------------
    def _caseNames(self) -> list:
        names = data.list_cases(self.dataRoot)
        if self.uploadRoot.is_dir():
            names += [UPLOAD_PREFIX + name for name in data.list_uploads(self.uploadRoot)]
        return names

    def _caseFolder(self, name) -> Path:
        name = str(name or "")
        if name.startswith(UPLOAD_PREFIX):
            return data.resolve_under(self.uploadRoot, name[len(UPLOAD_PREFIX):])
        return data.resolve_under(self.dataRoot, name)

    def _uploaded(self, pts_upload, **_) -> None:
        if not pts_upload:
            return
        files = pts_upload if isinstance(pts_upload, list) else [pts_upload]
        self.state.pts_error = ""
        try:
            folder = uploads.save_upload(files, self.uploadRoot)
        except InputError as exc:
            self._fail(f"upload refused: {exc}")
        else:
            self.state.pts_cases = self._caseNames()
            self.state.pts_case = UPLOAD_PREFIX + folder.name
            self.state.pts_status = f"Uploaded as {folder.name}; open it."
        self.state.pts_upload = None

    def openCase(self) -> None:
        self.state.pts_error = ""
        try:
            folder = self._caseFolder(self.state.pts_case)
            assignment = self.workflow.openCase(folder)
        except (InputError, ValueError) as exc:  # e.g. a study's missing series, named as the case list names it
            return self._fail(data.relative_message(str(exc), {self.dataRoot: "", self.uploadRoot: UPLOAD_PREFIX}))
        self.state.pts_volumes = sorted(self.workflow.volumes)
        for channel, name in assignment.items():
            self.state[f"pts_in_{channel}"] = name
        self.state.pts_rows, self.state.pts_has_result, self.state.pts_exported = [], False, []
        self.slicer.display_manager.show_volume_in_slice_background(self.workflow.params.t1ceVolume)
        self.slicer.display_manager.reset_views()
        self.state.pts_status = "Check the inputs, then Apply."

    def _assignHandler(self, channel):
        def handler(**kwargs):
            name = kwargs.get(f"pts_in_{channel}")
            if name and self.workflow.case is not None and name in self.workflow.volumes:
                self.workflow.assign(channel, name)
        return handler

    # -- prediction ----------------------------------------------------------------------------------------------
    def apply(self) -> None:
        self.state.pts_error = ""
        problems = self.workflow.inputProblems() if self.workflow.case else ["open a case first"]
        if problems:
            return self._fail("; ".join(problems))
        try:
            self.workflow.start()
        except (RuntimeError, ValueError) as exc:
            return self._fail(str(exc))
        self.state.pts_busy, self.state.pts_progress, self.state.pts_message = True, 0, "Starting"
        self._task = asyncio.ensure_future(self._watch())

    def cancel(self) -> None:
        self.workflow.cancel()

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_S)
            outcome = self.workflow.poll()
            with self.state:
                fraction, message = self.workflow.progress
                self.state.pts_progress, self.state.pts_message = round(100 * fraction), message
                if outcome is not None:
                    self._finished(*outcome)
                    return

    def _finished(self, outcome: str, message: str) -> None:
        self.state.pts_busy = False
        if outcome != "done":
            self.state.pts_status = "Cancelled." if outcome == "cancelled" else "Failed."
            if outcome == "failed":
                self._fail(message)
            return
        segmentation = self.workflow.params.outputSegmentation
        editor = self.slicer.segmentation_editor
        editor.set_active_segmentation(segmentation, self.workflow.params.t1ceVolume)
        self.state.pts_segments = self._segmentItems(sorted(self.workflow.logic.sync.segmentIds))  # the result's
        self.state.pts_segment = self.state.pts_segments[0]["value"]  # the editor starts on the model's first segment
        if not self._watchingEdits:
            editor.segmentation_modified.connect(self._segmentationModified)
            self._watchingEdits = True
        self.slicer.display_manager.reset_views()
        self.state.pts_status = message
        self.state.pts_has_result = True
        self._refreshTable()

    # -- result --------------------------------------------------------------------------------------------------
    def _refreshTable(self) -> None:
        """The volume table now; a refresh still pending for the modifications before this one is not needed."""
        if self._tablePending is not None:
            self._tablePending.cancel()
            self._tablePending = None
        self.state.pts_rows = [list(row) for row in self.workflow.rows()]

    def _controlHandler(self, name):
        def handler(**kwargs):
            value = kwargs.get(key(name))
            if value is None or value == getattr(self.workflow.params, name):
                return
            with self._redrawInOrder():
                self.workflow.setControl(name, value)
            clamped = getattr(self.workflow.params, name)
            if clamped != value:
                self.state[key(name)] = clamped
            if self.workflow.hasResult:
                self._refreshTable()
        return handler

    @contextlib.contextmanager
    def _redrawInOrder(self):
        """Views blocked while the segments change; then the axial view is redrawn, the others a little later (a
        move within that time postpones them again)."""
        manager = self.slicer.view_manager
        first, others = manager.get_view(FIRST_VIEW), [v for v in map(manager.get_view, OTHER_VIEWS) if v is not None]
        if self._redrawPending is not None:
            self._redrawPending.cancel()
        for view in [first, *others]:
            if view is not None:
                view.set_render_blocked(True)
        try:
            yield
        finally:
            if first is not None:
                first.set_render_blocked(False)
            self._redrawPending = asyncio.get_event_loop().call_later(REDRAW_LATER_S, self._redrawOthers, others)

    def _redrawOthers(self, views) -> None:
        self._redrawPending = None
        for view in views:
            view.set_render_blocked(False)

    def _effectClicked(self, pts_effect, **_) -> None:
        try:
            self.setEffect(pts_effect)
        except Exception as exc:  # shown, and logged without paths (the case is the user's)
            LOG.exception("the %s effect failed", pts_effect)
            self._fail(f"{pts_effect}: {type(exc).__name__}: {exc}")

    def setEffect(self, label: str) -> None:
        import trame_slicer.segmentation as effects

        if label not in EFFECTS or not self.workflow.hasResult:
            return
        effect = self.slicer.segmentation_editor.set_active_effect_type(getattr(effects, EFFECTS[label]))
        if label == "Islands" and effect is not None:
            effect.apply(effects.SegmentationIslandsMode.KEEP_LARGEST_ISLAND)
            self._refreshTable()

    def selectSegment(self, label) -> None:
        if self.workflow.hasResult and label in self.workflow.logic.sync.segmentIds:
            self.slicer.segmentation_editor.set_active_segment_id(self.workflow.logic.sync.segmentIds[int(label)])

    def show3D(self) -> None:
        """Closed surfaces in the 3D view, as the module's "Show 3D" button (they are then rebuilt on every slider
        move, which costs most of a move's time on a CPU)."""
        if self.workflow.hasResult:
            self.workflow.logic.showSegmentation3D()
            self.slicer.display_manager.reset_views()

    def _segmentationModified(self, *_) -> None:
        """An edit (or a write of the module): the table follows, once per burst of modifications."""
        if self._tablePending is None:
            self._tablePending = asyncio.get_event_loop().call_later(TABLE_DEBOUNCE_S, self._flushTable)

    def _flushTable(self) -> None:
        self._tablePending = None
        if self.workflow.hasResult:
            with self.state:
                self._refreshTable()

    def export(self) -> None:
        self.state.pts_error = ""
        if not self.workflow.hasResult:
            return self._fail("nothing to export yet")
        try:
            folder = self._exportFolder(self.workflow.case.case_id)
            written = self.workflow.export(folder)
        except InputError as exc:  # named by the file's name, not the server's folders
            return self._fail(f"export failed: {Path(exc.path or '-').name}: {exc.problem}")
        except (OSError, RuntimeError, ValueError) as exc:
            return self._fail(f"export failed: {exc}")
        self._downloads = {Path(p).name: Path(p) for p in written.values()}
        self.state.pts_exported = sorted(self._downloads)
        self.state.pts_status = f"Exported {len(written)} files."
        if self.workflow.notWritten:  # e.g. a DICOM SEG the T1CE series cannot carry: said, the rest written
            self._fail("; ".join(self.workflow.notWritten.values()))

    def _bindDownloads(self, wslinkServer) -> None:
        """``download/<name>``: a file of this session's last export (nothing else is served)."""
        wslinkServer.app.router.add_get(DOWNLOAD_PATH + "{name}", self._download)

    async def _download(self, request):
        from aiohttp import web

        path = self._downloads.get(request.match_info["name"])
        if path is None or not path.is_file():
            return web.Response(status=404, text="not an exported file of this session")
        return web.FileResponse(path, headers={"Content-Disposition": f'attachment; filename="{path.name}"'})

    def _exportFolder(self, caseId: str) -> Path:
        """This session's export folder of the case: created on the first export (never one that exists)."""
        if caseId not in self._exportFolders:
            names = (caseId if n == 1 else f"{caseId}-{n}" for n in itertools.count(1))
            self._exportFolders[caseId] = new_folder(self.outRoot, names)
        return self._exportFolders[caseId]

    # -- UI ------------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.ui = build_page(self)
