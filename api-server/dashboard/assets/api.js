// The REST client and the session: the token is held in memory only.
const BASE = "/api/v1";
const RANK = { viewer: 1, operator: 2, admin: 3 };
let listeners = [];
let expiryTimer = null;

// ProblemError carries an RFC 9457 problem document from the API.
export class ProblemError extends Error {
  constructor(problem) {
    super(`${problem.title || "Error"}${problem.detail ? ": " + problem.detail : ""}`);
    this.problem = problem;
  }
}

export const session = {
  token: "", role: "", subject: "", expires: 0,
  allows(role) { return (RANK[this.role] || 0) >= (RANK[role] || 99); },
};

export function onSignOut(fn) { listeners.push(fn); }

export function signOut(reason) {
  clearTimeout(expiryTimer);
  Object.assign(session, { token: "", role: "", subject: "", expires: 0 });
  for (const fn of listeners) fn(reason);
}

// claims reads a JWT's payload (the server verifies it; this only shows it).
function claims(token) {
  const part = token.split(".")[1];
  if (!part) throw new Error("This is neither an API key (vwk_…) nor a token.");
  const json = atob(part.replace(/-/g, "+").replace(/_/g, "/").padEnd(Math.ceil(part.length / 4) * 4, "="));
  return JSON.parse(json);
}

// signIn takes an API key (exchanged for a token) or a token, and checks it
// with the API before the session starts.
export async function signIn(credential) {
  if (!credential) throw new Error("Enter an API key or a token.");
  let token = credential;
  if (credential.startsWith("vwk_")) {
    const r = await request("POST", "/auth/token", { api_key: credential }, "");
    token = r.token;
  }
  let c;
  try { c = claims(token); } catch (err) { throw new Error("This is neither an API key (vwk_…) nor a token."); }
  await request("GET", "/health", undefined, token);
  await request("GET", "/metrics", undefined, token); // a viewer may read it: proves the token
  Object.assign(session, { token, role: c.role, subject: c.sub, expires: (c.exp || 0) * 1000 });
  const left = session.expires - Date.now();
  clearTimeout(expiryTimer);
  if (session.expires) expiryTimer = setTimeout(() => signOut("Your session expired; sign in again."), Math.max(left, 0));
}

async function request(method, path, body, token) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = "Bearer " + token;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch(BASE + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), credentials: "omit", cache: "no-store" });
  const type = res.headers.get("Content-Type") || "";
  const data = type.includes("json") ? await res.json() : await res.text();
  if (!res.ok) {
    const problem = typeof data === "object" ? data : { title: res.statusText, status: res.status, detail: String(data).slice(0, 200) };
    throw new ProblemError(problem);
  }
  return data;
}

// api calls the API with the session's token; a 401 ends the session.
export async function api(method, path, body) {
  if (!session.token) throw new Error("Not signed in.");
  try {
    return await request(method, path, body, session.token);
  } catch (err) {
    if (err instanceof ProblemError && err.problem.status === 401) {
      signOut(`Signed out: ${err.problem.detail || err.problem.title}.`);
    }
    throw err;
  }
}

// stream opens the event stream with the token in a header (EventSource
// cannot send one); it resolves to the response.
export function stream(path, signal) {
  return fetch(BASE + path, { headers: { Authorization: "Bearer " + session.token, Accept: "text/event-stream" }, signal, credentials: "omit", cache: "no-store" });
}
