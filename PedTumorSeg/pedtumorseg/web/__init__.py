"""``pedtumorseg serve``: the Slicer module's workflow as a web app on Slicer's own core (slicer-core, trame-slicer);
trame and Slicer are imported only when the server starts."""
