"""Partial fine-tuning: unfreeze the top ``k`` encoder layers and everything above them.

"Above" is everything the top layer's output flows through: BERT's and MiniLM's pooler, DistilBERT's
``pre_classifier``, DeBERTa's ``pooler``, the classification head. What stays frozen is the embeddings and the
encoder below the top ``k`` layers, including encoder-level tensors every layer reads (DeBERTa's relative
embeddings, MPNet's relative attention bias): they sit below the boundary. Frozen lower layers keep no
activations for backward and get no gradients, which is why top-k saves far more memory and time than LoRA does
(LoRA back-propagates through every layer).
"""

from __future__ import annotations

from pydantic import Field

from tuneoff.core.errors import TuneoffError
from tuneoff.methods import Method, MethodParams, register


class PartialParams(MethodParams):
    name: str = "partial"
    k: int = Field(2, ge=1, description="Number of top encoder layers to unfreeze (with everything above them).")


def above_layer(model, arch, first: int) -> list[str]:
    """Names of the parameters at or above encoder layer ``first``: layers ``first..`` and whatever lies outside
    the embeddings and the encoder (pooler, pre-classifier, head)."""
    encoder = arch.layers_path.rsplit(".", 1)[0]  # bert.encoder, distilbert.transformer, ...
    embeddings = f"{getattr(model, 'base_model_prefix', '')}.embeddings"
    top = tuple(f"{arch.layers_path}.{i}." for i in range(first, arch.num_layers))
    return [
        n
        for n, _ in model.named_parameters()
        if n.startswith(top) or not n.startswith((encoder + ".", embeddings + "."))
    ]


@register
class Partial(Method):
    name = "partial"
    summary = "Unfreeze the top k encoder layers and everything above them (pooler, head)."
    Params = PartialParams
    default_lr = 5e-5
    lr_range = (1e-5, 1e-3)

    def prepare(self, model, params, arch):
        if params.k > arch.num_layers:
            raise TuneoffError(f"method.k={params.k} but the model has only {arch.num_layers} encoder layers.")
        keep = set(above_layer(model, arch, arch.num_layers - params.k))
        for name, param in model.named_parameters():
            param.requires_grad_(name in keep)
        return model
