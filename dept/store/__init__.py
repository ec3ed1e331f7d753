"""The output root: where each run lives (``layout``), which runs a protocol is made of
(``protocols``), what a run recorded (``record``), and whether it is the run its folder stands for
(``verify``). Read by the runner and the report alike."""
