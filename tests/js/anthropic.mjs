// The official Anthropic JavaScript SDK against an ovchat server: prints what it saw as
// JSON for tests/integration/test_anthropic_sdk.py to check.
// Usage: node anthropic.mjs <base url> <model>
import Anthropic from "@anthropic-ai/sdk";

const [url, model] = process.argv.slice(2);
const client = new Anthropic({ baseURL: url, apiKey: "unused", maxRetries: 0 });
const messages = [{ role: "user", content: "can you introduce yourself?" }];
// The SDK's types no longer list the sampling fields; the API still takes them.
const greedy = { model, messages, max_tokens: 100, temperature: 0 };
const tool = {
  name: "get_unit",
  description: "The unit to report temperatures in",
  input_schema: {
    type: "object",
    properties: { unit: { enum: ["celsius", "fahrenheit"] } },
    required: ["unit"],
  },
};
const out = {};

const plain = await client.messages.create(greedy);
out.text = plain.content[0].text;
out.stop_reason = plain.stop_reason;
out.usage = plain.usage;
out.id = plain.id;

const deltas = [];
const stream = client.messages.stream(greedy).on("text", (text) => deltas.push(text));
const final = await stream.finalMessage();
out.streamed = { deltas: deltas.length, text: deltas.join(""), final: final.content[0].text };
out.streamed.stop_reason = final.stop_reason;
out.streamed.usage = final.usage;

const events = [];
const forced = client.messages
  .stream({ ...greedy, tools: [tool], tool_choice: { type: "tool", name: "get_unit" } })
  .on("streamEvent", (event) => events.push(event.type))
  .on("inputJson", () => (out.input_json_events = (out.input_json_events ?? 0) + 1));
const called = await forced.finalMessage();
out.forced = {
  stop_reason: called.stop_reason,
  content: called.content.map(({ type, name, input, id }) => ({ type, name, input, id })),
  events: [...new Set(events)],
};

try {
  await client.messages.create({ ...greedy, model: "no-such-model" });
} catch (error) {
  out.not_found = {
    type: error.constructor.name,
    status: error.status,
    error_type: error.error?.error?.type,
  };
}

const counted = await client.messages.countTokens({ model, messages });
out.count_tokens = counted.input_tokens;

console.log(JSON.stringify(out));
