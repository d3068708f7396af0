"""The module's Qt sections that live outside the module file (Slicer loads every .py at the top of a module folder as
a module, so helpers live in packages)."""

from pedtumorseg.ui import controls


def showModelControls(ui, modelLabels) -> None:
    """Show only the post-processing controls (and their row labels) of the subregions the model produces
    (``controls.panel_controls``): a model without a cystic label gets no CC slider."""
    shown = controls.panel_controls(modelLabels)
    for spec in controls.slider_specs():
        for widget in (getattr(ui, spec.widget_name), getattr(ui, spec.name + "Label", None)):
            if widget is not None:
                widget.setVisible(spec.name in shown)
