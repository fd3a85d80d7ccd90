// The page's calls to this server: the same OpenAI-compatible API any client uses, plus the built-in tools.
// URLs are relative, so the page works wherever the server is mounted.

export class APIError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }

  get keyRefused() {
    return this.status === 401;
  }
}

function headers(key) {
  const result = { "Content-Type": "application/json" };
  if (key) result.Authorization = `Bearer ${key}`;
  return result;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error.message || message;
  } catch {
    // not the server's JSON error (a proxy's page, say): the status line is all there is
  }
  return new APIError(response.status, message);
}

async function getJSON(path, key) {
  const response = await fetch(path, { headers: headers(key) });
  if (!response.ok) throw await failure(response);
  return response.json();
}

async function postJSON(path, body, key, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(key), body: JSON.stringify(body), signal });
  if (!response.ok) throw await failure(response);
  return response;
}

// The served model (its id and context length); an APIError with keyRefused when the key is missing or wrong.
export async function fetchModel(key) {
  const models = await getJSON("v1/models", key);
  return models.data[0];
}

export async function fetchTools(key) {
  return (await getJSON("web/tools", key)).tools;
}

export async function runTool(call, key) {
  const response = await postJSON("web/tools/run", { name: call.function.name, arguments: call.function.arguments },
    key);
  return response.json();
}

// Yields each chunk object of a streamed /v1/chat/completions reply. Aborting `signal` closes the connection,
// which makes the server cancel the generation.
export async function* streamChat(body, key, signal) {
  const response = await postJSON("v1/chat/completions", { ...body, stream: true }, key, signal);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffered = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffered += value;
    const events = buffered.split("\n\n");
    buffered = events.pop();
    for (const event of events) {
      const data = event.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim())
        .join("\n");
      if (!data) continue;
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new APIError(500, chunk.error.message);
      yield chunk;
    }
  }
}
