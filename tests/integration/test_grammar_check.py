"""Grammars compiled first by the engine's own compiler, in a probe process of their own
(app/engine/grammar_check.py): a verdict per grammar, a time limit, and a probe that is
replaced when it dies or overruns."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from pathlib import Path

import pytest

from app.engine.base import Grammar, RequestRejected
from app.engine.grammar_check import GrammarChecker

GOOD = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
LOOKAHEAD = {"type": "string", "pattern": "^(?=a)a+$"}


def schema(i: int) -> str:
    return json.dumps({"type": "object", "properties": {f"field{i}": {"type": "string"}}})


async def refusal(checker: GrammarChecker, text: str) -> str:
    with pytest.raises(RequestRejected) as refused:
        await checker.check(text)
    return str(refused.value)


def test_verdicts(default_model_dir: Path) -> None:
    async def scenario() -> None:
        checker = GrammarChecker(str(default_model_dir), 30)
        checker.start()
        try:
            await checker.check(json.dumps(GOOD))
            assert "Lookahead is not supported" in await refusal(checker, json.dumps(LOOKAHEAD))
            whole = {"type": "integer", "minimum": 0.5}
            assert "whole number" in await refusal(checker, json.dumps(whole))
            assert (checker.compiled, checker.refused) == (1, 2)
            await checker.check(json.dumps(GOOD))  # decided once: not compiled again
            await refusal(checker, json.dumps(LOOKAHEAD))
            assert (checker.compiled, checker.refused) == (1, 2)
        finally:
            await checker.close()

    asyncio.run(scenario())


def test_regex_and_ebnf_verdicts_are_kept_per_kind(default_model_dir: Path) -> None:
    async def scenario() -> None:
        checker = GrammarChecker(str(default_model_dir), 30)
        checker.start()
        try:
            await checker.check(Grammar("regex", "[0-9]+"))
            await checker.check(Grammar("ebnf", 'root ::= [0-9]+ "."'))
            with pytest.raises(RequestRejected, match="not defined"):
                await checker.check(Grammar("ebnf", "root ::= nowhere"))
            assert (checker.compiled, checker.refused) == (2, 1)
            await checker.check(Grammar("regex", "[0-9]+"))  # decided once
            await checker.check(Grammar("ebnf", 'root ::= [0-9]+ "."'))
            assert (checker.compiled, checker.refused) == (2, 1)
            # The same text as another kind is another grammar.
            with pytest.raises(RequestRejected):
                await checker.check(Grammar("ebnf", "[0-9]+"))
            assert (checker.compiled, checker.refused) == (2, 2)
        finally:
            await checker.close()

    asyncio.run(scenario())


def test_a_grammar_past_the_time_limit_is_refused_and_the_probe_replaced(
    tiny_model_dir: Path,
) -> None:
    async def scenario() -> None:
        checker = GrammarChecker(str(tiny_model_dir), 30)
        checker.start()
        try:
            await checker.check(schema(0))  # the probe is up
            first = checker._process.pid
            checker._timeout_s = 1e-4  # nothing compiles that fast
            assert "did not compile within" in await refusal(checker, schema(1))
            checker._timeout_s = 30
            await checker.check(schema(2))
            assert checker._process.pid != first
        finally:
            await checker.close()

    asyncio.run(scenario())


def test_a_probe_that_dies_idle_is_replaced(tiny_model_dir: Path) -> None:
    async def scenario() -> None:
        checker = GrammarChecker(str(tiny_model_dir), 30)
        checker.start()
        try:
            await checker.check(schema(0))
            first = checker._process.pid
            os.kill(first, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while checker._process.pid == first and time.monotonic() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.05)
            await checker.check(schema(1))
            assert checker._process.pid != first and checker.compiled == 2
        finally:
            await checker.close()

    asyncio.run(scenario())
