"""``--backend local``: ``--jobs N`` chains at once on this machine (one per GPU, or CPU workers)."""
import logging
import os
import queue
import threading

logger = logging.getLogger(__name__)


def visible_gpus(spec=None):
    """GPU ids to spread runs over: ``spec`` ("0,1"), else $CUDA_VISIBLE_DEVICES, else torch's count."""
    if spec is not None:
        return [g for g in spec.split(",") if g.strip()]
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g for g in env.split(",") if g.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch, no driver: CPU
        return []


class Local:
    """N worker threads, each running one chain at a time in its own child processes."""

    def __init__(self, args, callbacks):
        self.callbacks = callbacks
        self.gpus = visible_gpus(args.gpus)
        self.jobs = args.jobs or max(1, len(self.gpus))
        self.slots = []
        cores = os.cpu_count() or 1
        for i in range(self.jobs):
            if self.gpus:
                self.slots.append({"CUDA_VISIBLE_DEVICES": self.gpus[i % len(self.gpus)]})
            else:
                self.slots.append({"OMP_NUM_THREADS": str(max(1, cores // self.jobs))})

    def describe(self, chains):
        where = f"GPUs {','.join(self.gpus)}" if self.gpus else f"CPU ({os.cpu_count()} cores)"
        logger.info("backend: local, %d chain(s), %d at once on %s", len(chains), self.jobs, where)

    def run(self, chains):
        self.describe(chains)
        self.callbacks.set_workers(self.jobs)
        pending = queue.Queue()
        for chain in chains:
            pending.put(chain)
        deferred, errors = [], []

        def worker(slot, blocking, source):
            self.callbacks.set_env(slot)
            while True:
                try:
                    chain = source.get_nowait()
                except queue.Empty:
                    return
                try:
                    if not self.callbacks.run_chain(chain, blocking=blocking):
                        deferred.append(chain)
                except BaseException as err:  # Interrupted, or a bug: stop this worker, report in main
                    errors.append(err)
                    return

        for blocking, source in ((False, pending), (True, None)):
            if source is None:
                source = queue.Queue()
                for chain in deferred:
                    source.put(chain)
                deferred = []
            threads = [threading.Thread(target=worker, args=(slot, blocking, source), daemon=True)
                       for slot in self.slots]
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):  # joins with a timeout: signals reach the main thread
                for t in threads:
                    t.join(0.2)
            if errors:
                raise errors[0]
