"""Every real class meets the typed contract the code around it is written against: the encoder
runtimes and sentiment labelers (models/protocols.py), the composer backends (models/composer.py
`ChatModel`), the store's Slack inbox and reply ledger (store/inbox.py), and the Slack front end's
engine and store (bot/slack/contracts.py). Each check is `isinstance` on a real object where one is
cheap to make, and always a comparison of each Protocol method's signature with the class's:
a renamed method or parameter, a changed default or a new required parameter fails here."""

from __future__ import annotations

import inspect
import typing

import pytest

from bot.slack.contracts import AnswerEngine, SlackStore
from models.composer import ChatModel, LlamaCppChat, TransformersChat
from models.composer_openai import OpenAIChat
from models.encoder import Encoder
from models.onnx_encoder import OnnxEncoder
from models.protocols import EncodedLabeler, EncoderRuntime, TailLabeler, TextLabeler, TokenStatesEncoder
from models.sentiment import SentimentModel
from models.sentiment_model import FineTunedSentiment
from models.sentiment_onnx import OnnxSentiment
from serving.engine import Engine
from serving.policy import SelectingEngine
from store import Store
from store.inbox import Inbox, ReplyLedger, SlackInbox

MINILM = "builtin:all-MiniLM-L6-v2"
VARIADIC = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
PAIRS = [
    (EncoderRuntime, Encoder), (EncoderRuntime, OnnxEncoder), (TokenStatesEncoder, OnnxEncoder),
    (EncodedLabeler, SentimentModel), (TextLabeler, FineTunedSentiment), (TextLabeler, OnnxSentiment),
    (TailLabeler, OnnxSentiment),
    (ChatModel, TransformersChat), (ChatModel, LlamaCppChat), (ChatModel, OpenAIChat),
    (ReplyLedger, Inbox), (SlackInbox, Inbox), (AnswerEngine, Engine), (SlackStore, Store), (SelectingEngine, Engine),
]


def members(protocol) -> dict[str, object]:
    """{name: function | property | annotation} of a Protocol, its parent Protocols' included."""
    found: dict[str, object] = {}
    for klass in reversed(protocol.__mro__):
        if klass in (object, typing.Protocol, typing.Generic):
            continue
        found.update(klass.__dict__.get("__annotations__", {}))
        found.update({name: value for name, value in vars(klass).items()
                      if not name.startswith("_") and (inspect.isfunction(value) or isinstance(value, property))})
    return found


def methods(protocol) -> list[str]:
    return sorted(name for name, member in members(protocol).items() if inspect.isfunction(member))


def mismatches(wanted: inspect.Signature, have: inspect.Signature) -> list[str]:
    """How `have` fails to take every call `wanted` allows, with the same names, kinds and defaults.
    A `**kwargs` in `wanted` stands for whatever keywords `have` names (the store's provenance)."""
    want = [p for p in wanted.parameters.values() if p.name != "self"]
    real = {p.name: p for p in have.parameters.values() if p.name != "self"}
    open_keywords = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in want)
    problems = []
    for param in want:
        if param.kind in VARIADIC:
            continue
        other = real.get(param.name)
        if other is None:
            problems.append(f"no parameter {param.name!r}")
        elif other.kind is not param.kind:
            problems.append(f"{param.name!r} is {other.kind.description}, not {param.kind.description}")
        elif other.default != param.default:
            problems.append(f"{param.name!r} defaults to {other.default!r}, not {param.default!r}")
    order = [p.name for p in want if p.kind in POSITIONAL]
    if [p.name for p in real.values() if p.kind in POSITIONAL][:len(order)] != order:
        problems.append(f"positional parameters not in the order {order}")
    names = {p.name for p in want}
    for name, param in real.items():
        if name in names or param.kind in VARIADIC or param.default is not inspect.Parameter.empty:
            continue
        if not (open_keywords and param.kind is not inspect.Parameter.POSITIONAL_ONLY):
            problems.append(f"{name!r} is required and the contract does not pass it")
    return problems


def signature_problems(protocol, real) -> dict[str, list[str]]:
    """{method: problems} of a class (or an object) against a Protocol; {} when it meets it."""
    found = {}
    for name, member in members(protocol).items():
        if isinstance(member, property):
            if isinstance(real, type) and not isinstance(inspect.getattr_static(real, name, None), property):
                found[name] = ["not a property"]
            continue
        if not inspect.isfunction(member):
            continue  # a data member: instances have it (isinstance checks, below)
        implementation = getattr(real, name, None)
        if not callable(implementation):
            found[name] = ["missing"]
            continue
        problems = mismatches(inspect.signature(member), inspect.signature(implementation))
        if problems:
            found[name] = problems
    return found


@pytest.mark.parametrize(("protocol", "real"), PAIRS, ids=[f"{p.__name__}-{c.__name__}" for p, c in PAIRS])
def test_each_class_has_its_protocols_methods_with_their_signatures(protocol, real):
    assert signature_problems(protocol, real) == {}


def test_the_comparison_catches_a_renamed_method_or_parameter():
    class Renamed:
        name, device = "x", "cpu"
        dim = n_layers = property(lambda self: 1)

        def encode(self, texts, size=64):
            ...

        def embedding(self, texts, batch_size=64):
            ...

    assert signature_problems(EncoderRuntime, Renamed) == {
        "encode": ["no parameter 'batch_size'", "positional parameters not in the order ['texts', 'batch_size']"],
        "embed": ["missing"]}


def test_the_labelers_say_which_input_they_read():
    def literal(protocol) -> tuple:
        return typing.get_args(typing.get_type_hints(protocol)["reads_encoder"])

    assert literal(EncodedLabeler) == (True,) and literal(TextLabeler) == literal(TailLabeler) == (False,)
    assert SentimentModel.reads_encoder is True
    assert FineTunedSentiment.reads_encoder is False and OnnxSentiment.reads_encoder is False


def test_the_torch_encoder_is_an_encoder_without_token_states():
    encoder = Encoder(MINILM, "cpu")
    assert isinstance(encoder, EncoderRuntime) and not isinstance(encoder, TokenStatesEncoder)
    assert signature_problems(EncoderRuntime, encoder) == {}
    assert encoder.encode(["hello"]).embeddings.shape == (1, encoder.dim)


def test_the_sentiment_head_and_the_fine_tuned_model_are_their_labelers():
    head = SentimentModel.load("builtin")
    assert isinstance(head, EncodedLabeler) and not isinstance(head, TextLabeler)
    model = FineTunedSentiment.load("builtin")
    assert isinstance(model, TextLabeler) and not isinstance(model, TailLabeler)
    assert signature_problems(TextLabeler, model) == {}


def test_the_openai_backend_is_a_chat_model():
    chat = OpenAIChat("http://127.0.0.1:9/v1", "some-model")  # no request is made
    assert isinstance(chat, ChatModel) and signature_problems(ChatModel, chat) == {}


def test_the_store_its_inbox_and_ledger_meet_their_contracts(tmp_path):
    with Store(tmp_path / "csbot.sqlite3", salt="contract-salt") as store:
        assert isinstance(store, SlackStore)
        assert isinstance(store.inbox, SlackInbox) and isinstance(store.inbox, ReplyLedger)
        assert methods(SlackInbox) == sorted(set(methods(ReplyLedger)) | {
            "accept", "event_claimed", "register", "heartbeat", "unregister", "reclaim", "take", "finish", "retry",
            "fail", "scrub", "release", "depth", "items", "revoke", "restore", "revoked"})
        assert signature_problems(SlackInbox, store.inbox) == {}


@pytest.mark.slow  # the demo home's build (once per session)
def test_the_served_onnx_runtimes_share_token_states_and_the_slack_test_engines_are_engines(engine):
    from tests.slack.conftest import RecordingEngine, StubEngine

    served = engine.served
    assert isinstance(served.encoder, OnnxEncoder) and isinstance(served.encoder, TokenStatesEncoder)
    assert isinstance(served.sentiment, OnnxSentiment) and isinstance(served.sentiment, TailLabeler)
    assert served.encoder.token_states is not None and served.sentiment.tail is not None and served.shares_encoder
    for protocol, real in ((TokenStatesEncoder, served.encoder), (TailLabeler, served.sentiment)):
        assert signature_problems(protocol, real) == {}

    assert isinstance(engine, AnswerEngine) and signature_problems(AnswerEngine, engine) == {}
    recorded = RecordingEngine(engine)  # what the Slack tests serve: the real engine behind a recorder
    assert isinstance(recorded, AnswerEngine) and signature_problems(AnswerEngine, recorded) == {}
    # tests/monitoring's scripted engine implements part of the contract: what it has must fit it.
    stub = StubEngine()
    have = [name for name in methods(AnswerEngine) if callable(getattr(stub, name, None))]
    assert set(have) >= {"answer", "answer_batch", "mode_for", "sentiment", "catalogue", "reload", "maybe_reload"}
    assert {name: mismatches(inspect.signature(getattr(AnswerEngine, name)), inspect.signature(getattr(stub, name)))
            for name in have} == {name: [] for name in have}
