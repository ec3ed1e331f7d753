"""The paper's science as commands: the channel-bias analysis of trained runs and ablations over any
config key (``python -m dept analyze``, ``python -m dept ablate``)."""
