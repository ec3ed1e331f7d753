"""Running: the protocol commands (``cli``), their grids as chains of runs (``plan``), running them
(``execute``) here or elsewhere (``backends``), grid files, the demo, and one run
(``train``: the train.py command line)."""
