"""The configuration and methods references, generated from the code. The pages in the repository hold them between
``<!-- generated: configuration -->`` (or ``methods``) and ``<!-- end generated -->``, so they read on GitHub and in
an editor as well as in the built site; the MkDocs hook regenerates the block at build time (the site cannot drift
from the code) and a test compares the committed block with the code (the repository cannot either).
``python docs/hooks.py`` rewrites the committed blocks after a change to the config models or the methods."""

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


GENERATORS = {"configuration": configuration, "methods": methods}
END = "<!-- end generated -->"


def fill(markdown: str) -> str:
    """The page with each generated block replaced by what the code generates now."""
    for name, generate in GENERATORS.items():
        begin = f"<!-- generated: {name} -->"
        if begin in markdown:
            head, rest = markdown.split(begin, 1)
            tail = rest.split(END, 1)[1] if END in rest else "\n"
            markdown = f"{head}{begin}\n{generate().rstrip()}\n{END}{tail}"
    return markdown


def on_page_markdown(markdown: str, **kwargs) -> str:
    return fill(markdown)


if __name__ == "__main__":
    from pathlib import Path

    for page in ("configuration.md", "methods.md"):
        path = Path(__file__).parent / page
        path.write_text(fill(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"wrote {path}")
