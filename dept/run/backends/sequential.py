"""``--backend sequential``: the chains one after another in this process (the default)."""
import logging

logger = logging.getLogger(__name__)


class Sequential:
    def __init__(self, args, callbacks):
        self.callbacks = callbacks

    def describe(self, chains):
        logger.info("backend: sequential, %d chain(s) in this process", len(chains))

    def run(self, chains):
        deferred = [chain for chain in chains if not self.callbacks.run_chain(chain, blocking=False)]
        for chain in deferred:
            self.callbacks.run_chain(chain, blocking=True)
