"""ComfyUI workflow formats: UI-format graphs (what the frontend saves and templates ship) and API-format prompts
(what ``POST /prompt`` takes), read with node definitions in ``/object_info`` form.

The conversion follows the frontend's ``graphToPrompt`` (ComfyUI frontend 1.27, the one ComfyUI 0.3.64 pins):

- frontend-only nodes (Note, MarkdownNote, Reroute, PrimitiveNode) and muted (mode 2) or bypassed (mode 4) nodes
  are left out; links through a Reroute or a bypassed node are followed to the real source, a PrimitiveNode's
  value is written in place of its link;
- ``widgets_values`` are positional, one per widget in the order the frontend creates widgets (the input order of
  the node definition); the frontend's own widgets hold values there too but are never sent: the
  ``control_after_generate`` combo after a seed-like INT (plus the filter list after a controlled COMBO) and the
  upload button of image/video loaders (created last);
- a linked input (a socket, or a widget turned into an input) becomes ``[source id, output slot]``;
- links from nodes that are not in the prompt are dropped.

Node slots as the frontend creates them: every non-widget input socket in input order, then one socket per widget
(``"widget": {"name": ...}``); a saved workflow keeps only the widget sockets that are linked.

No ComfyUI import here: node definitions come from a running server's ``/object_info`` or from
``pack_schemas.py`` (this pack's own ``define_schema()``).
"""

from __future__ import annotations

from dataclasses import dataclass

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "animated_image_upload")
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
NOTE_NODES = frozenset({"Note", "MarkdownNote"})
MUTED, BYPASSED = 2, 4


@dataclass(frozen=True)
class Slot:
    """One input slot of a node as the frontend builds it."""

    name: str
    type: str
    widget: bool
    optional: bool


def spec_type(spec) -> str:
    """The slot type of an input spec: ``"COMBO"`` for a list of options, else its type string."""
    return "COMBO" if isinstance(spec[0], list) else spec[0]


def spec_options(spec) -> dict:
    return spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}


def combo_values(spec) -> list:
    """The options of a COMBO input (V1: the list itself; V3: ``options`` in the spec's dict)."""
    return list(spec[0]) if isinstance(spec[0], list) else list(spec_options(spec).get("options", []))


def is_widget(spec) -> bool:
    return spec_type(spec) in WIDGET_TYPES and not spec_options(spec).get("forceInput", False)


def ordered_inputs(info: dict) -> list[tuple[str, list, bool]]:
    """``(name, spec, optional)`` in the frontend's order: ``input_order`` required, then optional, then the rest."""
    groups = {kind: info.get("input", {}).get(kind, {}) for kind in ("required", "optional")}
    order = info.get("input_order") or {kind: list(specs) for kind, specs in groups.items()}
    result, seen = [], set()
    for kind in ("required", "optional"):
        for name in order.get(kind, []):
            if name in groups[kind] and name not in seen:
                result.append((name, groups[kind][name], kind == "optional"))
                seen.add(name)
    for kind in ("required", "optional"):
        for name, spec in groups[kind].items():
            if name not in seen:
                result.append((name, spec, kind == "optional"))
                seen.add(name)
    return result


def input_slots(info: dict) -> list[Slot]:
    """All input slots as the frontend creates them: sockets first, then one socket per widget."""
    specs = ordered_inputs(info)
    sockets = [Slot(n, spec_type(s), False, o) for n, s, o in specs if not is_widget(s)]
    widgets = [Slot(n, spec_type(s), True, o) for n, s, o in specs if is_widget(s)]
    return sockets + widgets


def saved_inputs(info: dict, linked_widgets: set[str]) -> list[Slot]:
    """The ``inputs`` a saved workflow holds: every socket, plus the widget sockets that are linked."""
    return [slot for slot in input_slots(info) if not slot.widget or slot.name in linked_widgets]


def widget_layout(info: dict) -> list[str | None]:
    """One entry per ``widgets_values`` position: the input name it sets, or None for a frontend-only widget."""
    layout: list[str | None] = []
    upload = False
    for name, spec, _ in ordered_inputs(info):
        if not is_widget(spec):
            continue
        layout.append(name)
        options = spec_options(spec)
        kind = spec_type(spec)
        control = options.get("control_after_generate")
        if kind == "INT" and (control if control is not None else name in ("seed", "noise_seed")):
            layout.append(None)  # control_after_generate
        elif kind == "COMBO" and control:
            layout += [None, None]  # control_after_generate, control_filter_list
        upload = upload or any(options.get(flag) for flag in UPLOAD_OPTIONS)
    if upload:
        layout.append(None)  # the upload button, added after the definition's inputs
    return layout


def output_slots(info: dict) -> list[tuple[str, str]]:
    """``(name, type)`` per output."""
    names = info.get("output_name") or info.get("output", [])
    return list(zip(names, info.get("output", []), strict=True))


def widget_values(node: dict, info: dict) -> dict:
    """``{input name: value}`` of a UI node's widgets (frontend-only widgets skipped)."""
    values = node.get("widgets_values") or []
    layout = widget_layout(info)
    if isinstance(values, dict):  # some custom nodes save widgets by name
        return {name: values[name] for name in layout if name is not None and name in values}
    if len(values) < len(layout):  # widgets a newer server added at the end keep their defaults, as in the frontend
        values = list(values) + [_default(info, name) for name in layout[len(values):]]
    if len(values) != len(layout):
        raise ValueError(f"node {node['id']} ({node['type']}): {len(values)} widgets_values for the widget layout "
                         f"{layout} ({len(layout)} values)")
    return {name: value for name, value in zip(layout, values, strict=True) if name is not None}


def _default(info: dict, name: str | None):
    if name is None:  # a frontend-only widget
        return None
    spec = {n: s for n, s, _ in ordered_inputs(info)}[name]
    options, choices = spec_options(spec), combo_values(spec) if spec_type(spec) == "COMBO" else []
    if "default" in options:
        return options["default"]
    if choices:
        return choices[0]
    raise ValueError(f"widget {name!r} is missing from widgets_values and has no default")


class _Graph:
    def __init__(self, workflow: dict):
        self.nodes = {node["id"]: node for node in workflow["nodes"]}
        self.links = {link[0]: link for link in workflow.get("links", [])}

    def resolve(self, link_id, depth: int = 0):
        """``("link", node id, slot)``, ``("value", value)`` or None for the source feeding a link."""
        if depth > 64:
            raise ValueError("link cycle through Reroute/bypassed nodes")
        link = self.links.get(link_id)
        if link is None:
            return None
        _, src_id, src_slot, _, _, link_type = link[:6]
        src = self.nodes[src_id]
        if src["type"] == "Reroute":
            return self.resolve((src.get("inputs") or [{}])[0].get("link"), depth + 1)
        if src["type"] == "PrimitiveNode":
            return ("value", (src.get("widgets_values") or [None])[0])
        if src.get("mode") == BYPASSED:
            inputs = src.get("inputs") or []
            for index in [src_slot] + list(range(len(inputs))):
                if index < len(inputs) and inputs[index].get("type") == link_type and inputs[index].get("link"):
                    return self.resolve(inputs[index]["link"], depth + 1)
            return None
        if src.get("mode") == MUTED:
            return None
        return ("link", src_id, src_slot)


def ui_to_api(workflow: dict, object_info: dict) -> dict:
    """The API-format prompt the frontend would queue for a UI-format workflow (see the module docstring)."""
    graph = _Graph(workflow)
    prompt: dict[str, dict] = {}
    for node in sorted(workflow["nodes"], key=lambda n: n["id"]):
        if node["type"] in VIRTUAL_NODES or node.get("mode", 0) in (MUTED, BYPASSED):
            continue
        if node["type"] not in object_info:
            raise ValueError(f"node {node['id']}: unknown node type {node['type']!r}")
        info = object_info[node["type"]]
        inputs = dict(widget_values(node, info))
        for slot in node.get("inputs") or []:
            if slot.get("link") is None:
                continue
            source = graph.resolve(slot["link"])
            if source is None:
                continue
            inputs[slot["name"]] = source[1] if source[0] == "value" else [str(source[1]), int(source[2])]
        prompt[str(node["id"])] = {"inputs": inputs, "class_type": node["type"],
                                   "_meta": {"title": node.get("title") or info.get("display_name", node["type"])}}
    for entry in prompt.values():
        for name, value in list(entry["inputs"].items()):
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and value[0] not in prompt:
                del entry["inputs"][name]
    return prompt
