// The chat page: connects (asking for the API key when the server wants one), keeps conversations in the browser,
// streams replies from /v1/chat/completions, runs the model's tool calls, and stops a reply on request.

import * as api from "./api.js";
import { AssistantView, renderConversation, userView } from "./render.js";
import * as store from "./store.js";

// As `cogni chat`: tool results go back to the model at most this many times in one reply.
const MAX_TOOL_ROUNDS = 3;
const SAMPLING_FIELDS = { temperature: parseFloat, top_p: parseFloat, top_k: parseInt, repetition_penalty: parseFloat,
  max_tokens: parseInt, seed: parseInt };

const $ = (id) => document.getElementById(id);
const page = {
  key: store.loadApiKey(),
  model: null, // the served model, once connected
  settings: store.loadSettings(),
  conversation: null,
  tools: null, // the built-in tools' definitions, fetched the first time they are switched on
  abort: null, // the running reply's AbortController
};

bindControls();
openConversation(store.loadConversations()[0] || store.newConversation());
connect();

async function connect() {
  try {
    page.model = await api.fetchModel(page.key);
    $("model-name").textContent = page.model.id;
    status(`context ${page.model.max_model_len} tokens`);
    $("key-button").hidden = !page.key;
    setBusy(false);
  } catch (error) {
    if (error.keyRefused) askForKey(page.key ? error.message : "");
    else status(`cannot reach the server: ${error.message}`, true);
  }
}

// `message` is why the last key was refused ("incorrect API key"); empty the first time.
function askForKey(message) {
  page.model = null;
  setBusy(false);
  $("model-name").textContent = "not connected";
  status("this server needs an API key", true);
  $("key-error").textContent = message;
  $("key-button").hidden = false;
  $("key-input").value = "";
  $("key-dialog").returnValue = ""; // Escape keeps the last one: it must not resend an old key
  if (!$("key-dialog").open) $("key-dialog").showModal();
}

// A key is kept only once the server has taken it.
async function tryKey(key) {
  page.key = key;
  await connect();
  if (page.model) store.saveApiKey(key);
}

function bindControls() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("prompt").value.trim();
    if (text && page.model && !page.abort) {
      $("prompt").value = "";
      send(text);
    }
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("composer").requestSubmit();
    }
  });
  $("stop").addEventListener("click", () => page.abort?.abort());
  $("new-chat").addEventListener("click", () => openConversation(store.newConversation()));
  $("key-button").addEventListener("click", () => askForKey(""));
  $("key-dialog").addEventListener("close", () => {
    if ($("key-dialog").returnValue === "submit" && $("key-input").value) tryKey($("key-input").value);
  });
  $("settings-button").addEventListener("click", () => {
    fillSettingsForm();
    $("settings").showModal();
  });
  $("settings").addEventListener("input", readSettingsForm);
}

function fillSettingsForm() {
  const form = $("settings").querySelector("form");
  for (const [name, value] of Object.entries(page.settings)) {
    const input = form.elements[name];
    if (!input) continue;
    if (input.type === "checkbox") input.checked = Boolean(value);
    else input.value = value;
  }
}

function readSettingsForm() {
  const form = $("settings").querySelector("form");
  for (const name of Object.keys(store.DEFAULT_SETTINGS)) {
    const input = form.elements[name];
    page.settings[name] = input.type === "checkbox" ? input.checked : input.value;
  }
  store.saveSettings(page.settings);
}

function status(text, isError = false) {
  $("server-status").textContent = text;
  $("server-status").classList.toggle("error", isError);
}

function setBusy(busy) {
  $("send").hidden = busy;
  $("send").disabled = !page.model;
  $("stop").hidden = !busy;
  $("new-chat").disabled = busy;
  for (const button of $("conversations").querySelectorAll("button")) button.disabled = busy;
}

function openConversation(conversation) {
  page.conversation = conversation;
  renderConversation($("messages"), conversation);
  renderConversationList();
  scrollToEnd();
}

function renderConversationList() {
  const list = $("conversations");
  list.replaceChildren();
  for (const conversation of store.loadConversations()) {
    const item = document.createElement("li");
    item.classList.toggle("current", conversation.id === page.conversation.id);
    const open = document.createElement("button");
    open.className = "open";
    open.textContent = conversation.title;
    open.addEventListener("click", () => openConversation(conversation));
    const remove = document.createElement("button");
    remove.className = "delete";
    remove.textContent = "×";
    remove.title = "Delete this conversation";
    remove.addEventListener("click", () => {
      store.deleteConversation(conversation.id);
      if (conversation.id === page.conversation.id) openConversation(store.newConversation());
      else renderConversationList();
    });
    item.append(open, remove);
    list.append(item);
  }
}

function save(conversation) {
  if (!store.saveConversation(conversation)) status("the browser's storage is full: this chat will not be kept", true);
}

function scrollToEnd() {
  $("messages").scrollTop = $("messages").scrollHeight;
}

async function send(text) {
  const conversation = page.conversation;
  const message = { role: "user", content: text };
  conversation.messages.push(message);
  if (conversation.messages.length === 1) conversation.title = text.slice(0, 60);
  $("messages").append(userView(message));
  save(conversation);
  renderConversationList();
  page.abort = new AbortController();
  setBusy(true);
  try {
    await reply(conversation, page.abort.signal);
  } catch (error) { // fetching the tools' definitions failed: nothing was sent
    status(error.message, true);
    if (error.keyRefused) askForKey(error.message);
  } finally {
    page.abort = null;
    save(conversation);
    setBusy(false);
    $("prompt").focus();
  }
}

// The assistant's turn: replies, and after each one that calls tools, their results and another reply.
async function reply(conversation, signal) {
  const tools = page.settings.tools ? await builtinTools() : [];
  for (let round = 0; ; round++) {
    const message = { role: "assistant", content: "" };
    conversation.messages.push(message);
    const view = new AssistantView(message);
    $("messages").append(view.element);
    const finish = await streamReply(conversation, view, tools, signal);
    save(conversation);
    if (finish !== "tool_calls" || !message.tool_calls?.length) return;
    if (round === MAX_TOOL_ROUNDS) {
      for (const call of message.tool_calls) {
        call.notRun = `not run: at most ${MAX_TOOL_ROUNDS} rounds of tool results go back to the model in one reply`;
        view.showResult(call.id, call.notRun, false);
      }
      return;
    }
    if (!(await runCalls(conversation, view, signal))) return;
  }
}

async function builtinTools() {
  if (page.tools === null) page.tools = await api.fetchTools(page.key);
  return page.tools;
}

// Streams one reply into the view; returns its finish reason ("stopped" when the user stopped it).
async function streamReply(conversation, view, tools, signal) {
  const message = view.message;
  const calls = [];
  const started = performance.now();
  let finish = null;
  try {
    for await (const chunk of api.streamChat(request(conversation, tools), page.key, signal)) {
      if (chunk.usage) message.stats = replyStats(chunk.usage, started, finish);
      const choice = chunk.choices[0];
      if (!choice) continue;
      if (choice.delta.content) {
        message.content += choice.delta.content;
        view.update();
      }
      for (const part of choice.delta.tool_calls || []) addToCall(calls, part);
      if (choice.delta.tool_calls) {
        message.tool_calls = calls.filter(Boolean);
        view.showCalls();
      }
      finish = choice.finish_reason || finish;
      scrollToEnd();
    }
  } catch (error) {
    if (error.name === "AbortError") finish = "stopped";
    else message.error = error.message;
    if (error.keyRefused) askForKey(error.message);
  }
  if (finish !== "tool_calls") delete message.tool_calls; // a call cut short is not a call
  message.stopped = finish === "stopped" || undefined;
  view.tools.replaceChildren();
  view.showCalls();
  view.finish();
  scrollToEnd();
  return finish;
}

function addToCall(calls, part) {
  const call = calls[part.index] ||= { id: part.id, type: "function", function: { name: "", arguments: "" } };
  call.function.name += part.function?.name || "";
  call.function.arguments += part.function?.arguments || "";
}

function replyStats(usage, started, finish) {
  const seconds = (performance.now() - started) / 1000;
  return { tokens: usage.completion_tokens, tokensPerSecond: usage.completion_tokens / Math.max(seconds, 1e-3),
    finish };
}

// Runs the reply's calls on the server, one after another; false when the user stopped meanwhile.
async function runCalls(conversation, view, signal) {
  for (const call of view.message.tool_calls) {
    if (signal.aborted) return false;
    let result;
    try {
      result = await api.runTool(call, page.key);
    } catch (error) {
      result = { ok: false, content: JSON.stringify({ error: error.message }) };
    }
    conversation.messages.push({ role: "tool", tool_call_id: call.id, content: result.content, ok: result.ok });
    view.showResult(call.id, result.content, result.ok);
  }
  save(conversation);
  return !signal.aborted;
}

function request(conversation, tools) {
  const body = { model: page.model.id, messages: apiMessages(conversation), stream_options: { include_usage: true } };
  for (const [name, parse] of Object.entries(SAMPLING_FIELDS)) {
    const value = page.settings[name];
    if (value !== "" && value !== null && value !== undefined) body[name] = parse(value);
  }
  if (tools.length) body.tools = tools;
  return body;
}

// The conversation as the API reads it: the system prompt first, and nothing the page added for itself
// (an empty reply that failed, why a call was not run).
function apiMessages(conversation) {
  const system = page.settings.system.trim();
  const messages = system ? [{ role: "system", content: system }] : [];
  for (const message of conversation.messages) {
    if (message.role === "tool") {
      messages.push({ role: "tool", tool_call_id: message.tool_call_id, content: message.content });
    } else if (message.role === "assistant") {
      const calls = (message.tool_calls || []).filter((call) => !call.notRun)
        .map(({ id, type, function: fn }) => ({ id, type, function: fn }));
      if (!message.content && !calls.length) continue;
      messages.push(calls.length ? { role: "assistant", content: message.content, tool_calls: calls }
        : { role: "assistant", content: message.content });
    } else {
      messages.push({ role: message.role, content: message.content });
    }
  }
  return messages;
}
