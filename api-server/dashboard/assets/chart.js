// A line chart in SVG of telemetry buckets (avg, dashed max).
import { h } from "./dom.js";

const W = 320, H = 140, PAD = 28;

export function chart(title, points, from, to) {
  const svg = (tag, attrs, ...c) => h(tag, { ...attrs, svg: true }, ...c);
  const ys = points.flatMap((p) => [p.avg, p.max]);
  const top = Math.max(1, ...ys);
  const x = (t) => PAD + ((Date.parse(t) / 1000 - from) / Math.max(to - from, 1)) * (W - PAD - 4);
  const y = (v) => H - 16 - (v / top) * (H - 28);
  const line = (key) => points.map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
  const last = points.length ? points[points.length - 1].avg : null;
  const label = `${title}: ${points.length} buckets` + (last == null ? ", no data" : `, latest average ${last}`);
  return h("figure", { class: "chart", "data-metric": title },
    h("figcaption", {}, title, last == null ? " — no data in this range" : ` — latest ${last}`),
    svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label },
      svg("line", { class: "axis", x1: PAD, y1: H - 16, x2: W, y2: H - 16 }),
      svg("line", { class: "axis", x1: PAD, y1: 8, x2: PAD, y2: H - 16 }),
      svg("text", { x: 2, y: 14 }, String(Math.round(top * 100) / 100)),
      svg("text", { x: 2, y: H - 16 }, "0"),
      points.length ? svg("polyline", { class: "max", points: line("max") }) : "",
      points.length ? svg("polyline", { class: "line", points: line("avg") }) : ""));
}
