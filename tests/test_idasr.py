"""IDA-SR / LSH-SR specifics: pre-training augmentations, learnable LSH codes, task switches."""

from __future__ import annotations

import pytest
import torch

from recbench.errors import ConfigError
from recbench.method import Batch, DataSpec
from recbench.registry import get_method, resolve_config
from recbench_plugins.idasr import choose_positions, full_sequences, permute_positions, shift
from recbench_plugins.lshsr import LearnableLSH

SMALL = {"item_size": 16, "semantic_hidden_size": 16, "inner_size": 16, "max_seq_length": 12}


def build(name: str, **overrides):
    config = resolve_config(get_method(name), SMALL, overrides)
    text = torch.randn(41, 24, generator=torch.Generator().manual_seed(0))
    text[0] = 0
    torch.manual_seed(0)
    return get_method(name).cls(config, DataSpec(num_items=40, max_seq_length=12, item_text_embeddings=text))


def sample_sequences(rows: int = 400, length: int = 12) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    sequences = torch.randint(1, 41, (rows, length), generator=generator)
    lengths = torch.randint(2, length + 1, (rows,), generator=generator)
    return torch.where(torch.arange(length) < lengths[:, None], sequences, 0)


def test_chosen_positions_follow_the_ratio_and_never_touch_padding() -> None:
    torch.manual_seed(0)
    sequences = sample_sequences(2000)
    chosen = choose_positions(sequences, 0.1)
    assert not chosen[sequences == 0].any()
    assert chosen.sum() / (sequences > 0).sum() == pytest.approx(0.1, abs=0.01)


def test_permutation_shuffles_only_chosen_positions_and_keeps_each_sequences_items() -> None:
    torch.manual_seed(0)
    sequences = sample_sequences()
    permuted = permute_positions(sequences, 0.3)
    assert (permuted[sequences == 0] == 0).all()
    for before, after in zip(sequences, permuted):
        assert sorted(before.tolist()) == sorted(after.tolist())
    changed = (permuted != sequences).sum() / (sequences > 0).sum()
    assert 0.05 < changed < 0.3  # some chosen items land back in place


def test_full_sequences_append_the_last_target_and_shift_inverts_it() -> None:
    items = torch.tensor([[3, 4, 5], [7, 0, 0]])
    targets = torch.tensor([[4, 5, 6], [8, 0, 0]])
    sequences = full_sequences(Batch(items=items, lengths=torch.tensor([3, 1]), targets=targets))
    assert sequences.tolist() == [[3, 4, 5, 6], [7, 8, 0, 0]]
    inputs, shifted = shift(sequences)  # the appended item becomes an input with no next item
    assert inputs.tolist() == [[3, 4, 5], [7, 8, 0]] and shifted.tolist() == [[4, 5, 6], [8, 0, 0]]


def test_masked_item_loss_predicts_the_original_items_at_masked_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build("idasr").eval()
    sequences = torch.tensor([[5, 6, 7, 8, 0], [9, 10, 0, 0, 0]])
    seen = {}
    original_ce = torch.nn.functional.cross_entropy

    def spy(logits, targets):
        seen["targets"] = targets.tolist()
        return original_ce(logits, targets)

    monkeypatch.setattr("recbench_plugins.idasr.F.cross_entropy", spy)
    monkeypatch.setattr(
        "recbench_plugins.idasr.choose_positions",
        lambda s, r: torch.tensor([[False, True, False, True, False], [True, False, False, False, False]]),
    )
    rows = model.text_rows()
    model.masked_item_loss(sequences, model.item_table(rows), model.mask_input(rows))
    assert seen["targets"] == [6, 8, 9]


@pytest.mark.parametrize("tasks", [["next"], ["mask"], ["permute"], ["next", "mask", "permute"]])
def test_each_pretraining_task_gives_a_finite_loss(tasks: list[str]) -> None:
    model = build("idasr", tasks=tasks).train()
    sequences = sample_sequences(8)
    inputs, targets = shift(sequences)
    lengths = (inputs > 0).sum(dim=1)
    keep = lengths > 0
    batch = Batch(items=inputs[keep], lengths=lengths[keep], targets=targets[keep])
    loss = model.pretrain_loss(batch)
    assert torch.isfinite(loss)
    loss.backward()


def test_unknown_pretraining_task_is_rejected() -> None:
    with pytest.raises(ConfigError, match="config key 'tasks' of method 'idasr': item 2 must be 'next', 'mask' or"):
        build("idasr", tasks=["next", "shuffle"])


def test_lsh_codes_are_deterministic_for_fixed_hyperplanes() -> None:
    lsh = LearnableLSH(24, 10, 3, 8, 1.0, 0.02)
    lsh.reset_parameters()
    text = torch.randn(50, 24)
    codes = lsh.codes(text)
    assert codes.shape == (50, 3) and codes.min() >= 0 and codes.max() < 1024
    assert torch.equal(codes, lsh.codes(text.clone()))
    bits = (lsh.project(text) > 0).long()
    assert torch.equal(codes, (bits * 2 ** torch.arange(10)).sum(-1))  # c = sum_j 2^(j-1) bit_j


def test_similar_embeddings_share_more_code_bits_than_dissimilar_ones() -> None:
    torch.manual_seed(0)
    lsh = LearnableLSH(64, 10, 3, 8, 1.0, 0.02)
    lsh.reset_parameters()
    anchors = torch.randn(500, 64)
    similar = anchors + 0.1 * torch.randn(500, 64)
    unrelated = torch.randn(500, 64)

    def shared_bits(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((lsh.project(a) > 0) == (lsh.project(b) > 0)).float().mean().item()

    assert shared_bits(anchors, similar) > 0.9 > 0.6 > shared_bits(anchors, unrelated)
    assert (lsh.codes(anchors) == lsh.codes(similar)).float().mean() > (
        lsh.codes(anchors) == lsh.codes(unrelated)
    ).float().mean()


def test_straight_through_lsh_forwards_hard_codes_and_trains_the_hyperplanes() -> None:
    lsh = LearnableLSH(24, 4, 2, 8, 1.0, 0.02)
    lsh.reset_parameters()
    text = torch.randn(30, 24)
    lsh.train()
    out = lsh(text)
    hard = lsh.tables[torch.arange(2), lsh.codes(text)]
    assert torch.equal(out, hard)
    out.square().sum().backward()
    assert lsh.hyperplanes.grad is not None and lsh.hyperplanes.grad.abs().sum() > 0


def test_straight_through_gradient_is_that_of_the_expected_table_vector_under_soft_bits() -> None:
    """Cross-check against autograd through E = sum_c P(c) E_k[c], P(c) a product over the bits."""
    torch.manual_seed(0)
    n_planes, n_tables, temperature = 3, 2, 0.7
    lsh = LearnableLSH(6, n_planes, n_tables, 5, temperature, 0.5).double()
    lsh.reset_parameters()
    text, weights = torch.randn(9, 6, dtype=torch.float64), torch.randn(9, n_tables, 5, dtype=torch.float64)
    lsh.train()
    (lsh(text) * weights).sum().backward()
    hyperplanes = lsh.hyperplanes.detach().clone().requires_grad_()
    soft_bits = torch.sigmoid(torch.einsum("nt,mth->nmh", text, hyperplanes) / temperature)  # (N, m, h)
    expected = torch.zeros(9, n_tables, 5, dtype=torch.float64)
    for code in range(2**n_planes):
        bits = torch.tensor([(code >> j) & 1 for j in range(n_planes)], dtype=torch.float64)
        probability = (bits * soft_bits + (1 - bits) * (1 - soft_bits)).prod(dim=-1)  # (N, m)
        expected = expected + probability[..., None] * lsh.tables.detach()[:, code]
    (expected * weights).sum().backward()
    torch.testing.assert_close(lsh.hyperplanes.grad, hyperplanes.grad)
    hard_grad = torch.zeros_like(lsh.tables)
    codes = lsh.codes(text)
    for table in range(n_tables):
        hard_grad[table].index_add_(0, codes[:, table], weights[:, table])
    torch.testing.assert_close(lsh.tables.grad, hard_grad)  # the tables learn from the hard look-up only


def test_lshsr_without_gate_is_a_different_model() -> None:
    gated, plain = build("lshsr"), build("lshsr", use_gate=False)
    assert gated.gate_logit is not None and plain.gate_logit is None


# --- the reproduction report's parameter layout (Table 3) and LSH-SR's gate (Eq. 13-14) -----------


def count(module: torch.nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def test_idasr_at_the_reports_sizes_has_the_parameters_of_its_table_3() -> None:
    """Instruments in the report: 9,964 items; BERT-base text (768); the report's section 4.3 sizes."""
    settings = {"item_size": 256, "semantic_hidden_size": 512, "inner_size": 512, "n_layers": 2, "n_heads": 2}
    config = resolve_config(get_method("idasr"), settings)
    assert config.max_seq_length == 50 and config.mask_token == "text_row" and config.extra_position
    text = torch.randn(9_965, 768)
    text[0] = 0
    model = get_method("idasr").cls(config, DataSpec(num_items=9_964, max_seq_length=50, item_text_embeddings=text))
    semantic, transformer = count(model.item_representation), count(model.encoder)
    positions = count(model.position_embedding)
    assert model.text.numel() == 7_653_888 == 768 * (9_964 + 2)  # frozen item text: padding + items + [MASK]
    assert semantic == 525_056
    assert transformer == 1_054_208
    assert positions == 13_056 == 51 * 256
    assert count(model) - semantic - transformer - positions == 512 == count(model.norm)  # "other"
    assert all(parameter.requires_grad for parameter in model.parameters())  # the text is a frozen buffer
    assert model.text.numel() / (model.text.numel() + count(model)) == pytest.approx(0.8277, abs=5e-5)


def test_the_earlier_layout_has_a_learned_mask_vector_and_max_seq_length_positions() -> None:
    model = build("idasr", mask_token="learned", extra_position=False)
    assert model.text.shape[0] == 41 and model.position_embedding.num_embeddings == 12
    assert model.mask_vector is not None and model.mask_vector.requires_grad


def masked_inputs(model, monkeypatch: pytest.MonkeyPatch, sequences: torch.Tensor, masked: torch.Tensor):
    """The inputs the encoder gets in masked-item prediction, with ``masked`` as the chosen positions."""
    seen = {}
    encode = model.encode

    def spy(inputs, items, allowed, last=None):
        seen["inputs"], seen["items"] = inputs, items
        return encode(inputs, items, allowed, last)

    monkeypatch.setattr(model, "encode", spy)
    monkeypatch.setattr("recbench_plugins.idasr.choose_positions", lambda s, r: masked[:, : s.shape[1]])
    rows = model.text_rows()
    model.masked_item_loss(sequences, model.item_table(rows), model.mask_input(rows))
    return seen["inputs"], seen["items"]


@pytest.mark.parametrize("name", ["idasr", "lshsr"])
def test_masked_positions_read_the_transformed_mask_row_and_no_mask_vector_exists(
    name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = build(name).eval()
    assert model.text.shape[0] == 42 and not model.text[41].any()  # row N + 1 = the [MASK]: a zero row
    assert not [key for key, _ in model.named_parameters() if "mask" in key]
    assert model.mask_vector is None
    sequences = torch.tensor(
        [[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17], [9, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]]
    )
    masked = torch.zeros(sequences.shape, dtype=torch.bool)
    masked[0, [1, 12]] = masked[1, 0] = True  # position 12 is the 13th: the window's last target
    inputs, items = masked_inputs(model, monkeypatch, sequences, masked)
    assert items.shape[1] == 13  # the whole (max_seq_length + 1)-item window, on 13 position rows
    if name == "idasr":  # the zero row through the semantic transformation, by hand
        first = model.item_representation.first
        expected = torch.sigmoid(model.item_representation.second(torch.sigmoid(first.bias)))
    else:  # LSH-SR: the [MASK] is item N + 1, with its own ID row; a zero text row hashes to code 0
        assert model.item_representation.codes(model.text[41:]).tolist() == [[0, 0, 0]]
        mapped, ids = lsh_parts(model)
        g = torch.sigmoid(model.gate_logit)
        expected = g * mapped[41] + (1 - g) * ids[41] + ids[41]
    torch.testing.assert_close(inputs[masked], expected.expand(3, -1))
    torch.testing.assert_close(inputs[~masked], model.item_table()[sequences[~masked]])
    assert not torch.isclose(expected, model.item_table()[1:]).all(dim=1).any()  # no real item is the [MASK]


def test_masked_positions_read_the_learned_vector_in_the_earlier_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    model = build("idasr", mask_token="learned", extra_position=False).eval()
    sequences = torch.tensor([[5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17]])
    masked = torch.zeros(sequences.shape, dtype=torch.bool)
    masked[0, [1, 11]] = True
    inputs, items = masked_inputs(model, monkeypatch, sequences, masked)
    assert items.shape[1] == 12  # the last target is cut off: no 13th position
    torch.testing.assert_close(inputs[masked[:, :12]], model.mask_vector.expand(2, -1))


def lsh_parts(model):
    """Eq. 11-12 by the model's own modules: the DNN output m~ and the ID rows e, for every text row."""
    ids = model.id_embedding.weight
    return model.dnn((model.item_representation(model.text) * ids[:, None, :]).flatten(1)), ids


@pytest.mark.parametrize(
    ("settings", "form"),
    [
        ({}, "gate(m, e) + e"),  # Eq. 13-14
        ({"use_gate": False}, "m + e"),  # the report's "remove resnet gating"
        ({"residual": False}, "gate(m, e)"),
        ({"use_gate": False, "residual": False}, "m"),
    ],
)
def test_lshsr_item_representation_is_eq_13_14_or_its_ablated_form(settings: dict, form: str) -> None:
    model = build("lshsr", **settings).eval()
    if model.gate_logit is not None:
        with torch.no_grad():
            model.gate_logit.normal_()  # g away from 0.5, different per dimension
    mapped, ids = lsh_parts(model)
    g = torch.sigmoid(model.gate_logit) if model.gate_logit is not None else None
    expected = {
        "gate(m, e) + e": lambda: g * mapped + (1 - g) * ids + ids,
        "m + e": lambda: mapped + ids,
        "gate(m, e)": lambda: g * mapped + (1 - g) * ids,
        "m": lambda: mapped,
    }[form]()
    torch.testing.assert_close(model.text_rows(), expected)
    torch.testing.assert_close(model.item_table(), expected[:41])
    assert (model.gate_logit is None) == (settings.get("use_gate") is False)
