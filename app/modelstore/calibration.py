"""The calibration text of the data-aware export profiles (AWQ, scale estimation): the
machine reaches no dataset hub, so NNCF is fed these paragraphs, English prose and Python
as a coding assistant sees them, each one sample. bench/export_profiles.py measures
quality on other texts (bench/export_texts.py), so calibration never sees the test."""

from __future__ import annotations

SAMPLES = (
    "The committee met on Tuesday to review the budget for the coming year. After a long "
    "discussion about the cost of repairing the bridge, the members agreed to postpone the "
    "new library until the spring, when the results of the survey would be known.",
    "def merge_intervals(intervals):\n"
    "    intervals = sorted(intervals)\n"
    "    merged = []\n"
    "    for start, end in intervals:\n"
    "        if merged and start <= merged[-1][1]:\n"
    "            merged[-1][1] = max(merged[-1][1], end)\n"
    "        else:\n"
    "            merged.append([start, end])\n"
    "    return merged\n",
    "Photosynthesis turns light into chemical energy. In the chloroplasts of a leaf, water "
    "is split, oxygen is released, and the energy captured from sunlight is used to build "
    "sugars out of carbon dioxide drawn from the air.",
    "class LRUCache:\n"
    '    """A cache that forgets the entry used least recently."""\n\n'
    "    def __init__(self, capacity: int) -> None:\n"
    "        self.capacity = capacity\n"
    "        self.entries: OrderedDict[str, bytes] = OrderedDict()\n\n"
    "    def get(self, key: str) -> bytes | None:\n"
    "        if key not in self.entries:\n"
    "            return None\n"
    "        self.entries.move_to_end(key)\n"
    "        return self.entries[key]\n",
    "To reset your password, open the settings page, choose Security, and press the button "
    "labelled Change password. You will receive an email with a link that stays valid for "
    "one hour; if it expires, simply request a new one.",
    "import argparse\nimport json\nfrom pathlib import Path\n\n\n"
    "def main() -> None:\n"
    "    parser = argparse.ArgumentParser(description='Count words in JSON records.')\n"
    "    parser.add_argument('path', type=Path)\n"
    "    args = parser.parse_args()\n"
    "    records = json.loads(args.path.read_text())\n"
    "    total = sum(len(r['text'].split()) for r in records)\n"
    "    print(f'{len(records)} records, {total} words')\n",
    "The old harbour town grew rich on the trade in salt and wool. Merchants built tall "
    "houses along the canal, each with a crane under the roof to lift goods from the boats "
    "straight into the attic, where they were stored until the autumn fairs.",
    "User: Why does my loop print the same number ten times?\nAssistant: Each lambda you "
    "create captures the variable i, not its value at that moment, so when the lambdas run "
    "they all see the last value. Bind it as a default argument: lambda i=i: print(i).",
    "async def fetch_all(client, urls):\n"
    "    tasks = [asyncio.create_task(client.get(url)) for url in urls]\n"
    "    results = []\n"
    "    for task in asyncio.as_completed(tasks):\n"
    "        response = await task\n"
    "        response.raise_for_status()\n"
    "        results.append(response.json())\n"
    "    return results\n",
    "A good night's sleep depends on routine more than on any single trick. Going to bed at "
    "the same hour, keeping the room cool and dark, and putting screens away an hour before "
    "sleeping help the body recognise that the day is over.",
    "SELECT customers.name, COUNT(orders.id) AS order_count\nFROM customers\nLEFT JOIN "
    "orders ON orders.customer_id = customers.id\nWHERE orders.created_at >= '2024-01-01'\n"
    "GROUP BY customers.name\nORDER BY order_count DESC\nLIMIT 10;",
    "The recipe calls for two cups of flour, a pinch of salt, three eggs and a cup of milk. "
    "Whisk the eggs and milk together first, then fold in the flour slowly so that no lumps "
    "form, and let the batter rest for half an hour before frying.",
)


def calibration_texts() -> list[str]:
    return list(SAMPLES)
