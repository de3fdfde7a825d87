"""Methods: exact trainable-parameter counts, optimizer groups, heads that must be saved, budgets."""

from __future__ import annotations

import pytest
import torch

from tuneoff.config import build_config
from tuneoff.core.errors import TuneoffError
from tuneoff.methods import all_methods, check_budget, get_method
from tuneoff.models.loading import load_classifier
from tuneoff.training.resources import param_counts

# Hand count for the tiny BERT of conftest (H=32, L=2, I=64, V=29 words, P=64, 2 token types, C=2 labels):
H, L, I, V, P, C = 32, 2, 64, 29, 64, 2
EMBEDDINGS = V * H + P * H + 2 * H + 2 * H  # word, position, type, LayerNorm
LAYER = 4 * (H * H + H) + 2 * H + (H * I + I) + (I * H + H) + 2 * H  # q,k,v,o + LN + FFN + LN
POOLER = H * H + H
CLASSIFIER = H * C + C  # 66
TOTAL = EMBEDDINGS + L * LAYER + POOLER + CLASSIFIER


def prepared(model_dir, method, **params):
    cfg = build_config({}, [f"method.{k}={v}" for k, v in params.items()], names={"method": method})
    model, arch = load_classifier(model_dir, ["neg", "pos"])
    m = get_method(method)
    model = m.prepare(model, cfg.method, arch)
    return model, m, cfg.method, arch


def test_hand_count_matches_the_model(tiny_bert):
    model, *_ = prepared(tiny_bert, "full")
    assert param_counts(model) == {
        "trainable_params": TOTAL,
        "total_params": TOTAL,
        "trainable_pct": 100.0,
        "trained_bytes": 4 * TOTAL,
    }
    assert TOTAL == 21314


@pytest.mark.parametrize(
    "method, params, expected",
    [
        ("full", {}, TOTAL),
        ("head", {}, CLASSIFIER),
        # Partial trains everything above its frozen layers: the top k layers, BERT's pooler and the head.
        ("partial", {"k": 1}, LAYER + POOLER + CLASSIFIER),
        ("partial", {"k": 2}, 2 * LAYER + POOLER + CLASSIFIER),
        # LoRA on query and value: each adds A (r x H) and B (H x r).
        ("lora", {"r": 4}, L * 2 * (4 * H + H * 4) + CLASSIFIER),
        ("lora", {"r": 8}, L * 2 * (8 * H + H * 8) + CLASSIFIER),
        ("lora", {"r": 8, "layers_to_transform": [1]}, 1 * 2 * (8 * H + H * 8) + CLASSIFIER),
        ("lora", {"r": 4, "target_modules": ["query", "key", "value"]}, L * 3 * (8 * H) + CLASSIFIER),
        ("lora_plus", {"r": 8}, L * 2 * (8 * H + H * 8) + CLASSIFIER),
        # LoRA-FA freezes A: only B (H x r) trains.
        ("lora_fa", {"r": 8}, L * 2 * (H * 8) + CLASSIFIER),
        # DoRA adds a magnitude vector of size H per adapted matrix.
        ("lora", {"r": 4, "use_dora": True}, L * 2 * (4 * H + H * 4 + H) + CLASSIFIER),
    ],
)
def test_exact_trainable_parameters(tiny_bert, method, params, expected):
    model, *_ = prepared(tiny_bert, method, **params)
    assert param_counts(model)["trainable_params"] == expected


def test_partial_trains_exactly_the_top_layers_and_head(tiny_bert):
    model, *_ = prepared(tiny_bert, "partial", k=1)
    trainable = {n.split(".weight")[0].split(".bias")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert all(n.startswith(("bert.encoder.layer.1.", "bert.pooler.", "classifier")) for n in trainable)
    assert "bert.pooler.dense" in trainable


def _tiny(family: str):
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DebertaV2Config,
        DebertaV2ForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
        MPNetConfig,
        MPNetForSequenceClassification,
        RobertaConfig,
        RobertaForSequenceClassification,
    )

    common = dict(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64)
    return {
        "bert": lambda: BertForSequenceClassification(BertConfig(**common)),
        "distilbert": lambda: DistilBertForSequenceClassification(
            DistilBertConfig(vocab_size=50, dim=32, n_layers=3, n_heads=2, hidden_dim=64)
        ),
        "roberta": lambda: RobertaForSequenceClassification(RobertaConfig(**common)),
        "deberta-v2": lambda: DebertaV2ForSequenceClassification(
            DebertaV2Config(**common, relative_attention=True, pos_att_type=["p2c", "c2p"], pooler_hidden_size=32)
        ),
        "mpnet": lambda: MPNetForSequenceClassification(MPNetConfig(**common)),
    }[family]()


# Per family: what must train above the top layer (pooler, pre-classifier, head) and what sits below it and must not
# (embeddings; encoder-level tensors every layer reads).
FAMILIES = {
    "bert": (["bert.pooler.dense.weight", "classifier.weight"], ["bert.embeddings.word_embeddings.weight"]),
    "distilbert": (
        ["pre_classifier.weight", "classifier.weight"],
        ["distilbert.embeddings.position_embeddings.weight"],
    ),
    "roberta": (
        ["classifier.dense.weight", "classifier.out_proj.weight"],
        ["roberta.embeddings.word_embeddings.weight"],
    ),
    "deberta-v2": (["pooler.dense.weight", "classifier.weight"], ["deberta.encoder.rel_embeddings.weight"]),
    "mpnet": (
        ["classifier.dense.weight", "classifier.out_proj.weight"],
        ["mpnet.encoder.relative_attention_bias.weight"],
    ),
}


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_partial_trains_everything_above_the_frozen_layers(family):
    from tuneoff.models.architecture import describe

    model = _tiny(family)
    arch = describe(model)
    get_method("partial").prepare(model, build_config({}, ["method.k=1"], names={"method": "partial"}).method, arch)
    grads = {n: p.requires_grad for n, p in model.named_parameters()}
    above, below = FAMILIES[family]
    assert all(grads[n] for n in above), [n for n in above if not grads[n]]
    assert not any(grads[n] for n in below)
    layers = [n for n in grads if n.startswith(arch.layers_path + ".")]
    assert layers and all(grads[n] == n.startswith(f"{arch.layers_path}.2.") for n in layers)
    # Everything trainable is the top layer or lies outside the embeddings and the encoder.
    outside = sum(
        p.numel()
        for n, p in model.named_parameters()
        if not n.startswith((arch.layers_path.rsplit(".", 1)[0] + ".", f"{model.base_model_prefix}.embeddings."))
    )
    top = sum(p.numel() for n, p in model.named_parameters() if n.startswith(f"{arch.layers_path}.2."))
    assert param_counts(model)["trainable_params"] == top + outside


@pytest.mark.parametrize("method", ["full", "partial", "head", "lora", "lora_plus", "lora_fa", "lora_lean"])
def test_every_method_uses_the_same_adamw_settings(tiny_bert, method):
    """A comparison of methods must not be a comparison of optimizer settings (peft's LoRA-FA defaults to eps 1e-6)."""
    model, m, params, _ = prepared(tiny_bert, method)
    opt = m.optimizer(model, params, lr=1e-3, weight_decay=0.01, fused=False)
    for group in opt.param_groups:
        assert group["eps"] == 1e-8 and tuple(group["betas"]) == (0.9, 0.999), (method, group.get("names"))
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert decay[id(p)] == (0.0 if p.ndim < 2 else 0.01), (method, name)


@pytest.mark.parametrize("method", ["lora_fa", "lora_lean"])
def test_dora_with_lora_fa_is_refused_at_config_time(method):
    with pytest.raises(TuneoffError, match="use_dora=true does not combine"):
        build_config({}, ["method.use_dora=true"], names={"method": method})


def test_partial_k_larger_than_model_is_a_clear_error(tiny_bert):
    with pytest.raises(TuneoffError, match="only 2 encoder layers"):
        prepared(tiny_bert, "partial", k=3)


def test_loraplus_learning_rates_per_group(tiny_bert):
    model, method, params, _ = prepared(tiny_bert, "lora_plus", r=4, loraplus_lr_ratio=16)
    opt = method.optimizer(model, params, lr=1e-4, weight_decay=0.01, fused=False)
    lr_of = {}
    for group in opt.param_groups:
        for p in group["params"]:
            lr_of[id(p)] = group["lr"]
    names = {n: p for n, p in model.named_parameters() if p.requires_grad}
    assert set(lr_of) == {id(p) for p in names.values()}, "every trainable parameter is optimised exactly once"
    for name, p in names.items():
        expected = 1.6e-3 if "lora_B" in name else 1e-4
        assert lr_of[id(p)] == pytest.approx(expected), name
    assert any("classifier" in n and n.endswith("bias") for n in names)  # peft would have raised this one


def test_lorafa_freezes_a_and_uses_peft_optimizer(tiny_bert):
    model, method, params, _ = prepared(tiny_bert, "lora_fa", r=4)
    opt = method.optimizer(model, params, lr=1e-3, weight_decay=0.0, fused=False)
    assert type(opt).__name__ == "LoraFAOptimizer"
    assert all(not p.requires_grad for n, p in model.named_parameters() if "lora_A" in n)
    assert all(p.requires_grad for n, p in model.named_parameters() if "lora_B" in n)


def test_lorafa_does_not_decay_biases_and_steps_like_peft_on_lora(tiny_bert):
    """Biases/LayerNorm leave peft's single decayed group; LoRA's B still gets peft's corrected update, exactly."""
    import copy

    import torch
    from peft.optimizers import create_lorafa_optimizer

    model, method, params, _ = prepared(tiny_bert, "lora_fa", r=4)
    twin = copy.deepcopy(model)
    ours = method.optimizer(model, params, lr=1e-2, weight_decay=0.1, fused=False)
    theirs = create_lorafa_optimizer(model=twin, r=4, lora_alpha=params.alpha, lr=1e-2, weight_decay=0.1)
    for group in theirs.param_groups:  # peft defaults to eps 1e-6; tuneoff runs every method at AdamW's 1e-8
        group["eps"] = 1e-8
    decay = {n: g["weight_decay"] for g in ours.param_groups for n in g["names"]}
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert decay[name] == (0.0 if p.ndim < 2 else 0.1), name
    batch = {
        "input_ids": torch.randint(5, model.config.vocab_size, (4, 8), generator=torch.Generator().manual_seed(0)),
        "labels": torch.tensor([0, 1, 0, 1]),
    }
    for m, opt in ((model, ours), (twin, theirs)):
        m.eval()  # no dropout: the same gradients in both
        m(**batch).loss.backward()
        opt.step()
    for (name, a), (_, b) in zip(model.named_parameters(), twin.named_parameters()):
        if "lora_B" in name or (a.requires_grad and a.ndim >= 2):
            torch.testing.assert_close(a, b, msg=name)
        elif a.requires_grad:  # not decayed here, decayed by peft
            assert not torch.equal(a, b), name


def test_default_optimizer_does_not_decay_biases_or_layernorm(tiny_bert):
    model, method, params, _ = prepared(tiny_bert, "partial", k=1)
    opt = method.optimizer(model, params, lr=1e-4, weight_decay=0.05, fused=False)
    decay = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert decay[id(p)] == (0.0 if ("bias" in name or "LayerNorm" in name) else 0.05), name


def test_distilbert_pre_classifier_is_trained_and_saved_with_lora(tiny_distilbert):
    model, _, _, arch = prepared(tiny_distilbert, "lora")
    assert arch.head_modules[:2] == ["pre_classifier", "classifier"]
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any("pre_classifier.modules_to_save" in n for n in trainable)
    assert arch.lora_targets == ["q_lin", "v_lin"]


def test_budget_exceeded_fails_fast(tiny_bert):
    model, *_ = prepared(tiny_bert, "full")
    with pytest.raises(TuneoffError, match="over the budget method.max_trainable_params=1,000"):
        check_budget(param_counts(model)["trainable_params"], 1000, "full")
    check_budget(param_counts(model)["trainable_params"], TOTAL, "full")  # exactly at the budget is allowed


def test_registry_lists_every_method():
    assert set(all_methods()) == {
        "full",
        "partial",
        "head",
        "lora",
        "lora_plus",
        "lora_fa",
        "lora_lean",
        "bitfit",
        "ia3",
        "prompt_tuning",
        "prefix_tuning",
        "adalora",
        "vera",
        "loha",
        "lokr",
        "qlora",
    }
    with pytest.raises(ValueError, match="unknown method 'qloraa'"):
        get_method("qloraa")


@pytest.mark.parametrize("method", ["lora", "lora_fa", "lora_lean"])
def test_merged_lora_gives_the_same_logits(tiny_bert, method):
    model, *_ = prepared(tiny_bert, method)
    with torch.no_grad():  # a trained-looking adapter: B is zero at init, which would make the test vacuous
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    model.eval()
    x = torch.randint(5, 29, (3, 9))
    before = model(input_ids=x).logits
    merged = get_method(method).for_inference(model)
    assert not any("lora" in n for n, _ in merged.named_parameters()), "no adapter layers left"
    torch.testing.assert_close(merged(input_ids=x).logits, before, atol=1e-5, rtol=1e-5)


def test_lean_lora_adapts_only_the_top_layers(tiny_bert):
    model, *_ = prepared(tiny_bert, "lora_lean", top_layers=1)
    lora = [n for n, _ in model.named_parameters() if "lora_" in n]
    assert lora and all(".layer.1." in n for n in lora)
    assert not any(p.requires_grad for n, p in model.named_parameters() if "lora_A" in n)
