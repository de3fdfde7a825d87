"""MkDocs hook: the configuration and methods references are generated from the code at build time, so they cannot
drift from it. A page asks for one with a marker line: ``<!-- generated: configuration -->`` or
``<!-- generated: methods -->``."""

from __future__ import annotations

import sys
import typing

from pydantic import BaseModel


def _type(annotation) -> str:
    text = getattr(annotation, "__name__", None) if not typing.get_args(annotation) else None
    text = text or str(annotation).replace("typing.", "")
    return text.replace("|", "or").replace("NoneType", "None")


def _default(field) -> str:
    if field.default_factory is not None:
        value = field.default_factory()
        return f"`{value!r}`" if not isinstance(value, BaseModel) else "(section)"
    return f"`{field.default!r}`"


def _section(model: type[BaseModel], prefix: str) -> list[str]:
    rows, subsections = [], []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            subsections.append((annotation, key + "."))
            continue
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{key}` | {_default(field)} | {_type(annotation).replace('|', ' or ')} | {description} |")
    out = ["| key | default | type | meaning |", "|---|---|---|---|", *rows, ""]
    for sub, sub_prefix in subsections:
        out += [f"### `{sub_prefix.rstrip('.')}`", "", *_section(sub, sub_prefix)]
    return out


def configuration() -> str:
    from tuneoff.analysis.settings import AnalysisSettings
    from tuneoff.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tuneoff.study.protocol import TuneSpec

    parts = ["## Run configuration (`tuneoff train`, a study's `base:`)", "",
             "| key | default | meaning |", "|---|---|---|",
             "| `name` | `None` | " + (RunConfig.model_fields["name"].description or "") + " |",
             "| `output_dir` | `'runs'` | " + (RunConfig.model_fields["output_dir"].description or "") + " |",
             "| `method` | `{name: lora}` | The method and its parameters: see [Methods](methods.md). |", ""]
    for title, model in (("model", ModelConfig), ("data", DataConfig), ("train", TrainConfig)):
        parts += [f"### `{title}`", "", *_section(model, f"{title}.")]
    parts += ["## Study sections", "", "### `tune` (the fair protocol)", "", *_section(TuneSpec, "tune."),
              "### `analysis` (how the verdict is reached; changing it re-reads results)", "",
              *_section(AnalysisSettings, "analysis.")]
    return "\n".join(parts)


def methods() -> str:
    from tuneoff.methods import all_methods

    parts = ["| method | what it does | default lr | tuning prior (lr) |", "|---|---|---|---|"]
    for name, method in all_methods().items():
        low, high = method.lr_range
        parts.append(f"| [`{name}`](#{name}) | {method.summary} | {method.default_lr:g} | {low:g} – {high:g} |")
    parts.append("")
    for name, method in all_methods().items():
        doc = sys.modules[type(method).__module__].__doc__ or method.summary
        parts += [f"### `{name}`", "", " ".join(doc.strip().split("\n\n")[0].split()), ""]
        params = {k: v for k, v in method.Params.model_fields.items() if k != "name"}
        parts += ["| parameter | default | meaning |", "|---|---|---|"]
        parts += [f"| `method.{k}` | `{v.default!r}` | {(v.description or '').replace('|', '/')} |" for k, v in params.items()]
        parts.append("")
    return "\n".join(parts)


GENERATORS = {"<!-- generated: configuration -->": configuration, "<!-- generated: methods -->": methods}


def on_page_markdown(markdown: str, **kwargs) -> str:
    for marker, generate in GENERATORS.items():
        if marker in markdown:
            markdown = markdown.replace(marker, generate())
    return markdown
