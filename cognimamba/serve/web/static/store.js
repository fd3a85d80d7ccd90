// What the page keeps in the browser's localStorage: conversations, settings and the API key.
// Nothing here is sent anywhere except in the requests the user makes to this server.

const CONVERSATIONS = "cognimamba.conversations";
const SETTINGS = "cognimamba.settings";
const API_KEY = "cognimamba.apiKey";

// Empty sampling fields mean "the model's own default" (the run's config): they are left out of the request.
export const DEFAULT_SETTINGS = {
  system: "", temperature: "", top_p: "", top_k: "", repetition_penalty: "", max_tokens: "", seed: "", tools: false,
};

function read(name, fallback) {
  try {
    const text = localStorage.getItem(name);
    return text === null ? fallback : JSON.parse(text);
  } catch {
    return fallback; // storage turned off, or a value another version wrote
  }
}

function write(name, value) {
  try {
    localStorage.setItem(name, JSON.stringify(value));
    return true;
  } catch {
    return false; // storage full or turned off: the page still works, it just forgets on reload
  }
}

export function loadSettings() {
  return { ...DEFAULT_SETTINGS, ...read(SETTINGS, {}) };
}

export function saveSettings(settings) {
  write(SETTINGS, settings);
}

export function loadApiKey() {
  return read(API_KEY, "");
}

export function saveApiKey(key) {
  write(API_KEY, key);
}

// Newest first.
export function loadConversations() {
  const conversations = read(CONVERSATIONS, []);
  return Array.isArray(conversations) ? conversations.sort((a, b) => b.updated - a.updated) : [];
}

export function newConversation() {
  const now = Date.now();
  return { id: `${now}-${Math.random().toString(36).slice(2, 8)}`, title: "New chat", created: now, updated: now,
    messages: [] };
}

// Returns false when the browser refused to store it (quota), so the caller can say so.
export function saveConversation(conversation) {
  conversation.updated = Date.now();
  const others = loadConversations().filter((c) => c.id !== conversation.id);
  return write(CONVERSATIONS, [conversation, ...others]);
}

export function deleteConversation(id) {
  write(CONVERSATIONS, loadConversations().filter((c) => c.id !== id));
}
