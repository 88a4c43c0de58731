// The official OpenAI JavaScript SDK's Responses API against an ovchat server: prints what
// it saw as JSON for tests/integration/test_responses_api.py. Usage: node responses.mjs <url> <model>
import OpenAI from "openai";

const [url, model] = process.argv.slice(2);
const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: "unused", maxRetries: 0 });
const input = "can you introduce yourself?";
const out = {};

const plain = await client.responses.create({ model, input, temperature: 0 });
out.text = plain.output_text;
out.status = plain.status;

let streamed = "";
let last = null;
const stream = client.responses.stream({ model, input, temperature: 0 });
for await (const event of stream) {
  if (event.type === "response.output_text.delta") streamed += event.delta;
  last = event.type;
}
out.streamed = streamed;
out.last_event = last;
out.final = (await stream.finalResponse()).output_text;

const tool = {
  type: "function",
  name: "get_unit",
  parameters: {
    type: "object",
    properties: { unit: { enum: ["celsius", "fahrenheit"] } },
    required: ["unit"],
    additionalProperties: false,
  },
};
const called = await client.responses.create({
  model, input: "What unit?", tools: [tool], tool_choice: "required",
  parallel_tool_calls: false, temperature: 0,
});
const call = called.output[0];
out.call = { name: call.name, arguments: JSON.parse(call.arguments) };
const chained = await client.responses.create({
  model, previous_response_id: called.id, temperature: 0,
  input: [{ type: "function_call_output", call_id: call.call_id, output: "celsius" }],
});
out.chained_status = chained.status;

try {
  await client.responses.retrieve("resp_missing");
} catch (err) {
  out.not_found = err instanceof OpenAI.NotFoundError ? err.status : String(err);
}
console.log(JSON.stringify(out));
