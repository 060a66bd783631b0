"""A Kubernetes API server for flowtel's tests: kmock's emulator (lists and
watches of what it holds), steered line by line on stdin.

Prints one line, the server's URL, then reads JSON commands, one a line, and
answers each with one line, "ok" or "error: ...":

  {"op": "create", "path": "/api/v1/namespaces/shop/pods", "object": {...}}
  {"op": "patch", "path": "/api/v1/namespaces/shop/pods/cart-x", "object": {...}}
  {"op": "delete", "path": "/api/v1/namespaces/shop/pods/cart-x"}
  {"op": "forget", "resource": "v1/nodes", "namespace": null, "name": "node-a"}
      (deleted without a watch event: only a new list shows it gone)
  {"op": "bulk", "resource": "v1/pods", "objects": N}
      (N pods held without watch events, for a large list)
  {"op": "drop"}            every open watch ends (answered once they have)
  {"op": "gone", "count": N} the next N watches answer 410 Gone
  {"op": "watching", "count": N}  waits until N watches are open
  {"op": "watch_requests"}  answers "ok N": watches asked for so far

Every object gets a new metadata.resourceVersion, as a real server gives.
"""

import asyncio
import json
import sys

import kmock

STATE = {"version": 0, "gone": 0, "open": 0, "asked": 0, "drop": None}
# Open watches by the drop event they end on: a drop waits for its own.
OPEN_BY_DROP = {}


def next_version():
    STATE["version"] += 1
    return str(STATE["version"])


class Emulator(kmock.KubernetesEmulator):
    async def _serve_watch(self, request):
        STATE["asked"] += 1
        if STATE["gone"] > 0:
            STATE["gone"] -= 1
            yield b""
            yield {
                "type": "ERROR",
                "object": {
                    "apiVersion": "v1",
                    "kind": "Status",
                    "metadata": {},
                    "status": "Failure",
                    "message": "too old resource version",
                    "reason": "Expired",
                    "code": 410,
                },
            }
            return
        drop = STATE["drop"]
        inner = kmock.KubernetesEmulator._serve_watch(self, request).__aiter__()
        STATE["open"] += 1
        OPEN_BY_DROP[id(drop)] = OPEN_BY_DROP.get(id(drop), 0) + 1
        try:
            while True:
                item = asyncio.ensure_future(inner.__anext__())
                dropped = asyncio.ensure_future(drop.wait())
                done, _ = await asyncio.wait(
                    {item, dropped}, return_when=asyncio.FIRST_COMPLETED
                )
                if item not in done:
                    item.cancel()
                    return
                dropped.cancel()
                try:
                    yield item.result()
                except StopAsyncIteration:
                    return
        finally:
            STATE["open"] -= 1
            OPEN_BY_DROP[id(drop)] -= 1


def pod(n):
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"bulk-{n}",
            "namespace": "bulk",
            "uid": f"00000000-0000-0000-0000-{n:012d}",
            "resourceVersion": next_version(),
            "labels": {"app": "bulk", "pod-template-hash": "5d8f7c9b6"},
        },
        "spec": {
            "nodeName": f"node-{n % 100}",
            "containers": [{"name": "app", "image": "registry.example/app:1.2.3"}],
        },
        "status": {
            "phase": "Running",
            "podIP": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}",
        },
    }


async def command(server, line):
    cmd = json.loads(line)
    op = cmd["op"]
    print(f"kmock: {op}, {STATE['open']} watches open", file=sys.stderr, flush=True)
    if op in ("create", "patch", "delete"):
        method = {"create": "post", "patch": "patch", "delete": "delete"}[op]
        body = cmd.get("object")
        if body is not None:
            body.setdefault("metadata", {})["resourceVersion"] = next_version()
        async with server.client.request(method, cmd["path"], json=body) as answer:
            text = await answer.text()
            if answer.status >= 300:
                return f"error: {answer.status} {text[:200]}"
        return "ok"
    if op == "forget":
        del server.handler.objects[cmd["resource"], cmd.get("namespace"), cmd["name"]]
        return "ok"
    if op == "bulk":
        for n in range(cmd["objects"]):
            body = pod(n)
            meta = body["metadata"]
            server.handler.objects[cmd["resource"], meta["namespace"], meta["name"]] = body
        return "ok"
    if op == "drop":
        dropped = STATE["drop"]
        STATE["drop"] = asyncio.Event()
        dropped.set()
        while OPEN_BY_DROP.get(id(dropped), 0) > 0:
            await asyncio.sleep(0.02)
        OPEN_BY_DROP.pop(id(dropped), None)
        return "ok"
    if op == "gone":
        STATE["gone"] = cmd["count"]
        return "ok"
    if op == "watching":
        while STATE["open"] < cmd["count"] or STATE["gone"] > 0:
            await asyncio.sleep(0.02)
        return "ok"
    if op == "watch_requests":
        return f"ok {STATE['asked']}"
    return f"error: unknown op {op}"


async def main():
    STATE["drop"] = asyncio.Event()
    async with Emulator() as handler, kmock.Server(handler) as server:
        for resource in ("v1/pods", "v1/services", "v1/nodes", "apps/v1/replicasets"):
            handler.resources[resource] = {}
        print(server.url, flush=True)
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            try:
                answer = await command(server, line)
            except Exception as error:  # the test shows it and fails
                answer = f"error: {error!r}"
            print(answer, flush=True)


asyncio.run(main())
