"""The server's address space as a tree: browse names, node ids, node classes, data types, values.

Used by ``shopfloor opcua browse`` to find the node ids a plant file maps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asyncua import Client, ua

from shopfloor.connectors.opcua.session import close, connect, guarded
from shopfloor.domain.opcua_map import OpcUaSpec

OBJECTS = "i=85"


@dataclass
class BrowsedNode:
    browse_name: str
    node_id: str
    node_class: str
    data_type: str = ""
    value: Any = None
    status: str = ""
    children: list[BrowsedNode] = field(default_factory=list)
    truncated: bool = False  # children not browsed (depth or node limit)

    def to_obj(self) -> dict[str, Any]:
        obj: dict[str, Any] = {"browse_name": self.browse_name, "node_id": self.node_id, "node_class": self.node_class}
        if self.node_class == "Variable":
            obj.update(data_type=self.data_type, value=_plain(self.value), status=self.status)
        if self.children:
            obj["children"] = [c.to_obj() for c in self.children]
        if self.truncated:
            obj["truncated"] = True
        return obj


async def browse(spec: OpcUaSpec, start: str = OBJECTS, depth: int = 3, include_standard: bool = False,
                 max_nodes: int = 5000) -> BrowsedNode:
    """Connect as ``spec`` says (its nodes are not used) and browse from ``start``, ``depth`` levels
    down. Standard nodes (namespace 0, like the Server object) are left out unless asked for."""
    client = await connect(spec)
    try:
        return await guarded(spec.endpoint, _browse(client, start, depth, include_standard, max_nodes))
    finally:
        await close(client)


async def _browse(client: Client, start: str, depth: int, include_standard: bool, max_nodes: int) -> BrowsedNode:
    root_node = client.get_node(start)
    name = await root_node.read_browse_name()
    cls = await root_node.read_node_class()
    root = BrowsedNode(name.to_string(), root_node.nodeid.to_string(), cls.name)
    level = [root]
    seen = {root.node_id}
    count = 1
    for _ in range(depth):
        following: list[BrowsedNode] = []
        for parent in level:
            refs = await client.get_node(parent.node_id).get_references(
                refs=ua.ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward, includesubtypes=True)
            for ref in refs:
                nid = ref.NodeId.to_string()
                if nid in seen or (not include_standard and ref.NodeId.NamespaceIndex == 0):
                    continue
                if count >= max_nodes:
                    parent.truncated = True
                    break
                seen.add(nid)
                count += 1
                child = BrowsedNode(ref.BrowseName.to_string(), nid, ref.NodeClass.name)
                parent.children.append(child)
                following.append(child)
        await _read_variables(client, [n for n in following if n.node_class == "Variable"])
        level = following
    for node in [n for n in level if n.node_class == "Object"][:500]:  # the last level: is there more below?
        refs = await client.get_node(node.node_id).get_references(
            refs=ua.ObjectIds.HierarchicalReferences, direction=ua.BrowseDirection.Forward, includesubtypes=True)
        node.truncated = any(include_standard or r.NodeId.NamespaceIndex != 0 for r in refs)
    return root


async def _read_variables(client: Client, nodes: list[BrowsedNode]) -> None:
    if not nodes:
        return
    ids = [ua.NodeId.from_string(n.node_id) for n in nodes]
    values = await client.uaclient.read_attributes(ids, ua.AttributeIds.Value)
    types = await client.uaclient.read_attributes(ids, ua.AttributeIds.DataType)
    for node, value, dtype in zip(nodes, values, types, strict=True):
        node.status = value.StatusCode.name if value.StatusCode is not None else "Good"
        node.value = value.Value.Value if value.Value is not None else None
        type_id = dtype.Value.Value if dtype.Value is not None else None
        if isinstance(type_id, ua.NodeId):
            node.data_type = (ua.ObjectIdNames.get(type_id.Identifier, type_id.to_string())
                              if type_id.NamespaceIndex == 0 and isinstance(type_id.Identifier, int)
                              else type_id.to_string())


def _plain(value: Any) -> Any:
    """A value as JSON can hold it."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, ua.LocalizedText):
        return value.Text
    return str(value)
