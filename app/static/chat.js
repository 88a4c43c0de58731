// ovchat's chat page: streams answers from this server's own /v1/chat/completions.
"use strict";

const $ = (id) => document.getElementById(id);
const history = [];
let controller = null;
let stopped = false;
let modelId = null;

const keyInput = $("api-key");
keyInput.value = localStorage.getItem("ovchat-api-key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("ovchat-api-key", keyInput.value);
  loadModel();
});
$("temperature").addEventListener("input", () => {
  $("temperature-value").textContent = $("temperature").value;
});

function headers() {
  const h = { "content-type": "application/json" };
  if (keyInput.value) h.authorization = "Bearer " + keyInput.value;
  return h;
}

function bubble(role, text) {
  const div = document.createElement("div");
  div.className = "msg " + role;
  div.textContent = text;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
  return div;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.error ? body.error.message : response.statusText;
  } catch (e) {
    return response.statusText;
  }
}

function showModels(options, chosen) {
  const select = $("model");
  select.replaceChildren(
    ...options.map(({ id, label, title }) => {
      const option = document.createElement("option");
      option.value = id || "";
      option.textContent = label || id;
      if (title) option.title = title;
      return option;
    })
  );
  select.disabled = !chosen;
  if (chosen) select.value = chosen;
  modelId = chosen;
}

// Every chat model the server serves, loaded or not: one that is not loads on its
// first request while the others keep serving.
async function loadModel() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) {
      showModels([{ label: response.status === 401 ? "API key needed" : "unavailable" }], null);
      return;
    }
    const models = (await response.json()).data.filter((m) => (m.kind || "generation") === "generation");
    if (!models.length) {
      showModels([{ label: "no chat model" }], null);
      return;
    }
    const saved = localStorage.getItem("ovchat-model");
    const chosen = models.some((m) => m.id === saved) ? saved : models[0].id;
    showModels(models.map((m) => ({ id: m.id, title: m.status ? `${m.status}, context ${m.context_length}` : "" })), chosen);
  } catch (e) {
    showModels([{ label: "offline" }], null);
  }
}

$("model").addEventListener("change", () => {
  modelId = $("model").value;
  localStorage.setItem("ovchat-model", modelId);
});

function busy(on) {
  $("send").disabled = on;
  $("stop").disabled = !on;
}

async function send(text) {
  if (!modelId) await loadModel();
  history.push({ role: "user", content: text });
  bubble("user", text);
  const out = bubble("assistant", "");
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  controller = new AbortController();
  stopped = false;
  busy(true);
  $("status").textContent = "generating…";
  let answer = "";
  let tokens = 0;
  let firstAt = null;
  const started = performance.now();
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      signal: controller.signal,
      body: JSON.stringify({
        model: modelId,
        messages,
        stream: true,
        stream_options: { include_usage: true },
        temperature: Number($("temperature").value),
        max_tokens: Number($("max-tokens").value),
      }),
    });
    if (!response.ok) throw new Error(await errorText(response));
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      const events = buffer.split("\n\n");
      buffer = events.pop();
      for (const event of events) {
        const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("");
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) tokens = chunk.usage.completion_tokens;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (firstAt === null) firstAt = performance.now();
          answer += delta.content;
          out.textContent = answer;
          $("log").scrollTop = $("log").scrollHeight;
        }
      }
    }
    $("status").textContent = "";
  } catch (e) {
    // However the abort surfaces (fetch, body stream, decoder), the user asked for it.
    if (stopped || e.name === "AbortError") {
      $("status").textContent = "stopped";
    } else {
      bubble("error", e.message);
      $("status").textContent = "";
    }
  } finally {
    busy(false);
    controller = null;
    if (answer) history.push({ role: "assistant", content: answer });
    const seconds = (performance.now() - (firstAt || started)) / 1000;
    if (tokens && seconds > 0) $("speed").textContent = (tokens / seconds).toFixed(1) + " tok/s";
  }
}

$("composer").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text || controller) return;
  $("prompt").value = "";
  send(text);
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("stop").addEventListener("click", () => {
  if (!controller) return;
  stopped = true;
  controller.abort();
});
$("clear").addEventListener("click", () => {
  history.length = 0;
  $("log").replaceChildren();
});
loadModel();
