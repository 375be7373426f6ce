// The live event stream (GET /api/v1/events), parsed from a fetch body and
// fanned out to the pages; reconnects with backoff while signed in.
import { session, signOut, stream } from "./api.js";

const TYPES = "agent.online,agent.offline,agent.updated,agent.deleted,command.status,execution.status,alert.fired,alert.resolved";
let handlers = new Set();
let ctrl = null;

async function run(signal) {
  let delay = 500;
  while (!signal.aborted && session.token) {
    try {
      const res = await stream("/events?type=" + TYPES, signal);
      if (res.status === 401) { signOut("Your session expired; sign in again."); return; }
      if (!res.ok || !res.body) throw new Error("event stream: " + res.status);
      delay = 500;
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, i);
          buf = buf.slice(i + 2);
          let type = "", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) type = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (!type) continue;
          if (type === "end") {
            const reason = safeParse(data).reason || "";
            if (reason.startsWith("token")) { signOut(`Signed out: ${reason}.`); return; }
            continue;
          }
          const ev = safeParse(data);
          ev.type = ev.type || type;
          for (const fn of handlers) fn(ev);
        }
      }
    } catch (err) {
      if (signal.aborted) return;
    }
    await new Promise((r) => setTimeout(r, delay));
    delay = Math.min(delay * 2, 10000);
  }
}

function safeParse(s) { try { return JSON.parse(s) || {}; } catch { return {}; } }

export const events = {
  start() { this.stop(); ctrl = new AbortController(); run(ctrl.signal); },
  stop() { if (ctrl) ctrl.abort(); ctrl = null; },
  on(fn) { handlers.add(fn); return () => handlers.delete(fn); },
};
