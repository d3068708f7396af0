"""The module's Qt sections that live outside the module file (Slicer loads every .py at the top of a module folder as
a module, so helpers live in packages)."""
