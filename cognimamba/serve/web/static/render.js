// Messages as DOM: the user's text as plain text, the model's as sanitized Markdown with highlighted code, and
// each tool call as a collapsible block holding its arguments and its result.
//
// The model's text is untrusted: it goes through marked, then DOMPurify (no script, no event handlers, no
// javascript: links, no <style> or <form>), and only then into the page. Everything else is set as textContent.

/* global marked, DOMPurify, hljs */

marked.use({ gfm: true, breaks: true }); // small models end lines where they mean them
hljs.configure({ ignoreUnescapedHTML: true });
DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

const SANITIZE = { FORBID_TAGS: ["style", "form", "input", "button", "textarea", "select"], FORBID_ATTR: ["style"] };

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export function renderMarkdown(target, text) {
  target.innerHTML = DOMPurify.sanitize(marked.parse(text), SANITIZE);
  for (const code of target.querySelectorAll("pre code")) hljs.highlightElement(code);
}

export function userView(message) {
  const view = element("article", "message user");
  view.append(element("div", "body", message.content));
  return view;
}

// One assistant message: its Markdown body, its tool blocks and a line of figures under it. Rendering while
// streaming waits for the next frame, so a fast stream re-parses the Markdown once per frame, not per token.
export class AssistantView {
  constructor(message) {
    this.message = message;
    this.element = element("article", "message assistant");
    this.body = element("div", "body");
    this.tools = element("div", "tools");
    this.meta = element("div", "meta");
    this.element.append(this.body, this.tools, this.meta);
    this.pending = false;
    this.showCalls();
    this.finish();
  }

  update() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => {
      this.pending = false;
      renderMarkdown(this.body, this.message.content);
    });
  }

  showCalls() {
    for (const call of this.message.tool_calls || []) {
      let block = this.block(call.id);
      if (!block) {
        block = toolBlock(call);
        this.tools.append(block);
      }
      block.querySelector(".call-name").textContent = call.function.name;
      block.querySelector(".arguments").textContent = pretty(call.function.arguments);
    }
  }

  block(callId) {
    return [...this.tools.children].find((block) => block.dataset.callId === callId);
  }

  showResult(callId, content, ok = true) {
    const block = this.block(callId);
    if (!block) return;
    block.querySelector(".result").textContent = pretty(content);
    block.classList.toggle("failed", !ok);
    block.classList.remove("running");
  }

  // The final render, and the line under the reply: its tokens and speed, how it ended, or what went wrong.
  finish() {
    this.pending = false;
    renderMarkdown(this.body, this.message.content);
    const { stats, stopped, error } = this.message;
    const notes = [];
    if (stats) notes.push(`${stats.tokens} tokens`, `${stats.tokensPerSecond.toFixed(1)} tokens/s`);
    if (stats && stats.finish === "length") notes.push("cut at the token limit");
    if (stopped) notes.push("stopped");
    this.meta.textContent = notes.join(" · ");
    this.element.querySelector(".error")?.remove();
    if (error) this.element.append(element("p", "error", error));
  }
}

function toolBlock(call) {
  const block = element("details", "tool-call running");
  block.dataset.callId = call.id;
  const summary = element("summary");
  summary.append(element("span", "tool-label", "tool call "), element("code", "call-name"));
  const result = element("pre", "result", "running…");
  block.append(summary, element("div", "label", "arguments"), element("pre", "arguments"),
    element("div", "label", "result"), result);
  return block;
}

function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text; // half-streamed arguments, or a result that is not JSON
  }
}

// A whole saved conversation: tool results go into the block of the call they answer.
export function renderConversation(container, conversation) {
  container.replaceChildren();
  const views = [];
  for (const message of conversation.messages) {
    if (message.role === "user") {
      container.append(userView(message));
    } else if (message.role === "assistant") {
      const view = new AssistantView(message);
      views.push(view);
      container.append(view.element);
    } else if (message.role === "tool") {
      views.findLast((view) => view.block(message.tool_call_id))?.showResult(message.tool_call_id, message.content,
        message.ok !== false);
    }
  }
  for (const view of views) {
    for (const call of view.message.tool_calls || []) {
      if (call.notRun) view.showResult(call.id, call.notRun, false);
      else if (view.block(call.id).classList.contains("running")) {
        view.showResult(call.id, "no result: the page was closed while it ran", false);
      }
    }
  }
}
