"""Response assessment over time (`pedtumorseg response`): volumes, lesions matched across the scans of one patient,
the RAPNO/RANO bidimensional measurements and the response category each criterion suggests."""
