"""Grammars are compiled before a request is admitted, by the very code the engine will run.

openvino-genai compiles a request's grammar (its bundled xgrammar) inside step(), the first
time it samples the request. A grammar that does not compile raises there, mid-step, and
takes the whole step with it: every request batched with it. A grammar that takes seconds
to compile stalls every stream for those seconds. So each new grammar is first compiled
here, in a process of its own, by genai's own ContinuousBatchingPipeline running a probe
model: one layer, a few megabytes of weights, built with the OpenVINO API when the first
grammar arrives, with the served model's vocabulary size and its own tokenizer files. genai builds
its grammar compiler from the tokenizer and the logits' size, so the probe compiles exactly
what the engine would; its one-token step costs nothing next to the compile itself
(measured here: 7 to 60 ms for a tool's schema on a 49k-token vocabulary). A grammar that
fails is a 400 with xgrammar's reason; one that outlasts the time limit is a 400 too, and
the probe process is replaced."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import multiprocessing as mp
import re
import shutil
import tempfile
import time
from collections import OrderedDict
from multiprocessing.connection import Connection
from multiprocessing.queues import Queue
from pathlib import Path
from typing import Any

from app.engine.base import Grammar, RequestRejected
from app.engine.messages import CheckGrammar, EngineFailed, EngineReady, GrammarVerdict, StopEngine

logger = logging.getLogger(__name__)

# What genai needs beside the model: its tokenizer pair (the vocabulary the grammar is
# compiled against) and the generation config (eos ids).
_TOKENIZER_FILES = (
    "openvino_tokenizer.xml",
    "openvino_tokenizer.bin",
    "openvino_detokenizer.xml",
    "openvino_detokenizer.bin",
    "generation_config.json",
    "config.json",
)
_HIDDEN = 8
_CACHED_VERDICTS = 512
_UNKNOWN: Any = object()
_START_TIMEOUT_S = 120.0


def logits_size(model_path: Path) -> int:
    """The served model's vocabulary as its logits have it (config's vocab_size, which
    for Phi-3 is 32064, more than its tokenizer's 32011 tokens)."""
    config = json.loads((model_path / "config.json").read_text())
    size = config.get("vocab_size")
    if isinstance(size, int) and size > 0:
        return size
    import openvino as ov

    model = ov.Core().read_model(str(model_path / "openvino_model.xml"))
    return int(model.outputs[0].get_partial_shape()[-1].get_length())


def build_probe(model_path: Path, out: Path) -> None:
    """A one-layer stateful causal LM with the served model's inputs, logits size and
    tokenizer, in the layout optimum exports (KV state read, gathered by beam_idx,
    concatenated, attended), so genai's paged-attention rewrite takes it as it takes them."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops
    from openvino.op.util import Variable, VariableInfo

    vocab = logits_size(model_path)
    rng = np.random.default_rng(0)
    input_ids = ops.parameter([-1, -1], ov.Type.i64, name="input_ids")
    attention_mask = ops.parameter([-1, -1], ov.Type.i64, name="attention_mask")
    position_ids = ops.parameter([-1, -1], ov.Type.i64, name="position_ids")
    beam_idx = ops.parameter([-1], ov.Type.i32, name="beam_idx")
    parameters = [input_ids, attention_mask, position_ids, beam_idx]
    for parameter, name in zip(
        parameters, ("input_ids", "attention_mask", "position_ids", "beam_idx"), strict=True
    ):
        parameter.output(0).set_names({name})
    embedding = ops.constant(rng.standard_normal((vocab, _HIDDEN)).astype(np.float32))
    hidden = ops.unsqueeze(ops.gather(embedding, input_ids, 0), 1)  # [batch, 1 head, seq, d]
    batch = ops.gather(ops.shape_of(input_ids), ops.constant([0]), 0)
    sinks = []

    def cached(name: str) -> Any:
        info = VariableInfo()
        info.data_shape = ov.PartialShape([-1, 1, -1, _HIDDEN])
        info.data_type = ov.Type.f32
        info.variable_id = name
        variable = Variable(info)
        empty = ops.broadcast(
            ops.constant(np.float32(0)),
            ops.concat([batch, ops.constant([1, 0, _HIDDEN], dtype=np.int64)], 0),
        )
        past = ops.gather(ops.read_value(empty, variable), beam_idx, ops.constant(np.int64(0)))
        present = ops.concat([past, hidden], 2)
        sinks.append(ops.assign(present, variable))
        return present

    keys = cached("past_key_values.0.keypresent.0.key")
    values = cached("past_key_values.0.valuepresent.0.value")
    q_shape, k_shape = ops.shape_of(hidden), ops.shape_of(keys)
    mask_shape = ops.concat(
        [
            batch,
            ops.constant([1], dtype=np.int64),
            ops.gather(q_shape, ops.constant([2]), 0),
            ops.gather(k_shape, ops.constant([2]), 0),
        ],
        0,
    )
    mask = ops.multiply(
        ops.broadcast(ops.constant(np.float32(0)), mask_shape),
        ops.convert(ops.unsqueeze(attention_mask, [1, 2]), ov.Type.f32),
    )
    attended = ops.scaled_dot_product_attention(
        hidden, keys, values, mask, ops.constant(np.float32(0.35)), causal=False
    )
    head = ops.constant(rng.standard_normal((_HIDDEN, vocab)).astype(np.float32))
    logits = ops.matmul(ops.squeeze(attended, ops.constant([1])), head, False, False)
    logits.output(0).set_names({"logits"})
    model = ov.Model([ops.result(logits)], sinks, parameters, "ovchat-grammar-probe")
    out.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(out / "openvino_model.xml"))
    for name in _TOKENIZER_FILES:
        if (model_path / name).is_file():
            shutil.copy(model_path / name, out / name)


_XGRAMMAR_PREFIX = re.compile(r"^\[[^\]]*\]\s*\S+:\d+:\s*")
_CHECK_FAILED = re.compile(r"^Check failed: .*? is false: ", re.DOTALL)


def reason_of(exc: BaseException) -> str:
    """xgrammar's own sentence, without its source location and assertion text."""
    text = str(exc).strip()
    text = _XGRAMMAR_PREFIX.sub("", text.splitlines()[0] if text else type(exc).__name__)
    text = _CHECK_FAILED.sub("", text).strip()
    return text[:300] or type(exc).__name__


def structured_output_config(grammar: Grammar) -> Any:
    """genai's constraint for a grammar: the engine and the probe build it alike."""
    import openvino_genai as ov_genai

    if grammar.kind == "structural_tag":
        return ov_genai.StructuredOutputConfig(structural_tags_config=grammar.text)
    if grammar.kind == "regex":
        return ov_genai.StructuredOutputConfig(regex=grammar.text)
    if grammar.kind == "ebnf":
        return ov_genai.StructuredOutputConfig(grammar=grammar.text)
    return ov_genai.StructuredOutputConfig(json_schema=grammar.text)


def run_checker(model_path: str, inbox: Queue[Any], out: Connection) -> None:
    """The probe process: compiles one grammar at a time, answers with a verdict."""
    from app.logs import configure

    configure("WARNING")
    folder = Path(tempfile.mkdtemp(prefix="ovchat-grammar-"))
    try:
        import numpy as np
        import openvino as ov
        import openvino_genai as ov_genai

        build_probe(Path(model_path), folder)
        sched = ov_genai.SchedulerConfig()
        sched.max_num_seqs = 1
        sched.max_num_batched_tokens = 8
        sched.num_kv_blocks = 4
        sched.cache_size = 0
        sched.enable_prefix_caching = False
        pipe = ov_genai.ContinuousBatchingPipeline(str(folder), sched, "CPU", {})
    except Exception as exc:
        out.send(EngineFailed(f"{type(exc).__name__}: {exc}"))
        shutil.rmtree(folder, ignore_errors=True)
        return
    out.send(EngineReady("CPU"))
    prompt = ov.Tensor(np.asarray([[0]], dtype=np.int64))
    ids = itertools.count(1)
    try:
        while True:
            try:
                message = inbox.get()
            except (EOFError, OSError):
                return
            if isinstance(message, StopEngine):
                return
            config = ov_genai.GenerationConfig()
            config.max_new_tokens = 1
            config.do_sample = False
            config.structured_output_config = structured_output_config(message.grammar)
            started = time.perf_counter()
            error: str | None = None
            handle = pipe.add_request(next(ids), prompt, config)
            try:
                pipe.step()
            except Exception as exc:
                error = reason_of(exc)
            handle.cancel()
            while pipe.has_non_finished_requests():
                pipe.step()  # after a failure, this clears the failed iteration
            out.send(GrammarVerdict(message.key, error, time.perf_counter() - started))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class GrammarChecker:
    """The server's side of the probe process: one verdict per distinct grammar (agents
    send the same tools every turn), at most `timeout_s` to compile it."""

    def __init__(self, model_path: str, timeout_s: float) -> None:
        self._model_path = model_path
        self._timeout_s = timeout_s
        self._ctx = mp.get_context("spawn")
        self._process: Any = None
        self._inbox: Any = None
        self._reader: Any = None
        self._ready: asyncio.Future[bool] | None = None
        self._pending: dict[int, tuple[Grammar, asyncio.Future[str | None]]] = {}
        self._keys = itertools.count(1)
        self._verdicts: OrderedDict[Grammar, str | None] = OrderedDict()
        self._compiling: dict[Grammar, asyncio.Future[str | None]] = {}
        self._lock = asyncio.Lock()  # one grammar at a time, so a timeout names its grammar
        self.compiled = 0
        self.refused = 0
        self._closing = False

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._ready = loop.create_future()
        self._inbox = self._ctx.Queue()
        self._reader, writer = self._ctx.Pipe(duplex=False)
        self._process = self._ctx.Process(
            target=run_checker,
            args=(self._model_path, self._inbox, writer),
            name="ovchat-grammar",
            daemon=True,
        )
        self._process.start()
        writer.close()
        loop.add_reader(self._reader.fileno(), self._on_readable)

    def _on_readable(self) -> None:
        try:
            message = self._reader.recv()
        except (EOFError, OSError):
            self._stop_reading()
            was_working = self._ready is not None and self._ready.done() and self._ready.result()
            if self._ready is not None and not self._ready.done():
                self._ready.set_result(False)
            pending = [future for _, future in self._pending.values() if not future.done()]
            self._pending.clear()
            for future in pending:  # the grammar it was compiling is blamed (see _verdict)
                future.set_exception(ConnectionError("the grammar probe process exited"))
            if not pending and was_working and not self._closing:
                logger.warning("The grammar probe process exited; starting a new one")
                self.start()
            return
        if isinstance(message, EngineReady) and self._ready is not None:
            self._ready.set_result(True)
        elif isinstance(message, EngineFailed) and self._ready is not None:
            logger.error(
                "The grammar probe could not start (%s): grammars reach the engine "
                "unchecked; a failing one still fails only its own request",
                message.message,
            )
            self._ready.set_result(False)
        elif isinstance(message, GrammarVerdict):
            entry = self._pending.pop(message.key, None)
            if entry is not None and not entry[1].done():
                entry[1].set_result(message.error)
            logger.debug("Grammar compiled in %.3f s: %s", message.seconds, message.error or "ok")

    def _stop_reading(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._reader.fileno())
            with contextlib.suppress(Exception):
                self._reader.close()
            self._reader = None

    async def check(self, grammar: Grammar | str) -> None:
        """Raises RequestRejected when the engine could not compile this grammar. The probe
        starts with the first grammar (about 1.5 s, once): a server that is never sent one
        never pays its memory (about 150 MB with the default model). A bare string is a
        JSON schema."""
        wanted = grammar if isinstance(grammar, Grammar) else Grammar("json_schema", grammar)
        if self._process is None and not self._closing:
            self.start()
        error = self._verdicts.get(wanted, _UNKNOWN)
        if error is _UNKNOWN:
            # The compile goes on if this caller goes (its client left): the next grammar
            # must not be timed from a compile still running in the probe.
            compiling = self._compiling.get(wanted)
            if compiling is None:
                compiling = asyncio.ensure_future(self._verdict(wanted))
                self._compiling[wanted] = compiling
                compiling.add_done_callback(lambda _: self._compiling.pop(wanted, None))
            error = await asyncio.shield(compiling)
        else:
            self._verdicts.move_to_end(wanted)
        if error is not None:
            raise RequestRejected(str(error))

    async def _verdict(self, grammar: Grammar) -> str | None:
        async with self._lock:
            return await self._compile(grammar)

    async def _compile(self, grammar: Grammar) -> str | None:
        if not await self._wait_ready():
            return None  # no probe: the engine's own isolation is what is left
        key = next(self._keys)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[key] = (grammar, future)
        self._inbox.put(CheckGrammar(key, grammar))
        try:
            error = await asyncio.wait_for(future, self._timeout_s)
        except TimeoutError:
            # Not remembered: on a busy machine the same grammar may compile in time later.
            logger.warning("A grammar outlasted %.0f s of compiling: refused", self._timeout_s)
            self._pending.pop(key, None)
            self.refused += 1
            await self._restart()
            return (
                f"the schema's grammar did not compile within {self._timeout_s:g} s, and "
                f"compiling it would stall every other request"
            )
        except ConnectionError:
            # The probe died on this grammar: the engine process would have too.
            self.refused += 1
            await self._restart()
            return "compiling the schema's grammar crashed the grammar compiler"
        if error is None:
            self.compiled += 1
        else:
            self.refused += 1
        self._verdicts[grammar] = error  # the compiler's own verdict: it stands
        if len(self._verdicts) > _CACHED_VERDICTS:
            self._verdicts.popitem(last=False)
        return error

    async def _wait_ready(self) -> bool:
        if self._ready is None:
            return False
        try:
            return await asyncio.wait_for(asyncio.shield(self._ready), _START_TIMEOUT_S)
        except TimeoutError:
            logger.error("The grammar probe did not start in %.0f s", _START_TIMEOUT_S)
            return False

    async def _restart(self) -> None:
        await self._terminate()
        if not self._closing:
            self.start()

    async def _terminate(self) -> None:
        self._stop_reading()
        if self._process is not None and self._process.is_alive():
            self._process.kill()
            await asyncio.to_thread(self._process.join, 5)

    async def close(self) -> None:
        self._closing = True
        if self._process is None:
            return
        self._stop_reading()
        with contextlib.suppress(Exception):
            self._inbox.put(StopEngine())
        await asyncio.to_thread(self._process.join, 5)
        if self._process.is_alive():
            self._process.kill()
