"""Call-back routes of the amoCRM fake (methods of ``FakeAmo``): one lead by id and the tasks list.

``GET /api/v4/leads/{id}``: the v4 lead (``status_id``, ``responsible_user_id``), 204 when there is no such
lead (as every v4 read by id here). ``GET /api/v4/tasks``: pages of ≤ 250 with ``_links.next``, 204 when
nothing matches; ``filter[entity_id][]`` only together with ``filter[entity_type]`` (the official SDK's
``Filters/TasksFilter.php`` sends it only then), anything else fails loudly."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.fakes.amocrm import hal, problem

FIRST_STATUS = 47_000_001  # a lead's status when nobody moved it (the pipeline's first stage)


async def get_lead(self: Any, request: web.Request) -> web.StreamResponse:
    if request.query:
        self.strict_error(f"{request.path}: unexpected parameters {sorted(request.query)}")
        return problem(400, "Bad Request", "unknown parameters")
    lid = int(request.match_info["id"])
    lead = self.leads.get(lid)
    if lead is None:
        return web.Response(status=204)
    return hal({"id": lid, "name": lead.get("name", ""), "responsible_user_id": lead.get("responsible_user_id", 0),
                "status_id": lead.get("status_id", FIRST_STATUS), "pipeline_id": lead.get("pipeline_id", 0),
                "created_at": lead.get("created_at", 0), "account_id": self.account_id,
                "_links": {"self": {"href": f"https://{self.subdomain}.amocrm.ru/api/v4/leads/{lid}"}}})


def render_task(self: Any, i: int, task: dict[str, Any]) -> dict[str, Any]:
    return {"id": i + 1, "text": task["text"], "entity_id": task.get("entity_id"),
            "entity_type": task.get("entity_type"), "responsible_user_id": task.get("responsible_user_id"),
            "task_type_id": task.get("task_type_id", 1), "complete_till": task["complete_till"],
            "is_completed": False, "account_id": self.account_id}


async def list_tasks(self: Any, request: web.Request) -> web.StreamResponse:
    params = self._params(request, "tasks")
    if isinstance(params, web.Response):
        return params
    if "filter[entity_id][]" in params and "filter[entity_type]" not in params:
        self.strict_error("tasks: filter[entity_id] without filter[entity_type]")
        return problem(400, "Bad Request", "filter[entity_id] needs filter[entity_type]")
    items = list(enumerate(self.tasks))
    if "filter[entity_type]" in params:
        kind = params["filter[entity_type]"][0]
        items = [(i, t) for i, t in items if t.get("entity_type") == kind]
        if "filter[entity_id][]" in params:
            ids = {int(x) for x in params["filter[entity_id][]"]}
            items = [(i, t) for i, t in items if int(t.get("entity_id") or 0) in ids]
    limit, page = int(params.get("limit", ["50"])[0]), int(params.get("page", ["1"])[0])
    chunk = items[(page - 1) * limit: page * limit]
    if not chunk:
        return web.Response(status=204)
    return hal({"_page": page, "_links": self._page_links(request, page, len(items) > page * limit),
                "_embedded": {"tasks": [render_task(self, i, t) for i, t in chunk]}})


def lead_webhook_body(self: Any, action: str, lid: int, account_id: int | None = None) -> bytes:
    """A v2 form-encoded lead delivery (§1.8): ``leads[status|update|responsible|delete][0][…]``."""
    import urllib.parse

    lead = self.leads.get(lid, {})
    p = f"leads[{action}][0]"
    pairs = [(f"{p}[id]", str(lid)), (f"{p}[status_id]", str(lead.get("status_id", FIRST_STATUS))),
             (f"{p}[responsible_user_id]", str(lead.get("responsible_user_id", 0))),
             (f"{p}[pipeline_id]", str(lead.get("pipeline_id", 0))), (f"{p}[last_modified]", str(self.tick())),
             ("account[subdomain]", self.subdomain), ("account[id]", str(account_id or self.account_id)),
             ("account[_links][self]", f"https://{self.subdomain}.amocrm.ru")]
    return urllib.parse.urlencode(pairs).encode()
