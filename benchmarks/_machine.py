"""What the benchmarks print about the machine a figure came from: the CPU, its native
bf16 support (AMX or AVX512-BF16 decides the engine's bf16 inner products), the load."""
from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    try:
        with open('/proc/cpuinfo') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def load_average() -> str:
    try:
        return ' '.join('%.2f' % v for v in os.getloadavg())
    except OSError:
        return 'n/a'


def describe(torch_module, config_module) -> str:
    """One line: CPU model, native bf16, where the engine's inner products run under bf16,
    torch threads, load average."""
    cpu = torch_module.device('cpu')
    return ('CPU: %s (%d logical cores); native bf16: %s; engine inner products under bf16: %s; '
            'torch %s, %d threads; load average %s'
            % (cpu_model(), os.cpu_count() or 0, config_module.cpu_bf16_support() or 'none',
               'bf16' if config_module.low_precision_matmuls_pay(cpu) else 'fp32',
               torch_module.__version__, torch_module.get_num_threads(), load_average()))


def timed(fn):
    """Run fn(); return (its result, wall seconds, CPU seconds of this process).

    On a busy machine wall time mostly measures the other processes; CPU time (all this
    process's threads) is what the step itself cost, exactly so with one torch thread
    (with more, OpenMP threads spinning at barriers while a sibling waits for a core add
    to it)."""
    import time
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def ratio_line(engine_wall, plain_wall, engine_cpu, plain_cpu) -> str:
    """Medians and paired-ratio medians of wall and CPU time, engine over plain."""
    import statistics as st
    me, mp = st.median(engine_wall), st.median(plain_wall)
    pw = st.median(e / p for e, p in zip(engine_wall, plain_wall))
    ce, cp = st.median(engine_cpu), st.median(plain_cpu)
    pc = st.median(e / p for e, p in zip(engine_cpu, plain_cpu))
    return ('wall: engine %.3f s  plain %.3f s  engine/plain %.2fx (paired %.2fx); '
            'cpu: engine %.3f s  plain %.3f s  engine/plain %.2fx (paired %.2fx)'
            % (me, mp, me / mp, pw, ce, cp, ce / cp, pc))
