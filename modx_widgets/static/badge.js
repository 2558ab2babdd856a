// Status badge for a modx_widgets training task.
// Plain ESM for anywidget: no bundler, no imports, so the wheel ships this file as is.
// Colours are not spelled here: they arrive from Python in the `_colors` trait
// (modx_widgets/ui/badges.py, STATE_COLORS), the single place they are defined.

function paint(model, el, badge, dot, text) {
  const state = model.get("state");
  const colors = model.get("_colors") || {};
  const color = colors[state] || "#8c8c8c";
  const label = model.get("label");
  badge.dataset.state = state;
  badge.style.background = color;
  badge.title = label ? `${label}: ${state}` : state;
  text.textContent = label ? `${label} · ${state}` : state;
  dot.style.display = state === "Running" ? "inline-block" : "none";
  el.dataset.state = state;
}

function render({ model, el }) {
  const badge = document.createElement("span");
  badge.className = "modx-badge";
  Object.assign(badge.style, {
    display: "inline-flex",
    alignItems: "center",
    gap: "0.35em",
    padding: "0.1em 0.6em",
    borderRadius: "0.8em",
    color: "#ffffff",
    fontSize: "0.85em",
    fontWeight: "600",
    lineHeight: "1.6",
    whiteSpace: "nowrap",
  });
  const dot = document.createElement("span");
  Object.assign(dot.style, {
    width: "0.5em",
    height: "0.5em",
    borderRadius: "50%",
    background: "#ffffff",
  });
  if (dot.animate) {
    dot.animate([{ opacity: 1 }, { opacity: 0.25 }, { opacity: 1 }], {
      duration: 1200,
      iterations: Infinity,
    });
  }
  const text = document.createElement("span");
  text.className = "modx-badge-text";
  badge.append(dot, text);
  el.append(badge);

  const update = () => paint(model, el, badge, dot, text);
  update();
  model.on("change:state", update);
  model.on("change:label", update);
  model.on("change:_colors", update);
  return () => {
    model.off("change:state", update);
    model.off("change:label", update);
    model.off("change:_colors", update);
  };
}

export default { render };
