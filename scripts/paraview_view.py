"""Render the standard view of a beckmann run folder to PNG with ParaView (pvpython).

    pvpython scripts/paraview_view.py RUN_DIR [--out view.png] [--size 1200 900]
    pvpython scripts/paraview_view.py RUN_DIR --save-state view.pvsm

Without a display (ParaView builds that need X, such as Debian's), run it under ``xvfb-run -a``.

The view: the potential on the mesh (2D) or on three orthogonal slices (3D), its contour lines,
and arrows of the flux F = grad(phi) from ``solution.xdmf`` (vertex fields ``source``, ``target``,
``potential``, ``flux``), read with ParaView's XDMF3 reader. Works with ParaView 5.11 and newer
(only long-standing ``paraview.simple`` calls are used). ``--save-state`` also writes the
pipeline as a state file; ``scripts/beckmann_view.pvsm`` was made that way. Loading such a state
in the GUI (File > Load State, "Search files under specified directory", pick the run folder)
shows the same view of another run.
"""

import argparse
import builtins  # the programmable filter rebinds max() in __main__
import os
import sys

MERGE_FIELDS = """
inp = self.GetInputDataObject(0, 0)
out = self.GetOutputDataObject(0)
leaves = []
if inp.IsA("vtkCompositeDataSet"):
    it = inp.NewIterator()
    it.InitTraversal()
    while not it.IsDoneWithTraversal():
        leaves.append(it.GetCurrentDataObject())
        it.GoToNextItem()
else:
    leaves.append(inp)
if leaves:
    out.ShallowCopy(leaves[-1])
    n = out.GetNumberOfPoints()
    for leaf in leaves:
        pd = leaf.GetPointData()
        if leaf.GetNumberOfPoints() != n:
            continue
        for i in range(pd.GetNumberOfArrays()):
            out.GetPointData().AddArray(pd.GetAbstractArray(i))
"""


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="run folder written by `beckmann solve`")
    p.add_argument("--out", help="PNG to write (default: RUN/paraview.png)")
    p.add_argument("--size", type=int, nargs=2, default=(1200, 900), metavar=("W", "H"))
    p.add_argument("--field", default="potential", help="point field to colour by")
    p.add_argument("--save-state", metavar="PVSM", help="also save the pipeline as a state file")
    return p.parse_args(argv)


def build(run, field):
    """Build the pipeline; returns (view, is_3d)."""
    import paraview.simple as pvs

    path = os.path.abspath(os.path.join(run, "solution.xdmf"))
    if not os.path.isfile(path):
        raise SystemExit(f"paraview_view: {path!r} not found (not a beckmann run folder?)")
    xdmf = pvs.Xdmf3ReaderS(registrationName="solution.xdmf", FileName=[path])
    # DOLFINx writes one XDMF grid per function, so the reader yields one block per field on
    # the same mesh; this filter gathers them onto one unstructured grid.
    reader = pvs.ProgrammableFilter(registrationName="fields", Input=xdmf)
    reader.OutputDataSetType = "vtkUnstructuredGrid"
    reader.Script = MERGE_FIELDS
    reader.UpdatePipeline()
    info = reader.GetDataInformation()
    bounds = info.GetBounds()
    extent = [bounds[2 * i + 1] - bounds[2 * i] for i in range(3)]
    size = builtins.max(extent)
    is_3d = extent[2] > 1e-12 * builtins.max(size, 1.0)
    centre = [0.5 * (bounds[2 * i] + bounds[2 * i + 1]) for i in range(3)]
    rng = reader.PointData[field].GetRange()

    view = pvs.GetActiveViewOrCreate("RenderView")
    view.Background = [1.0, 1.0, 1.0]
    if hasattr(view, "UseColorPaletteForBackground"):
        view.UseColorPaletteForBackground = 0
    view.OrientationAxesVisibility = 0

    surface = reader
    if is_3d:
        slices = []
        for i, normal in enumerate(([1, 0, 0], [0, 1, 0], [0, 0, 1])):
            s = pvs.Slice(registrationName=f"slice_{'xyz'[i]}", Input=reader)
            s.SliceType = "Plane"
            s.SliceType.Origin = centre
            s.SliceType.Normal = normal
            slices.append(s)
        surface = pvs.AppendDatasets(registrationName="slices", Input=slices)
        outline = pvs.Show(pvs.Outline(registrationName="outline", Input=reader), view)
        outline.AmbientColor = outline.DiffuseColor = [0.0, 0.0, 0.0]

    disp = pvs.Show(surface, view)
    pvs.ColorBy(disp, ("POINTS", field))
    lut = pvs.GetColorTransferFunction(field)
    lut.ApplyPreset("Cool to Warm", True)
    lut.RescaleTransferFunction(rng[0], rng[1])
    disp.SetScalarBarVisibility(view, True)
    bar = pvs.GetScalarBar(lut, view)
    bar.Title = field
    bar.ComponentTitle = ""
    bar.TitleColor = bar.LabelColor = [0.0, 0.0, 0.0]

    if rng[1] > rng[0]:
        levels = [rng[0] + (rng[1] - rng[0]) * k / 16.0 for k in range(1, 16)]
        contour = pvs.Contour(registrationName="contours", Input=surface)
        contour.ContourBy = ["POINTS", field]
        contour.Isosurfaces = levels
        cdisp = pvs.Show(contour, view)
        cdisp.ColorArrayName = ["POINTS", ""]
        cdisp.AmbientColor = cdisp.DiffuseColor = [0.0, 0.0, 0.0]
        cdisp.LineWidth = 1.5

    glyph = pvs.Glyph(registrationName="flux", Input=surface, GlyphType="Arrow")
    glyph.OrientationArray = ["POINTS", "flux"]
    glyph.ScaleArray = ["POINTS", "flux"]
    flux_max = builtins.max(reader.PointData["flux"].GetRange(-1)[1], 1e-300)
    glyph.ScaleFactor = 0.08 * size / flux_max
    glyph.GlyphMode = "Uniform Spatial Distribution (Surface Sampling)"
    glyph.MaximumNumberOfSamplePoints = 150
    gdisp = pvs.Show(glyph, view)
    gdisp.ColorArrayName = ["POINTS", ""]
    gdisp.AmbientColor = gdisp.DiffuseColor = [0.1, 0.1, 0.1]

    view.ResetCamera()
    if is_3d:
        offset = [2.2 * size, -1.6 * size, 1.4 * size]
        view.CameraPosition = [c + o for c, o in zip(centre, offset, strict=True)]
        view.CameraFocalPoint = centre
        view.CameraViewUp = [0.0, 0.0, 1.0]
        view.ResetCamera()
    else:
        view.CameraPosition = [centre[0], centre[1], centre[2] + 3.0 * size]
        view.CameraFocalPoint = centre
        view.CameraViewUp = [0.0, 1.0, 0.0]
        view.CameraParallelProjection = 1
        view.ResetCamera()
    return view, is_3d


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    import paraview.simple as pvs

    view, _ = build(args.run, args.field)
    out = args.out or os.path.join(args.run, "paraview.png")
    view.ViewSize = list(args.size)
    pvs.Render(view)
    pvs.SaveScreenshot(out, view, ImageResolution=list(args.size))
    print(out)
    if args.save_state:
        pvs.SaveState(args.save_state)
        print(args.save_state)
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is written and closed here. Debian's ParaView 5.11 under Xvfb then fails in its
    # OpenGL teardown (X error GLXBadContext in X_GLXMakeCurrent), and Xlib's error handler
    # turns the exit status into 1: leave without that teardown.
    os._exit(code)
