"""One thread count for every pool in the process: torch's, OpenMP's and the BLAS libraries'.

Torch, OpenBLAS (numpy, scipy) and scikit-learn's OpenMP each start a pool the size of the
machine by default. On a machine that other work also uses, those pools and the other processes
fight over the same cores, and threads that wait for each other at every parallel step make a
job many times slower than one thread would (an epoch 10×, an evaluation 9× slower at load 5 on
two cores). So every command picks one number, from what it was told or from the cores that are
free when it starts, and gives it to all of them.
"""

from __future__ import annotations

import os

#: the variables that size OpenMP and BLAS pools of libraries not loaded yet
POOL_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
#: OMP_NUM_THREADS as the caller set it, before :func:`use_threads` sets it for libraries to come
CALLER_OMP = os.environ.get("OMP_NUM_THREADS", "").strip()


def physical_cores() -> int:
    """Cores this process may run on (its CPU affinity), hyper-threads of one core counted once:
    a second thread on a sibling shares the core's arithmetic units and gains little."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else \
        list(range(os.cpu_count() or 1))
    cores = set()
    for cpu in cpus:
        try:
            topo = f"/sys/devices/system/cpu/cpu{cpu}/topology/"
            with open(topo + "physical_package_id") as a, open(topo + "core_id") as b:
                cores.add((a.read().strip(), b.read().strip()))
        except OSError:          # no sysfs topology (not Linux): count logical CPUs
            cores.add(("cpu", str(cpu)))
    return max(1, len(cores))


def busy_elsewhere() -> float:
    """How many cores other processes keep busy: the larger of the 1-minute load average (work
    that has run a while) and the tasks runnable right now besides this one (work that just
    started, which the average has not seen yet). 0 where the system does not say."""
    try:
        load1 = os.getloadavg()[0]
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0]) - 1
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(load1, float(running), 0.0)


def default_threads() -> int:
    """Threads for a process that was told nothing: ``OMP_NUM_THREADS`` when set (the caller
    chose), else the physical cores that are free now, shared among the local ``torchrun``
    ranks, and never fewer than 1."""
    if CALLER_OMP.isdigit() and int(CALLER_OMP) > 0:
        return int(CALLER_OMP)
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1)
    free = physical_cores() - round(busy_elsewhere())
    return max(1, free // max(1, ranks))


def use_threads(n: int | None = None) -> int:
    """Size torch's intra-op pool and every loaded OpenMP/BLAS pool to ``n`` (None or 0: the
    :func:`default_threads`), and set the pool variables so libraries loaded later (scipy,
    scikit-learn) start at the same size. Returns the number used."""
    import torch
    from threadpoolctl import threadpool_limits

    n = n if n and n > 0 else default_threads()
    for name in POOL_VARIABLES:
        os.environ[name] = str(n)
    torch.set_num_threads(n)
    threadpool_limits(limits=n)
    return n


def pool_limits():
    """A context that holds the OpenMP/BLAS pools loaded by now (scikit-learn's among them) to
    torch's thread count: wrap work in libraries imported after :func:`use_threads` ran."""
    import torch
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=torch.get_num_threads())
