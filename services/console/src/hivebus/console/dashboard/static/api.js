// Talking to the dashboard's JSON API: the token (asked once, kept in sessionStorage),
// errors as exceptions that carry the server's words, and the SSE URL.

const TOKEN_KEY = "hivebus.dashboard.token";

/** An API answer that was not 2xx: `status` and the server's `error` text. */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

let asking = null;

function storedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY);
  } catch {
    return null;
  }
}

/** Ask the person for the token with the page's dialog; resolves once they gave one. */
function askToken(wrong) {
  if (asking) return asking;
  const dialog = document.getElementById("token-dialog");
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const error = document.getElementById("token-error");
  error.hidden = !wrong;
  error.textContent = wrong ? "That token was refused; try again." : "";
  input.value = "";
  asking = new Promise((resolve) => {
    const done = (event) => {
      event.preventDefault();
      const token = input.value.trim();
      if (!token) return;
      form.removeEventListener("submit", done);
      sessionStorage.setItem(TOKEN_KEY, token);
      dialog.close();
      asking = null;
      resolve(token);
    };
    form.addEventListener("submit", done);
    dialog.addEventListener("cancel", (event) => event.preventDefault());
    dialog.showModal();
    input.focus();
  });
  return asking;
}

/**
 * A token in the page's own URL (`/?token=...`, as `hivebus dashboard` prints it) is kept for
 * this tab and taken out of the address bar, so it stays out of history and bookmarks.
 */
export function adoptUrlToken() {
  const params = new URLSearchParams(location.search);
  const token = params.get("token");
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  params.delete("token");
  const rest = params.toString();
  history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
}

/** Before the first call: ask for the token now if the server says one is needed. */
export async function ensureToken(config) {
  if (config && config.token_required && !storedToken()) await askToken(false);
}

async function call(method, path, body) {
  for (let round = 0; round < 5; round += 1) {
    const headers = { Accept: "application/json" };
    const token = storedToken();
    if (token) headers.Authorization = "Bearer " + token;
    const init = { method, headers, cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (exc) {
      throw new ApiError(0, "the dashboard cannot be reached: " + exc.message, null);
    }
    if (response.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      await askToken(Boolean(token));
      continue;
    }
    let data = null;
    const text = await response.text();
    if (text) {
      try {
        data = JSON.parse(text);
      } catch {
        data = { error: text };
      }
    }
    if (!response.ok) {
      const message = (data && data.error) || `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, message, data);
    }
    return data;
  }
  throw new ApiError(401, "no valid token was given", null);
}

/** GET a JSON document; `params` become the query string (null values left out). */
export function get(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
  }
  const qs = query.toString();
  return call("GET", qs ? `${path}?${qs}` : path);
}

/** POST a JSON body. */
export function post(path, body) {
  return call("POST", path, body);
}

/** The URL of an SSE stream; EventSource cannot send headers, so the token rides as ?token=. */
export function streamUrl(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params || {})) {
    if (value !== null && value !== undefined) query.set(key, String(value));
  }
  const token = storedToken();
  if (token) query.set("token", token);
  const qs = query.toString();
  return qs ? `${path}?${qs}` : path;
}

/** Path segment escaping for ids taken from data. */
export function seg(value) {
  return encodeURIComponent(String(value));
}
