"""Training one run: the one loop on Accelerate and everything it needs.

``session`` (the prepare phase: everything a run carries), ``loop`` (start, loop, finish), ``frozen`` (frozen layers
computed once and replayed), ``checkpoint`` (resumable state), ``stop`` (a signal's request to stop at a step),
``guards`` (non-finite checks), ``schedule``,
``evaluate`` (metrics), ``serving`` (latency, deploy size), ``resources`` (time, memory, parameters), ``launcher``
(several processes), ``tracking`` (MLflow, TensorBoard), ``planner`` (memory and FLOPs before training) and
``saved`` (a finished run: load, evaluate, predict).

May import ``tuneoff.results``, ``tuneoff.data``, ``tuneoff.config``, ``tuneoff.methods``, ``tuneoff.models`` and
``tuneoff.core``; nothing here knows about studies, analysis or reports.
"""
