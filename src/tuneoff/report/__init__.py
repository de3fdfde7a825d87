"""The study report: ``build`` (HTML, Markdown and CSV from stored results; the exported evidence), ``sections``
(the HTML blocks) and ``plots`` (matplotlib, embedded as PNG).

May import every layer below it (study, analysis, training, results, data, config, methods, models, core).
"""
