"""Render ``PedTumorSeg-1.png``: the module's result in Slicer's axial, sagittal and coronal slice views.

A real Slicer rendering without the Slicer application: a ``slicer-core`` scene (``Testing/slicer_harness.py``),
the module's logic doing Apply with the shipped demo bundle on a synthetic ``brats`` phantom (the prediction
process, then the post-processing Session into a segmentation node), and three slice views drawn offscreen by
Slicer's slice logic (the T1CE background layer) and its segmentation displayable manager (the segments' fill and
outline), as in Slicer's views. The volume table is printed under the views with matplotlib-free PIL text.

    PYTHONPATH=PedTumorSeg:Testing .venv/bin/python Resources/Screenshots/render_screenshot.py [--seed 7]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
for folder in (REPO / "PedTumorSeg", REPO / "Testing"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

VIEW_SIZE = 360


def render_slice_view(harness, layoutName: str, orientation: str, backgroundId: str, center_ras, size=VIEW_SIZE):
    """One slice view drawn offscreen: RGB uint8 array (rows top to bottom)."""
    import slicer
    import vtk

    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(size, size)
    renderer = vtk.vtkRenderer()
    renderer.GetActiveCamera().ParallelProjectionOn()
    window.AddRenderer(renderer)
    interactor = vtk.vtkRenderWindowInteractor()  # displayable managers expect one (never started here)
    interactor.SetRenderWindow(window)

    logic = slicer.vtkMRMLSliceLogic()
    logic.SetMRMLApplicationLogic(harness.app)
    harness.app.GetSliceLogics().AddItem(logic)
    logic.SetMRMLScene(harness.scene)
    sliceNode = logic.AddSliceNode(layoutName)
    sliceNode.SetOrientation(orientation)
    logic.GetSliceCompositeNode().SetBackgroundVolumeID(backgroundId)
    logic.ResizeSliceNode(size, size)
    logic.FitSliceToBackground()
    sliceNode.JumpSliceByCentering(*center_ras)

    factory = slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance()
    factory.SetMRMLApplicationLogic(harness.app)
    for manager in ("vtkMRMLSegmentationsDisplayableManager2D",):
        if not factory.IsDisplayableManagerRegistered(manager):
            factory.RegisterDisplayableManager(manager)
    group = slicer.vtkMRMLDisplayableManagerGroup()
    group.Initialize(factory, renderer)
    group.SetMRMLDisplayableNode(sliceNode)

    mapper = vtk.vtkImageMapper()  # the slice image is RGBA 0-255 after the display node's window/level
    mapper.SetColorWindow(255)
    mapper.SetColorLevel(127.5)
    mapper.SetInputConnection(logic.GetImageDataConnection())
    actor = vtk.vtkActor2D()
    actor.SetMapper(mapper)
    actor.GetProperty().SetDisplayLocationToBackground()
    renderer.AddViewProp(actor)

    group.RequestRender()
    window.Render()
    grab = vtk.vtkWindowToImageFilter()
    grab.SetInput(window)
    grab.SetInputBufferTypeToRGB()
    grab.Update()
    from vtk.util import numpy_support

    image = grab.GetOutput()
    w, h, _ = image.GetDimensions()
    rgb = numpy_support.vtk_to_numpy(image.GetPointData().GetScalars()).reshape(h, w, 3)
    return rgb[::-1].copy()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=7, help="phantom seed (as `pedtumorseg demo`)")
    ap.add_argument("--out", default=str(HERE / "PedTumorSeg-1.png"))
    args = ap.parse_args(argv)

    from PIL import Image, ImageDraw
    from slicer_harness import SlicerScene, moduleLogic

    from pedtumorseg.ui import results
    from pedtumorseg.conventions import BRATS_SUFFIXES, CHANNELS, LABEL_COLORS
    from pedtumorseg.phantoms.clean import make_phantom, write_phantom

    with tempfile.TemporaryDirectory() as tmp:
        phantom = make_phantom(args.seed, "brats")
        folder = Path(write_phantom(phantom, tmp))
        harness = SlicerScene()
        volumes = {c: harness.loadVolume(folder / f"{phantom.case_id}-{BRATS_SUFFIXES[c]}.nii.gz") for c in CHANNELS}
        logic = moduleLogic(harness, Path(tmp) / "runs")
        logic.predictSync(volumes, "", quality="Fast", device="CPU")
        labels = logic.session.labels
        rows = logic.resultsRows()
        # center the views on the tumor's center of mass (voxel -> RAS through the T1CE's IJK-to-RAS matrix)
        import vtk

        k, j, i = np.argwhere(labels > 0).mean(axis=0) if labels.any() else np.array(labels.shape) / 2
        m = vtk.vtkMatrix4x4()
        volumes["t1ce"].GetIJKToRASMatrix(m)
        center = m.MultiplyPoint((float(i), float(j), float(k), 1.0))[:3]
        views = [render_slice_view(harness, name, orientation, volumes["t1ce"].GetID(), center)
                 for name, orientation in (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))]

    gap, text_h = 6, 118
    canvas = Image.new("RGB", (3 * VIEW_SIZE + 2 * gap, VIEW_SIZE + text_h), (30, 30, 30))
    for n, view in enumerate(views):
        canvas.paste(Image.fromarray(view), (n * (VIEW_SIZE + gap), 0))
    draw = ImageDraw.Draw(canvas)
    y = VIEW_SIZE + 8
    draw.text((8, y), f"PedTumorSeg on slicer-core: demo bundle, synthetic phantom {phantom.case_id} "
                      "(axial / sagittal / coronal, T1CE with the segmentation)", fill=(230, 230, 230))
    for n, row in enumerate(rows):
        region, description, ml, fraction = results.format_results_row(row)
        x, yy = 8 + (n % 3) * 360, y + 22 + (n // 3) * 20
        color = tuple(int(255 * c) for c in LABEL_COLORS[n + 1]) if n < 4 else (230, 230, 230)
        draw.rectangle((x, yy + 3, x + 10, yy + 13), fill=color)
        draw.text((x + 16, yy), f"{region} {description}: {ml} mL ({fraction})", fill=(230, 230, 230))
    canvas.save(args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
