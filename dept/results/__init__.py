"""Records to tables and figures: every run under a root, verified (``collect``), one table
builder per protocol (``tables``), the paper's figures (``paper``), their rendering (``render``,
``figures``), the report (``python -m dept report``) and the runner's tables (``grid_tables``)."""
