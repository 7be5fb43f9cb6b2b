"""A non-finite value at a padded position changes no loss: every token-level term drops padding with
``where()`` (multiplying by the mask would turn ``inf * 0`` into NaN), in the value and in the gradients."""

from __future__ import annotations

import pytest
import torch

from textdistill.losses import LOSSES
from textdistill.losses.base import kl_over_keys
from textdistill.losses.hidden import token_mse
from textdistill.models.layer_map import build_layer_map
from textdistill.models.outputs import ALL_FEATURES, ModelInfo, ModelOutputs

B, L, LAYERS, HEADS = 2, 4, 2, 2
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]])
PAD = ~MASK.bool()  # (B, L): padded tokens
PAD_PAIRS = PAD[:, None, :, None] | PAD[:, None, None, :]  # (B, 1, L, L): padded query or key


def info(width: int) -> ModelInfo:
    return ModelInfo("hf", "bert", LAYERS, width, HEADS, 50, 3, ALL_FEATURES)


def outputs(width: int, seed: int, poison: float | None) -> ModelOutputs:
    """Random features of every kind; with ``poison``, that value at every padded position (a leaf each)."""
    g = torch.Generator().manual_seed(seed)

    def tokens() -> torch.Tensor:
        x = torch.randn(B, L, width, generator=g)
        return (x if poison is None else x.masked_fill(PAD[..., None], poison)).requires_grad_(True)

    def maps(probabilities: bool) -> torch.Tensor:
        x = torch.randn(B, HEADS, L, L, generator=g)
        x = x.masked_fill(PAD[:, None, None, :], float("-inf")).softmax(-1) if probabilities else x
        return (x if poison is None else x.masked_fill(PAD_PAIRS, poison)).requires_grad_(True)

    return ModelOutputs(
        logits=torch.zeros(B, 3),
        hidden_states=tuple(tokens() for _ in range(LAYERS + 1)),
        attentions={i: maps(True) for i in range(LAYERS)},
        attention_scores={i: maps(False) for i in range(LAYERS)},
        qkv={i: (tokens(), tokens(), tokens()) for i in range(LAYERS)},
        attention_mask=MASK,
        num_heads=HEADS,
    )


def leaves(out: ModelOutputs) -> list[torch.Tensor]:
    qkv = [x for triple in out.qkv.values() for x in triple]
    return [*out.hidden_states, *out.attentions.values(), *out.attention_scores.values(), *qkv]


# The token-level terms (pkd reads only the [CLS] position, the logit terms no token at all).
TERMS = ["embedding_mse", "hidden_mse", "hidden_cos", "attention_mse", "attention_kl", "minilm", "minilmv2"]


@pytest.mark.parametrize("poison", [float("inf"), float("-inf")])
@pytest.mark.parametrize("name", TERMS)
def test_non_finite_padding_changes_neither_loss_nor_gradients(name: str, poison: float) -> None:
    cls = LOSSES.get(name)
    # a narrower student for the hidden terms, so their learned projection is on the path too
    s_width = 6 if name in ("embedding_mse", "hidden_mse", "hidden_cos") else 8
    lm = build_layer_map(None, LAYERS, LAYERS, default_strategy=cls.default_layer_strategy or "uniform")
    torch.manual_seed(0)
    term = cls({}, info(8), info(s_width), lm)
    batch = {"attention_mask": MASK}
    results = []
    for p in (None, poison):
        student, teacher = outputs(s_width, 1, p), outputs(8, 2, p)
        loss = term(student, teacher, batch)
        term.zero_grad()
        loss.backward()
        grads = [x.grad for x in leaves(student)] + [w.grad for w in term.parameters()]
        results.append((loss.detach(), grads))
    (clean, clean_grads), (dirty, dirty_grads) = results
    assert torch.isfinite(clean) and clean > 0
    torch.testing.assert_close(dirty, clean, rtol=0, atol=0)
    for g_clean, g_dirty in zip(clean_grads, dirty_grads):
        if g_clean is None:
            assert g_dirty is None
            continue
        assert torch.isfinite(g_dirty).all()
        torch.testing.assert_close(g_dirty, g_clean, rtol=0, atol=0)
    assert any(g is not None and g.abs().sum() > 0 for g in dirty_grads)


def test_token_mse_ignores_inf_at_padding() -> None:
    """The review's repro: ``token_mse`` with ``m = [[1, 1, 0]]`` and ``hs[0, 2] = inf`` gave NaN."""
    hs, ht = torch.zeros(1, 3, 2), torch.zeros(1, 3, 2)
    hs[0, 1] = 1.0  # one real token off by (1, 1): squared error 2, over n_b * d = 2 * 2
    hs[0, 2] = float("inf")
    m = torch.tensor([[1.0, 1.0, 0.0]])
    assert token_mse(hs, ht, m).item() == pytest.approx(0.5)


def test_kl_over_keys_ignores_non_finite_padded_query_rows() -> None:
    log_p = torch.full((1, 1, 3, 3), float("nan"))
    log_p[0, 0, :2, :2] = torch.tensor([[0.25, 0.75], [0.5, 0.5]]).log()
    log_q = torch.full((1, 1, 3, 3), float("inf"))
    log_q[0, 0, :2, :2] = torch.tensor([[0.5, 0.5], [0.5, 0.5]]).log()
    m = torch.tensor([[1.0, 1.0, 0.0]])
    row0 = 0.25 * torch.log(torch.tensor(0.5)) + 0.75 * torch.log(torch.tensor(1.5))  # KL of row 0; row 1: 0
    assert kl_over_keys(log_p, log_q, m).item() == pytest.approx(row0.item() / 2)
