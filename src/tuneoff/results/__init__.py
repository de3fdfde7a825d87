"""Results on disk: ``rundir`` (a run directory's layout, built hidden and published atomically) and ``store``
(the SQLite index of studies and runs, versioned, with ordered migrations).

May import ``tuneoff.core`` only: run directories are the source of truth, the store indexes them.
"""
