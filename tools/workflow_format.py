"""What a saved UI-format workflow means, whichever ComfyUI frontend saved it.

Frontends differ in how they write the same graph. Seen on ComfyUI 0.3.64 with frontend 1.27.10 (pinned) and
1.58.1 (newest on the package registry, 2026-12), loading this pack's workflows and exporting them again:

- both recompute ``order`` (a topological order of the links: any order that respects the links is as good);
- 1.58.1 leaves ``widgets_values`` out of nodes that have no widgets (1.27.10 writes ``[]``) and adds
  ``widgets_values_named`` (``{widget name: value}``, the same widgets in the same order; when loading, 1.58.1 takes
  the named values first and 1.27.10 only reads the positional list);
- 1.58.1 drops a group's ``font_size`` when it is the default, and adds a top-level ``id`` and ``revision`` and
  ``extra.frontendVersion``; exports carry the view (``extra.ds``) at the moment of saving.

``format_problems`` checks a workflow's structure and accepts all of that; ``differences`` compares two workflows
in what a user would notice (node types and modes, slots, links, widget values, titles, properties, positions,
sizes, colours, groups) and ignores the rest. Real damage (a changed widget value, a broken or re-routed link, named
and positional values that disagree, so that two frontends would run different values) is reported by one or the
other. No ComfyUI import: plain JSON in, lists of one-line messages out.
"""

from __future__ import annotations

_MISSING = object()


def widgets(node: dict) -> list:
    """The node's positional widget values: ``[]`` when a frontend left the key out (a node with no widgets)."""
    values = node.get("widgets_values", [])
    return values if isinstance(values, list) else list(values.values())


def _named_problem(node: dict) -> str | None:
    named = node.get("widgets_values_named", _MISSING)
    if named is _MISSING:
        return None
    where = f"node {node.get('id')} ({node.get('type')})"
    if not isinstance(named, dict):
        return f"{where}: widgets_values_named is {type(named).__name__}, not an object"
    positional = node.get("widgets_values", [])
    if not isinstance(positional, list) or list(named.values()) != positional:
        return (f"{where}: widgets_values_named {named!r} disagrees with widgets_values {positional!r} "
                "(frontends 1.5x load the named values, older ones the positional list)")
    return None


def format_problems(workflow: dict) -> list[str]:
    """Structural problems of a UI-format (version 0.4) workflow, one line each; ``[]`` when it is well formed."""
    problems: list[str] = []
    if workflow.get("version") != 0.4:
        problems.append(f"version is {workflow.get('version')!r}, not 0.4 (the litegraph format with link arrays)")
    for key, kind in (("nodes", list), ("links", list), ("groups", list), ("extra", dict)):
        if not isinstance(workflow.get(key), kind):
            problems.append(f"{key} is missing or not a {kind.__name__}")
    if problems:
        return problems
    nodes = {node.get("id"): node for node in workflow["nodes"]}
    if len(nodes) != len(workflow["nodes"]):
        problems.append("duplicate node ids")
    link_ids = [link[0] for link in workflow["links"]]
    if len(set(link_ids)) != len(link_ids):
        problems.append("duplicate link ids")
    if not workflow.get("last_node_id", -1) >= max(nodes, default=0):
        problems.append(f"last_node_id {workflow.get('last_node_id')!r} is below the largest node id")
    if not workflow.get("last_link_id", -1) >= max(link_ids, default=0):
        problems.append(f"last_link_id {workflow.get('last_link_id')!r} is below the largest link id")
    for node in workflow["nodes"]:
        where = f"node {node.get('id')} ({node.get('type')})"
        for key, kind in (("pos", list), ("size", list), ("flags", dict), ("inputs", list), ("outputs", list),
                          ("properties", dict), ("order", int), ("mode", int)):
            if not isinstance(node.get(key), kind):
                problems.append(f"{where}: {key} is missing or not a {kind.__name__}")
        if not isinstance(node.get("widgets_values", []), (list, dict)):
            problems.append(f"{where}: widgets_values is not a list")
        named = _named_problem(node)
        if named:
            problems.append(named)
    if problems:
        return problems
    orders = sorted(node["order"] for node in workflow["nodes"])
    if orders != list(range(len(nodes))):
        problems.append(f"order is not a permutation of 0..{len(nodes) - 1}: {orders}")
    for link in workflow["links"]:
        problems += _link_problems(link, nodes)
    for node in workflow["nodes"]:
        for slot in node["inputs"]:
            if slot.get("link") is not None and slot["link"] not in link_ids:
                problems.append(f"node {node['id']} input {slot.get('name')} holds link {slot['link']}, "
                                "which is not in the link table")
        for out in node["outputs"]:
            for link_id in out.get("links") or []:
                if link_id not in link_ids:
                    problems.append(f"node {node['id']} output {out.get('name')} lists link {link_id}, "
                                    "which is not in the link table")
    return problems


def _link_problems(link, nodes: dict) -> list[str]:
    if not isinstance(link, list) or len(link) < 6:
        return [f"link {link!r} is not [id, source, slot, target, slot, type]"]
    link_id, src, src_slot, dst, dst_slot, link_type = link[:6]
    if src not in nodes or dst not in nodes:
        return [f"link {link_id} joins a node that does not exist ({src} -> {dst})"]
    outputs, inputs = nodes[src]["outputs"], nodes[dst]["inputs"]
    if not (0 <= src_slot < len(outputs) and 0 <= dst_slot < len(inputs)):
        return [f"link {link_id} uses a slot that does not exist (node {src} output {src_slot} -> "
                f"node {dst} input {dst_slot})"]
    out, inp = outputs[src_slot], inputs[dst_slot]
    problems = []
    if link_id not in (out.get("links") or []):
        problems.append(f"link {link_id} is missing from node {src}'s output {out.get('name')}")
    if inp.get("link") != link_id:
        problems.append(f"node {dst} input {inp.get('name')} does not hold link {link_id}")
    if not out.get("type") == inp.get("type") == link_type:
        problems.append(f"link {link_id} joins {out.get('type')} to {inp.get('type')} as {link_type}")
    if nodes[src]["order"] >= nodes[dst]["order"]:
        problems.append(f"link {link_id} runs against the order (node {src} is not before node {dst})")
    return problems


def essence(workflow: dict) -> dict:
    """The parts of a workflow a user would notice, in one comparable form (see the module docstring)."""
    nodes = {}
    for node in workflow["nodes"]:
        nodes[node["id"]] = {
            "type": node.get("type"), "mode": node.get("mode", 0), "title": node.get("title"),
            "inputs": [(s.get("name"), s.get("type"), s.get("link"), (s.get("widget") or {}).get("name"))
                       for s in node.get("inputs") or []],
            "outputs": [(s.get("name"), s.get("type"), sorted(s.get("links") or [])) for s in node.get("outputs") or []],
            "widgets_values": widgets(node), "properties": node.get("properties", {}),
            "pos": list(node.get("pos", [])), "size": list(node.get("size", [])),
            "color": node.get("color"), "bgcolor": node.get("bgcolor"), "flags": node.get("flags", {}),
        }
    groups = [{key: value for key, value in group.items() if key not in ("id", "font_size")}
              | {"flags": group.get("flags", {})} for group in workflow.get("groups", [])]
    return {"nodes": nodes, "links": sorted(tuple(link[:6]) for link in workflow.get("links", [])),
            "groups": groups}


def differences(before: dict, after: dict) -> list[str]:
    """What changed from ``before`` to ``after``, one line each; ``[]`` when they mean the same."""
    a, b = essence(before), essence(after)
    lines = []
    for node_id in sorted(set(a["nodes"]) | set(b["nodes"])):
        if node_id not in b["nodes"] or node_id not in a["nodes"]:
            lines.append(f"node {node_id} was {'removed' if node_id not in b['nodes'] else 'added'}")
            continue
        x, y = a["nodes"][node_id], b["nodes"][node_id]
        for key in x:
            if key == "widgets_values" and len(x[key]) == len(y[key]):
                for index, (old, new) in enumerate(zip(x[key], y[key])):
                    if old != new:
                        lines.append(f"node {node_id} ({x['type']}) widgets_values[{index}]: {old!r} -> {new!r}")
            elif x[key] != y[key]:
                lines.append(f"node {node_id} ({x['type']}) {key}: {x[key]!r} -> {y[key]!r}")
    if a["links"] != b["links"]:
        lines.append(f"links: {sorted(set(a['links']) - set(b['links']))} -> "
                     f"{sorted(set(b['links']) - set(a['links']))}")
    if a["groups"] != b["groups"]:
        lines.append(f"groups: {a['groups']!r} -> {b['groups']!r}")
    return lines
