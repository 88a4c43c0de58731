"""The fixed text set bench/export_profiles.py measures export quality on: English prose of
several kinds and Python code, ~2000 tokens in all for Qwen2.5's tokenizer. Written for
this bench (no dataset hub here) and kept apart from the export's calibration text
(app/modelstore/calibration.py), so a calibrated profile is not scored on what it saw."""

from __future__ import annotations

TEXTS: dict[str, str] = {
    "story": (
        "Mara had kept the bakery on Wren Street for eleven years before the fire. It started "
        "in the flat above, a candle left burning beside a curtain, and by the time the "
        "engines arrived the roof had fallen into the kitchen. The neighbours stood on the "
        "pavement in their coats and watched the sparks rise into the winter sky. In the "
        "morning she walked through the ashes with the insurance man, who wrote numbers on a "
        "clipboard and would not look at her. The ovens had survived, black and cracked but "
        "whole, and the old recipe book was found in the cellar, damp at the edges. She "
        "rented a van, borrowed a folding table from the church, and on the third day she "
        "was selling bread again from the kerb, wrapped in brown paper, with a handwritten "
        "sign that said only: still here."
    ),
    "science": (
        "A battery stores energy in chemical form and releases it as an electric current "
        "when its two electrodes are connected through a circuit. In a lithium-ion cell, "
        "lithium ions move from the negative electrode, usually graphite, through an "
        "electrolyte to the positive electrode, a metal oxide, while electrons travel the "
        "same way through the external wire and power the device. Charging forces the ions "
        "back. Each cycle slightly damages the electrodes: a thin layer grows on the "
        "graphite, cracks form in the oxide particles, and some lithium becomes trapped "
        "where it can no longer take part in the reaction. This is why a phone holds less "
        "charge after a few years. Heat speeds these reactions up, which is why batteries "
        "last longer when they are kept cool and are not left at full charge for long "
        "periods."
    ),
    "instructions": (
        "Before you install the shelf, find the studs behind the wall with a stud finder or "
        "by knocking gently and listening for a solid sound. Mark the position of two studs "
        "with a pencil. Hold the bracket against the wall at the height you want, check "
        "that it is level, and mark the screw holes. Drill pilot holes slightly narrower "
        "than the screws, then fix the first bracket firmly. Rest the shelf on it, place "
        "the level on top, and mark the second bracket's holes so that both sides match. "
        "If there is no stud where you need one, use wall anchors rated for the weight you "
        "plan to store, and never rely on plasterboard alone for heavy books."
    ),
    "dialogue": (
        "User: I keep getting a merge conflict whenever I pull from main. What am I doing "
        "wrong?\nAssistant: Nothing unusual: a conflict means that you and someone else "
        "changed the same lines. Git cannot decide which version to keep, so it asks you. "
        "Open the files it lists, look for the markers it added, and keep the lines you "
        "want. Then stage the files and finish the merge with a commit.\nUser: Can I avoid "
        "it happening so often?\nAssistant: Pull more often, keep your branches short-lived, "
        "and agree with your team on formatting, because a formatter that rewrites whole "
        "files produces conflicts on lines nobody really changed. Rebasing your branch onto "
        "main before you open a pull request also keeps the history easier to read."
    ),
    "parser": (
        "import re\nfrom dataclasses import dataclass\n\n\n"
        "@dataclass\nclass Token:\n    kind: str\n    text: str\n    position: int\n\n\n"
        "TOKEN_PATTERN = re.compile(\n"
        '    r"(?P<number>\\d+(?:\\.\\d+)?)|(?P<name>[A-Za-z_]\\w*)"'
        '|(?P<op>[-+*/()])|(?P<space>\\s+)"\n'
        ")\n\n\n"
        "def tokenize(source: str) -> list[Token]:\n"
        "    tokens = []\n    position = 0\n"
        "    while position < len(source):\n"
        "        match = TOKEN_PATTERN.match(source, position)\n"
        "        if match is None:\n"
        '            raise SyntaxError(f"unexpected {source[position]!r} at {position}")\n'
        "        kind = match.lastgroup\n"
        '        if kind != "space":\n'
        "            tokens.append(Token(kind, match.group(), position))\n"
        "        position = match.end()\n"
        "    return tokens\n\n\n"
        "def evaluate(tokens: list[Token]) -> float:\n"
        "    def expression(index: int) -> tuple[float, int]:\n"
        "        value, index = term(index)\n"
        '        while index < len(tokens) and tokens[index].text in "+-":\n'
        "            operator = tokens[index].text\n"
        "            right, index = term(index + 1)\n"
        '            value = value + right if operator == "+" else value - right\n'
        "        return value, index\n\n"
        "    def term(index: int) -> tuple[float, int]:\n"
        "        value, index = factor(index)\n"
        '        while index < len(tokens) and tokens[index].text in "*/":\n'
        "            operator = tokens[index].text\n"
        "            right, index = factor(index + 1)\n"
        '            value = value * right if operator == "*" else value / right\n'
        "        return value, index\n\n"
        "    def factor(index: int) -> tuple[float, int]:\n"
        "        token = tokens[index]\n"
        '        if token.text == "(":\n'
        "            value, index = expression(index + 1)\n"
        "            return value, index + 1\n"
        "        return float(token.text), index + 1\n\n"
        "    value, _ = expression(0)\n"
        "    return value\n"
    ),
    "service": (
        "import logging\nimport sqlite3\nfrom contextlib import closing\nfrom pathlib import "
        "Path\n\nlogger = logging.getLogger(__name__)\n\n\n"
        "class Inventory:\n"
        '    """Items and their stock counts, kept in one SQLite file."""\n\n'
        "    def __init__(self, path: Path) -> None:\n"
        "        self.connection = sqlite3.connect(path)\n"
        "        self.connection.execute(\n"
        '            "CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY, count INTEGER)"\n'
        "        )\n\n"
        "    def add(self, name: str, count: int = 1) -> None:\n"
        "        if count <= 0:\n"
        '            raise ValueError("count must be positive")\n'
        "        with self.connection:\n"
        "            self.connection.execute(\n"
        '                "INSERT INTO items (name, count) VALUES (?, ?) "\n'
        '                "ON CONFLICT(name) DO UPDATE SET count = count + excluded.count",\n'
        "                (name, count),\n"
        "            )\n"
        '        logger.info("added %d of %s", count, name)\n\n'
        "    def remove(self, name: str, count: int = 1) -> bool:\n"
        "        with self.connection, closing(self.connection.cursor()) as cursor:\n"
        "            cursor.execute(\n"
        '                "UPDATE items SET count = count - ? WHERE name = ? AND count >= ?",\n'
        "                (count, name, count),\n"
        "            )\n"
        "            return cursor.rowcount == 1\n\n"
        "    def report(self) -> dict[str, int]:\n"
        '        rows = self.connection.execute("SELECT name, count FROM items ORDER BY name")\n'
        "        return dict(rows.fetchall())\n"
    ),
    "tests": (
        "import pytest\n\nfrom inventory import Inventory\n\n\n"
        "@pytest.fixture\ndef inventory(tmp_path):\n"
        '    return Inventory(tmp_path / "stock.db")\n\n\n'
        "def test_adding_twice_sums_the_counts(inventory):\n"
        '    inventory.add("apple", 3)\n'
        '    inventory.add("apple", 2)\n'
        '    assert inventory.report() == {"apple": 5}\n\n\n'
        "def test_removing_more_than_in_stock_changes_nothing(inventory):\n"
        '    inventory.add("pear", 1)\n'
        '    assert not inventory.remove("pear", 2)\n'
        '    assert inventory.report() == {"pear": 1}\n\n\n'
        "def test_a_negative_count_is_refused(inventory):\n"
        '    with pytest.raises(ValueError, match="positive"):\n'
        '        inventory.add("plum", -1)\n\n\n'
        '@pytest.mark.parametrize("count", [1, 5, 10])\n'
        "def test_report_lists_items_in_order(inventory, count):\n"
        '    for name in ("cherry", "banana", "apple"):\n'
        "        inventory.add(name, count)\n"
        '    assert list(inventory.report()) == ["apple", "banana", "cherry"]\n'
    ),
    "history": (
        "The printing press did not spread evenly across Europe. Within twenty years of "
        "Gutenberg's first Bible, presses were working in more than a hundred towns, but "
        "they clustered along the trade routes of the Rhine and in the rich cities of "
        "northern Italy, where paper, capital and educated buyers could all be found. "
        "Venice alone had dozens of printers by the end of the century. The first books "
        "imitated manuscripts so closely that readers could hardly tell them apart; only "
        "slowly did printers invent the title page, page numbers and the small portable "
        "formats that made books cheap enough for students and merchants to own."
    ),
    "letter": (
        "Dear Mr Alvarez,\n\nThank you for your letter of the fourth of March about the "
        "noise from the building site on Mill Lane. I am sorry that the work has disturbed "
        "you. I have spoken to the contractor, who has agreed that no machinery will be "
        "used before eight in the morning or after six in the evening, and that the "
        "concrete deliveries will move to the entrance on Station Road from next week. If "
        "the noise continues outside those hours, please call the number below and a "
        "council officer will visit the same day.\n\nYours sincerely,\nJane Whitfield"
    ),
    "retry": (
        "import random\nimport time\nfrom collections.abc import Callable\nfrom typing import "
        'TypeVar\n\nT = TypeVar("T")\n\n\n'
        "def retry(\n    call: Callable[[], T],\n    attempts: int = 5,\n"
        "    base_delay: float = 0.1,\n    retry_on: tuple[type[Exception], ...] = "
        "(ConnectionError, TimeoutError),\n) -> T:\n"
        '    """Calls `call` until it succeeds, waiting longer after each failure."""\n'
        "    for attempt in range(attempts):\n"
        "        try:\n            return call()\n"
        "        except retry_on:\n"
        "            if attempt == attempts - 1:\n                raise\n"
        "            delay = base_delay * 2**attempt\n"
        "            time.sleep(delay + random.uniform(0, delay))\n"
        '    raise AssertionError("unreachable")\n'
    ),
}

# How much of each text is the prompt of a greedy continuation (the rest is not used).
PROMPT_SHARE = 0.5
