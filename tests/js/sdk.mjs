// The official OpenAI JavaScript SDK against an ovchat server: prints what it saw as JSON
// for tests/integration/test_js_sdk.py to check. Usage: node sdk.mjs <base url> <model>
import OpenAI from "openai";

const [url, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
const messages = [{ role: "user", content: "can you introduce yourself?" }];
const tool = {
  type: "function",
  function: {
    name: "get_unit",
    description: "The unit to report temperatures in",
    parameters: {
      type: "object",
      properties: { unit: { enum: ["celsius", "fahrenheit"] } },
      required: ["unit"],
      additionalProperties: false,
    },
  },
};
const out = {};

const plain = await client.chat.completions.create({ model, messages, temperature: 0 });
out.text = plain.choices[0].message.content;
out.finish = plain.choices[0].finish_reason;

let streamed = "";
const stream = await client.chat.completions.create({
  model, messages, temperature: 0, stream: true, stream_options: { include_usage: true },
});
for await (const chunk of stream) {
  streamed += chunk.choices[0]?.delta?.content ?? "";
  if (chunk.usage) out.streamed_usage = chunk.usage;
}
out.streamed = streamed;

for (const [name, choice] of [
  ["required", "required"],
  ["named", { type: "function", function: { name: "get_unit" } }],
]) {
  const done = [];
  let fragments = 0;
  const runner = client.chat.completions
    .stream({ model, messages, tools: [tool], tool_choice: choice, temperature: 0, max_tokens: 80 })
    .on("tool_calls.function.arguments.delta", () => (fragments += 1))
    .on("tool_calls.function.arguments.done", (event) =>
      done.push({ name: event.name, arguments: event.arguments, parsed: event.parsed_arguments }),
    );
  const final = await runner.finalChatCompletion();
  out[name] = {
    done,
    fragments,
    finish: final.choices[0].finish_reason,
    calls: final.choices[0].message.tool_calls.map((c) => c.function),
  };
}

const contentDeltas = [];
const auto = client.chat.completions
  .stream({ model, messages, tools: [tool], temperature: 0 })
  .on("content.delta", (event) => contentDeltas.push(event.delta));
const autoFinal = await auto.finalChatCompletion();
out.auto = { deltas: contentDeltas.length, content: autoFinal.choices[0].message.content };

try {
  await client.chat.completions.create({ model: "gpt-4o", messages });
} catch (error) {
  out.not_found = { type: error.constructor.name, status: error.status, code: error.code };
}

const legacy = await client.completions.create({ model, prompt: "Say:", max_tokens: 4, temperature: 0 });
out.completion = { finish: legacy.choices[0].finish_reason, tokens: legacy.usage.completion_tokens };

console.log(JSON.stringify(out));
